"""Reference outputs of the authors' VGT implementation, for vgt's parity tests.

Builds their models (a checkout of github.com/hustvl/VGT given by --vgt-repo) at tiny sizes with weights made here,
writes those weights in their checkpoint formats, runs their code in fp32 on CPU and records what it computes.
Run it with a Python that has transformers 4.57.1 (their pin); see README.md and FIXTURES.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stubs  # noqa: E402
import tiny  # noqa: E402

CAPTION = "a red cube on grass"  # with the tiny tokenizer, as long as the unconditional prompt: no padding
TRAIN_CAPTION = "a red cube on green grass"  # one token longer: the unconditional row of the pair is padded
AE_SIZE = {"internvl": (56, 56), "qwen": (56, 84)}  # the InternVL AE reshapes its tokens to a square
GEN_SIZE = (56, 84)  # a 2 x 3 latent grid: the 8 x 8 query grids are cropped at rows 3-4, columns 2-4
HEAD_STEPS = 4
CFG = 4.5
SEEDS = {"ae_images": 1, "tf_latents": 2, "tf_forward": 3, "generate": 4}
CHECKPOINT_STEPS = 5


# ---- recording ------------------------------------------------------------------------------------------------


class RandomRecorder:
    """Records every tensor drawn from torch's global RNG while active, in drawing order."""

    names = ("randn", "randn_like", "randperm", "normal", "rand", "rand_like", "randint")

    def __enter__(self):
        self.draws: list[tuple[str, torch.Tensor]] = []
        self.saved = {name: getattr(torch, name) for name in self.names}
        for name, fn in self.saved.items():
            setattr(torch, name, self._wrap(name, fn))
        return self

    def _wrap(self, name, fn):
        def drawn(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.draws.append((name, out.detach().clone()))
            return out

        return drawn

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(torch, name, fn)


class Calls:
    """Forward hooks that keep the inputs/outputs of a module at every call."""

    def __init__(self, module: torch.nn.Module):
        self.inputs, self.kwargs, self.outputs = [], [], []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.inputs.append(tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args))
        self.kwargs.append({k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)})
        self.outputs.append(output)

    def remove(self):
        self.handle.remove()


# ---- weights in their formats ---------------------------------------------------------------------------------


def is_frozen(key: str) -> bool:
    """Keys their AR training never updates (so EMA == online): the AE and the unused LM head."""
    return key.startswith("vgt_ae.") or key.endswith("lm_head.weight")


def make_weights(kind: str, state: dict[str, torch.Tensor], tied: dict[str, str]) -> dict[str, torch.Tensor]:
    """Seeded bf16 values for every key of their model's state dict; tied keys copy their source."""
    weights = {}
    for key, value in state.items():
        if key in tied:
            continue
        weights[key] = tiny.seeded_weight(kind, key, tuple(value.shape))
    for key, source in tied.items():
        weights[key] = weights[source]
    return channels_last_decoder(weights)


def ema_variant(kind: str, online: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 'EMA' copy: trainable tensors moved by a few percent (so choosing the dict matters), frozen ones equal."""
    ema = {}
    for key, value in online.items():
        if is_frozen(key) or value.dtype != torch.bfloat16:
            ema[key] = value
            continue
        generator = torch.Generator().manual_seed(zlib.crc32(f"ema/{kind}/{key}".encode()))
        noise = torch.randn(value.shape, generator=generator)
        ema[key] = (value.float() + 0.05 * value.float().std().clamp(min=0.05) * noise).to(torch.bfloat16)
    return ema


def channels_last_decoder(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their AE sets its DC-AE conv weights to channels_last; the saved tensors keep that memory format."""
    return {k: (v.to(memory_format=torch.channels_last) if v.dim() == 4 and ".decoder." in f".{k}" else v)
            for k, v in weights.items()}


def save_ar_checkpoint(path: Path, online: dict, ema: dict) -> None:
    """mmengine layout after their EMAHook swap: `state_dict` = EMA, `ema_state_dict` = online (+ `steps`)."""
    state_dict = {f"module.{k}": v for k, v in ema.items()}
    ema_state_dict = {f"module.{k}": v for k, v in online.items()}
    ema_state_dict["steps"] = torch.tensor(CHECKPOINT_STEPS, dtype=torch.int64)
    meta = {"iter": CHECKPOINT_STEPS, "note": "tiny random-init fixture in the authors' checkpoint layout"}
    torch.save({"meta": meta, "state_dict": state_dict, "ema_state_dict": ema_state_dict}, path)


# ---- tiny base VLMs -------------------------------------------------------------------------------------------


def save_tokenizer(kind: str, directory: Path):
    from transformers import PreTrainedTokenizerFast

    specials = tiny.SPECIALS[kind]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tiny.build_tokenizer(kind), pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=specials[1:], padding_side="right", model_max_length=256)
    tokenizer.chat_template = tiny.CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def internvl_chat_config(tokenizer):
    from src.models.internvl3.configuration_internvl_chat import InternVLChatConfig

    vision = dict(architectures=["InternVisionModel"], num_channels=3, patch_size=14, image_size=AE_SIZE["internvl"][0],
                  qkv_bias=True, hidden_size=tiny.VISION_WIDTH, num_attention_heads=2,
                  intermediate_size=4 * tiny.VISION_WIDTH, qk_normalization=False, num_hidden_layers=1,
                  use_flash_attn=False, hidden_act="gelu", norm_type="layer_norm", layer_norm_eps=1e-6,
                  drop_path_rate=0.0, initializer_factor=0.1)
    llm = dict(architectures=["Qwen2ForCausalLM"], num_hidden_layers=2, tie_word_embeddings=False,
               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id,
               eos_token_id=tokenizer.eos_token_id, **tiny.LLM)
    return InternVLChatConfig(vision_config=vision, llm_config=llm, downsample_ratio=0.5, template="internvl2_5",
                              force_image_size=AE_SIZE["internvl"][0], select_layer=-1, ps_version="v2")


