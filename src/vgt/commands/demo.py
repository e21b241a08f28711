"""`vgt demo`: serve the local web page of `vgt.demo` (text-to-image and inpainting)."""

from __future__ import annotations

import argparse

from vgt.argtypes import non_negative_int


def run_demo(args: argparse.Namespace) -> int:
    import time

    from vgt.demo import serve
    from vgt.eval.benchmark import load_sampling_pipeline

    pipe = load_sampling_pipeline(args.model, args.device, threads=args.threads, images_per_call=1)
    try:
        server = serve(pipe, args.host, args.port)
    except OSError as error:
        raise SystemExit(f"cannot serve on {args.host}:{args.port}: {error.strerror or error}; choose another --port "
                         "(0: any free port) or --host") from None
    print(f"VGT demo at {server.url} (Ctrl+C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()
        server.server_close()


def add_commands(tree) -> None:
    p = tree.command("demo", run_demo, "Serve a local web page: text-to-image and inpainting with a VGT model.")
    p.add_argument("--model", help="VGT pipeline folder (default: $VGT_MODEL, else the model shipped with vgt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=non_negative_int, default=7860, help="port (0: any free port)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    p.add_argument("--threads", type=int,
                   help="CPU threads (default: $OMP_NUM_THREADS if set, else 1: small batches run fastest on one)")
