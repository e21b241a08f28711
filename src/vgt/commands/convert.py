"""`vgt convert official`: the authors' released checkpoints -> a vgt pipeline (or VGT-AE) folder.
`vgt convert pipeline`: a pipeline folder of the older vgt layout (pipeline.json) -> the diffusers layout."""

from __future__ import annotations

import argparse


def add_commands(tree) -> None:
    tree.group("convert", "Convert models from other formats into vgt folders.")
    p = tree.command(
        "convert official", convert_official,
        "The authors' released VGT files (hustvl/vgt_ae *.pth, hustvl/vgt_* iter_*.pth) + the base VLM in its "
        "HF-native layout -> a vgt pipeline folder for `vgt generate --model` (or a VGT-AE folder from an AE file "
        "alone). Prints what became of every key.")
    p.add_argument("--ar", help="AR checkpoint (iter_*.pth); its vgt_ae.* tensors hold the AE unless --ae is given")
    p.add_argument("--ae", help="VGT-AE checkpoint (vgt_ae_internvl3.pth / vgt_ae_qwen25vl.pth)")
    p.add_argument("--vlm", required=True,
                   help="base VLM folder, HF-native (InternVL3-2B-hf for the 1.6B InternVL release, "
                        "Qwen2.5-VL-3B-Instruct for the Qwen release)")
    p.add_argument("--dcae-config", default=None,
                   help="DC-AE decoder config: a preset name, an AutoencoderDC config.json or its folder "
                        "(default: f32c32-sana-1.1, the released decoder's architecture)")
    p.add_argument("--weights", choices=("as-official", "ema"), default="as-official",
                   help="which of an AR file's two dicts: as-official = 'ema_state_dict', what the authors' scripts "
                        "load (the online weights, after their EMA hook's swap); ema = 'state_dict', the EMA average")
    p.add_argument("--num-layers", type=int, default=None,
                   help="assert the language model's layer count (it is always read from the checkpoint)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p = tree.command(
        "convert pipeline", convert_pipeline,
        "A pipeline folder of the older vgt layout (pipeline.json, backbone/) -> the diffusers layout that "
        "VGTPipeline.from_pretrained loads (model_index.json, vlm/, tokenizer/, ae/, generator/); the weight files "
        "are copied unchanged.")
    p.add_argument("old", help="the old-layout pipeline folder")
    p.add_argument("new", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder that is not a pipeline")


def convert_official(args: argparse.Namespace) -> int:
    from vgt.official import convert_official as convert

    result = convert(args.out, args.vlm, ar=args.ar, ae=args.ae, dcae_config=args.dcae_config,
                     weights=args.weights, num_layers=args.num_layers, overwrite=args.overwrite)
    print(result.report.format())
    what = "pipeline" if args.ar else "VGT-AE"
    print(f"wrote the {result.kind} {what} to {result.out}")
    if args.ar:
        print(f'generate with: vgt generate "a prompt" --model {result.out}')
    return 0


def convert_pipeline(args: argparse.Namespace) -> int:
    from vgt.legacy import convert_legacy_pipeline

    out = convert_legacy_pipeline(args.old, args.new, overwrite=args.overwrite)
    print(f"wrote {out} (diffusers layout); generate with: vgt generate \"a prompt\" --model {out}")
    return 0