def save_internvl_base(directory: Path, chat_config, tokenizer) -> None:
    """The HF-native (InternVLForConditionalGeneration) config of the same tiny VLM."""
    from transformers import InternVLConfig

    v, t = chat_config.vision_config, chat_config.llm_config
    config = InternVLConfig(
        vision_config=dict(hidden_size=v.hidden_size, num_hidden_layers=v.num_hidden_layers,
                           num_attention_heads=v.num_attention_heads, attention_bias=v.qkv_bias,
                           use_qk_norm=v.qk_normalization, intermediate_size=v.intermediate_size,
                           hidden_act=v.hidden_act, norm_type=v.norm_type, layer_norm_eps=v.layer_norm_eps,
                           image_size=[v.image_size, v.image_size], patch_size=[v.patch_size, v.patch_size],
                           layer_scale_init_value=0.1, use_mean_pooling=True),
        text_config=dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=t.hidden_size,
                         intermediate_size=t.intermediate_size, num_hidden_layers=t.num_hidden_layers,
                         num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                         rms_norm_eps=t.rms_norm_eps, rope_theta=t.rope_theta, vocab_size=t.vocab_size,
                         max_position_embeddings=t.max_position_embeddings, tie_word_embeddings=False,
                         pad_token_id=t.pad_token_id, bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=(v.image_size // v.patch_size // 2) ** 2, downsample_ratio=0.5,
        projector_hidden_act="gelu", vision_feature_layer=-1, vision_feature_select_strategy="default",
        architectures=["InternVLForConditionalGeneration"], tie_word_embeddings=False)
    config.save_pretrained(directory)


QWEN_BASE_LAYERS = 4  # the base VLM's LLM depth; their layer_ratio 0.5 keeps 2


def qwen_config(tokenizer):
    from transformers import Qwen2_5_VLConfig

    ids = tokenizer.convert_tokens_to_ids
    text = dict(num_hidden_layers=QWEN_BASE_LAYERS, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]}, **tiny.LLM)
    vision = dict(depth=2, hidden_size=tiny.VISION_WIDTH, hidden_act="silu", intermediate_size=2 * tiny.VISION_WIDTH,
                  num_heads=2, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=56, out_hidden_size=tiny.LLM["hidden_size"], fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image_pad|>"),
                              video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                              vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=True,
                              architectures=["Qwen2_5_VLForConditionalGeneration"])
    return config


def new_qwen(config):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration._from_config(copy.deepcopy(config), attn_implementation="eager")


# ---- building their models ------------------------------------------------------------------------------------


