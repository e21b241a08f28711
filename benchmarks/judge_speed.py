"""Time the ShapesEval judge: 2,000 ground-truth images of 128 px in GenEval layout, read from disk and judged.

    python benchmarks/judge_speed.py [--images 2000] [--resolution 128]
"""

import argparse
import tempfile
import time

from vgt.eval.shapes import evaluate_layout, render_ground_truth, shapes_eval_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4, help="images per prompt")
    args = parser.parse_args()
    prompts = shapes_eval_prompts()
    n_prompts = -(-args.images // args.samples)
    prompts = (prompts * (n_prompts // len(prompts) + 1))[:n_prompts]
    with tempfile.TemporaryDirectory() as out:
        render_ground_truth(out, prompts, args.samples, args.resolution, seed=0)
        start = time.perf_counter()
        scores, results = evaluate_layout(out)
        seconds = time.perf_counter() - start
    print(f"judged {len(results)} images of {args.resolution} px in {seconds:.1f} s "
          f"({1000 * seconds / len(results):.2f} ms/image, PNG decoding included); overall {scores['overall']:.4f}")


if __name__ == "__main__":
    main()