def build_internvl(repo: Path, base: Path, ae_checkpoint: str, tmp: Path):
    from diffusers import AutoencoderDC
    from omegaconf import OmegaConf
    from src.models.adaptive_metaquery import AdaptiveMetaQuery
    from src.models.flow_head import FlowMatchingHead
    from src.models.internvl3.modeling_internvl_chat import InternVLChatModel
    from src.models.vgt_internvl3 import VGT_InternVL3
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, padding_side="right")
    chat_config = internvl_chat_config(tokenizer)

    def vlm(*args, **kwargs):
        return InternVLChatModel(copy.deepcopy(chat_config), use_flash_attn=False)

    for name in ("tokenizer.modeling.vlvae_intervl", "modeling.vlvae_intervl"):
        if name in sys.modules:  # their AE loads the VLM and DC-AE from hub paths: hand it the tiny ones
            sys.modules[name].AutoModel = SimpleNamespace(from_pretrained=vlm)
            sys.modules[name].AutoencoderDC = SimpleNamespace(
                from_pretrained=lambda *a, **k: AutoencoderDC(**tiny.DCAE))
    ae_config = tmp / "vgtae_internvl3_tiny.yaml"
    OmegaConf.save(OmegaConf.create({"model": {
        "name": "VLVAE_InterVL3_Train", "checkpoint_path": "", "mllm_path": "tiny", "dc_ae_path": "tiny",
        "embed_dim": tiny.LATENT, "encoder_norm": True, "max_noise_strength": 0.1, "scale_embeding": 1.0}}),
        ae_config)
    prompt_template = load_prompt_template(repo, "internvl3_2b_448")
    return VGT_InternVL3(
        lmm=dict(type=vlm), tokenizer=dict(type=lambda: tokenizer), prompt_template=prompt_template,
        image_head=stubs.ConfigDict(type=FlowMatchingHead, timeshift=1.4, **tiny.HEAD),  # their 1.6B config's shift
        vgt_ae=stubs.ConfigDict(config_path=str(ae_config), checkpoint_path=ae_checkpoint),
        adaptive_metaquery=stubs.ConfigDict(type=AdaptiveMetaQuery, mode="truncation", crop_mode="center",
                                            max_size=(tiny.QUERY_GRID, tiny.QUERY_GRID), encoding_type="learnable"),
        max_length=1024, latent_patch_size=1)


def build_qwen(repo: Path, base: Path, ae_checkpoint: str, tmp: Path):
    import src.models.vgtae_qwen25vl as their_ae
    from diffusers import AutoencoderDC
    from src.models.adaptive_metaquery import AdaptiveMetaQuery
    from src.models.flow_head import FlowMatchingHead
    from src.models.vgt_qwen2_5vl import VGT_Qwen25VL
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, padding_side="right")
    config = qwen_config(tokenizer)
    their_ae.Qwen2_5_VLForConditionalGeneration = SimpleNamespace(from_pretrained=lambda *a, **k: new_qwen(config))
    their_ae.AutoencoderDC = SimpleNamespace(from_pretrained=lambda *a, **k: AutoencoderDC(**tiny.DCAE))
    prompt_template = load_prompt_template(repo, "qwen25vl_2b_448")
    return VGT_Qwen25VL(
        lmm=dict(type=lambda: new_qwen(config)), tokenizer=dict(type=lambda: tokenizer),
        prompt_template=prompt_template, image_head=stubs.ConfigDict(type=FlowMatchingHead, **tiny.HEAD),
        vgt_ae=stubs.ConfigDict(mllm_path="tiny", dc_ae_path="tiny", checkpoint_path=ae_checkpoint,
                                encoder_norm=True),
        adaptive_metaquery=stubs.ConfigDict(type=AdaptiveMetaQuery, mode="truncation", crop_mode="center",
                                            max_size=(tiny.QUERY_GRID, tiny.QUERY_GRID), encoding_type="learnable"),
        layer_ratio=0.5, max_length=1024, latent_patch_size=1)


def load_prompt_template(repo: Path, dataset: str) -> dict:
    """Their prompt template, read from their own config file at run time."""
    import runpy

    return dict(runpy.run_path(str(repo / "configs" / "datasets" / dataset / "processors.py"))["prompt_template"])


# ---- the recorded computations --------------------------------------------------------------------------------


def fixed_images(size: tuple[int, int], seed: int) -> torch.Tensor:
    """Two smooth colour fields in [-1, 1] (each with min < 0, as their AE's range test requires)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, 4, 6, generator=generator)
    fine = torch.randn(2, 3, *size, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False) + 0.2 * fine
    images = torch.tanh(field).to(torch.bfloat16).float()  # bf16-representable: stored as bf16, exactly
    assert bool((images.flatten(1).min(1).values < 0).all())
    return images


def llm_of(kind: str, model):
    return model.llm.model if kind == "internvl" else model.lmm.language_model


def image_start(kind: str, model, batch: int) -> torch.Tensor:
    return model.generate_embedding(batch) if kind == "internvl" else model.generate_embeding(batch)


def reference_ae(kind: str, model) -> dict[str, torch.Tensor]:
    ae = model.vgt_ae
    images = fixed_images(AE_SIZE[kind], SEEDS["ae_images"])
    features = Calls(ae.mlp1 if kind == "internvl" else ae.encoder)
    bottleneck = Calls(ae.down_mlp)
    latents = model.pixels_to_latents(images)
    decoded = model.latents_to_pixels(latents)
    features.remove()
    bottleneck.remove()
    b, c, h, w = latents.shape
    raw = bottleneck.outputs[0].reshape(b, h * w, c).transpose(1, 2).reshape(b, c, h, w)
    feats = features.outputs[0]
    return {"images": images.to(torch.bfloat16), "features": feats.reshape(b, h * w, -1), "latents_before_norm": raw,
            "latents": latents, "decoded": decoded}


def teacher_forced_inputs(model, seed: int):
    conditions = model.prepare_batch_text_conditions([TRAIN_CAPTION])
    h, w = GEN_SIZE[0] // 28, GEN_SIZE[1] // 28
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, tiny.LATENT, h, w, generator=generator)
    latents = torch.nn.functional.layer_norm(latents.permute(0, 2, 3, 1), (tiny.LATENT,), eps=1e-6).permute(0, 3, 1, 2)
    return conditions["input_ids"], conditions["attention_mask"], latents.contiguous()


def run_teacher_forced(kind: str, model, input_ids, attention_mask, latents, assemble: bool = False):
    """The training forward of their InternVL model (`text2image_loss`); the Qwen model ships no training code,
    so the same sequence is assembled from the Qwen model's own methods (queries, `<img>` prefix,
    prepare_forward_input, LLM, projectors, head) in the order `text2image_loss` uses."""
    if kind == "internvl" and not assemble:
        return model.text2image_loss({"image_latents": latents, "input_ids": input_ids,
                                      "attention_mask": attention_mask})["loss_text2image"]
    seq, (h, w) = model.patchify(latents, patch_size=1)
    b, n, c = seq.shape
    queries, positions = model.adaptive_metaquery(target_h=h, target_w=w)
    queries = (queries + positions).expand(b, -1, -1)
    tokens = model.image_in_projector(seq) + positions.expand(b, -1, -1)
    order = torch.randperm(n)
    interleaved = model.interleave_queries_latents(input_querys=queries[:, order], latents=tokens[:, order])
    inputs = model.prepare_forward_input(queries=torch.cat([image_start(kind, model, b), interleaved], dim=1),
                                         input_ids=input_ids, attention_mask=attention_mask)
    hidden = llm_of(kind, model)(**inputs, return_dict=True).last_hidden_state[:, -interleaved.shape[1]:]
    states = hidden[:, 0::2][:, torch.argsort(order)]
    condition = model.image_out_projector(states)
    loss, _ = model.image_head(target=seq.reshape(-1, c), c=condition.reshape(-1, condition.shape[-1]),
                               mask=torch.ones(b * n))
    return loss


def reference_teacher_forced(kind: str, model) -> dict[str, torch.Tensor]:
    input_ids, attention_mask, latents = teacher_forced_inputs(model, SEEDS["tf_latents"])
    b, c, h, w = latents.shape
    n = h * w
    head, projector, llm = Calls(model.image_head.net), Calls(model.image_out_projector), Calls(llm_of(kind, model))
    torch.manual_seed(SEEDS["tf_forward"])
    with RandomRecorder() as rng:
        loss = run_teacher_forced(kind, model, input_ids, attention_mask, latents)
    for hook in (head, projector, llm):
        hook.remove()
    draws = dict((name, t) for name, t in rng.draws)
    x_t, t, condition = head.inputs[0]
    out = {
        "input_ids": input_ids, "attention_mask": attention_mask.long(), "latents": latents,
        "order": draws["randperm"], "t": t.reshape(b, n), "x_t": x_t.reshape(b, n, c),
        "noise": draws["randn_like"].reshape(b, n, c), "u": draws["normal"].reshape(b, n),
        "query_states": projector.inputs[0][0], "condition": condition.reshape(b, n, -1),
        "velocity": head.outputs[0].reshape(b, n, c), "loss": loss.detach().reshape(1),
        "position_ids": llm.kwargs[0]["position_ids"],
    }
    if kind == "internvl":  # the Qwen composition above is checked against their own training forward
        torch.manual_seed(SEEDS["tf_forward"])
        check = run_teacher_forced(kind, model, input_ids, attention_mask, latents, assemble=True)
        assert torch.equal(check, loss), "the assembled teacher-forced sequence differs from text2image_loss"
    return out


def reference_generate(kind: str, model) -> tuple[dict[str, torch.Tensor], dict]:
    conditions = model.prepare_batch_text_conditions([CAPTION])
    input_ids, attention_mask = conditions["input_ids"], conditions["attention_mask"]
    assert bool(attention_mask.all()), "the generation prompt pair must be unpadded"
    llm, projector = Calls(llm_of(kind, model)), Calls(model.image_out_projector)
    cfgs, head_out = [], []
    sample = model.image_head.sample

    def recorded_sample(*args, **kwargs):
        cfgs.append(float(kwargs["cfg"]))
        x = sample(*args, **kwargs)
        head_out.append(x.detach().clone())
        return x

    model.image_head.sample = recorded_sample
    decode_in = Calls(model.vgt_ae.decoder)
    torch.manual_seed(SEEDS["generate"])
    with RandomRecorder() as rng:
        images = model.generate(input_ids=input_ids, attention_mask=attention_mask, cfg_scale=CFG,
                                num_steps=HEAD_STEPS, height=GEN_SIZE[0], width=GEN_SIZE[1], progress_bar=False,
                                cfg_schedule="linear", scheduler_type="random", acc_ratio=1)
    del model.image_head.sample
    for hook in (llm, projector, decode_in):
        hook.remove()
    h, w = GEN_SIZE[0] // 28, GEN_SIZE[1] // 28
    n = h * w
    names = [name for name, _ in rng.draws]
    assert names == ["randperm"] + ["randn"] * (n * HEAD_STEPS), names
    order = rng.draws[0][1]
    raw = torch.stack([t for _, t in rng.draws[1:]])  # [n * steps, 1, C] in drawing order
    noise = raw.reshape(n, HEAD_STEPS, 1, tiny.LATENT).permute(2, 0, 1, 3).contiguous()  # [1, n, steps, C]
    out = {
        "input_ids": input_ids, "attention_mask": attention_mask.long(), "order": order,
        "noise": noise, "noise_draws": raw,
        "cfg": torch.tensor(cfgs, dtype=torch.float64),
        "head_samples": torch.cat(head_out).reshape(1, n, tiny.LATENT),
        "query_states": torch.cat([p[0] for p in projector.inputs], dim=1),
        "latents": decode_in.inputs[0][0], "images": images,
    }
    for step, kwargs in enumerate(llm.kwargs):
        out[f"position_ids_step{step}"] = kwargs["position_ids"]
    settings = {"caption": CAPTION, "cond_text": model.prompt_template["INSTRUCTION"].format(
        input=model.prompt_template["GENERATION"].format(input=CAPTION)),
        "uncond_text": model.prompt_template["INSTRUCTION"].format(input=model.prompt_template["CFG"]),
        "cfg_scale": CFG, "cfg_schedule": "linear", "num_steps": HEAD_STEPS, "height": GEN_SIZE[0],
        "width": GEN_SIZE[1], "acc_ratio": 1, "scheduler_type": "random", "torch_seed": SEEDS["generate"],
        "image_start_ids": image_start_ids(kind, model)}
    return out, settings


def image_start_ids(kind: str, model) -> list[int]:
    return model.tokenizer.encode(model.prompt_template["IMG_START_TOKEN"], add_special_tokens=True)


# ---- one path -------------------------------------------------------------------------------------------------


def make_path(kind: str, repo: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = out / "base_vlm"
    base.mkdir(exist_ok=True)
    tokenizer = save_tokenizer(kind, base)
    build = build_internvl if kind == "internvl" else build_qwen
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        model = build(repo, base, "", tmp)
        if kind == "internvl":
            save_internvl_base(base, internvl_chat_config(tokenizer), tokenizer)
        else:
            config = qwen_config(tokenizer)
            config.save_pretrained(base)
        state = model.state_dict()
        tied = tied_keys(state)
        online = make_weights(kind, state, tied)
        ema = ema_variant(kind, online)
        ae_name = "vgt_ae_internvl3.pth" if kind == "internvl" else "vgt_ae_qwen25vl.pth"
        ae = {k[len("vgt_ae."):]: v for k, v in online.items()
              if k.startswith("vgt_ae.") and not k.startswith(("vgt_ae.teacher.", "vgt_ae.teacher_mlp1."))}
        torch.save({"state_dict": ae} if kind == "internvl" else ae, out / ae_name)
        save_ar_checkpoint(out / f"iter_{CHECKPOINT_STEPS}.pth", online, ema)
        (out / "dcae_config.json").write_text(json.dumps(tiny.DCAE, indent=2, sort_keys=True) + "\n")

        # Their own loading path: the AE from its file inside the constructor, the AR file by load_checkpoint_with_ema.
        from src.utils import load_checkpoint_with_ema

        torch.manual_seed(0)
        model = build(repo, base, str(out / ae_name), tmp)
        load_checkpoint_with_ema(model, str(out / f"iter_{CHECKPOINT_STEPS}.pth"), use_ema=True)
        model = model.float().eval()
        exact_normalisation(model.vgt_ae)
        loaded = model.state_dict()
        mismatched = [k for k, v in online.items() if not torch.equal(loaded[k], v.float())]
        assert not mismatched and set(loaded) == set(online), mismatched

        with torch.no_grad():
            ae_ref = reference_ae(kind, model)
            tf_ref = reference_teacher_forced(kind, model)
            gen_ref, gen_settings = reference_generate(kind, model)
    save_file(contiguous(ae_ref), out / "reference_ae.safetensors")
    save_file(contiguous(tf_ref), out / "reference_ar.safetensors")
    save_file(contiguous(gen_ref), out / "reference_generate.safetensors")
    settings = {
        "path": kind, "weights": "ema_state_dict (= official use_ema=True = online weights after the EMA swap)",
        "compute_dtype": "float32 (bf16 checkpoint values cast to fp32)",
        "ae": {"image_size": list(AE_SIZE[kind]), "input_range": "[-1, 1], min < 0", "encoder_norm": True,
               "scale_embeding": 1.0},
        "teacher_forced": {"caption": TRAIN_CAPTION, "rows": ["cond", "uncond (padded)"],
                           "torch_seed": SEEDS["tf_forward"],
                           "timeshift": 1.4 if kind == "internvl" else None},
        "generate": gen_settings,
        "sizes": {"llm": tiny.LLM, "llm_layers_checkpoint": 2,
                  "llm_layers_base_vlm": 2 if kind == "internvl" else QWEN_BASE_LAYERS,
                  "vision_width": tiny.VISION_WIDTH, "query_grid": tiny.QUERY_GRID, "head": tiny.HEAD},
        "tolerances": {"ae_latents_atol": 1e-4, "ae_decoded_atol": 1e-4, "velocity_atol": 1e-4,
                       "query_states_atol": 1e-4, "generate_latents_atol": 1e-3, "generate_images_atol": 2e-3},
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                     "diffusers": __import__("diffusers").__version__},
    }
    (out / "reference.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def exact_normalisation(ae) -> None:
    """Their InternVL AE casts itself to bf16 when built, which rounds its (non-persistent) ImageNet mean/std buffers
    to bf16 (0.485 -> 0.484375, ...), and `.float()` cannot undo that. The reference runs in fp32, so the buffers get
    their exact values back, from the constants of the AE's own module."""
    module = sys.modules[type(ae).__module__]
    ae.vit_mean = torch.tensor(module.IMAGENET_MEAN, dtype=torch.float32)
    ae.vit_std = torch.tensor(module.IMAGENET_STD, dtype=torch.float32)


def tied_keys(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Keys that share storage with an earlier key (Qwen's duplicate LLM prefix, its tied lm_head)."""
    seen, tied = {}, {}
    for key, value in state.items():
        ptr = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ptr in seen:
            tied[key] = seen[ptr]
        else:
            seen[ptr] = key
    return tied


def contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vgt-repo", required=True, type=Path, help="a checkout of github.com/hustvl/VGT")
    parser.add_argument("--out", required=True, type=Path, help="fixture folder (e.g. tests/fixtures/official)")
    parser.add_argument("--paths", nargs="+", default=["internvl", "qwen"], choices=["internvl", "qwen"])
    args = parser.parse_args()
    repo = args.vgt_repo.resolve()
    if not (repo / "src" / "models" / "vgt_internvl3.py").exists():
        parser.error(f"{repo} is not a checkout of hustvl/VGT (no src/models/vgt_internvl3.py)")
    stubs.install(repo)
    torch.set_num_threads(1)  # thread count changes float summation order; one thread keeps reruns identical
    for kind in args.paths:
        make_path(kind, repo, args.out / kind)
        print(f"wrote {args.out / kind}")


if __name__ == "__main__":
    main()
