"""ShapesEval: GenEval's six questions asked of ShapesWorld images and answered exactly by `vgt.eval.judge`.

The prompt set is fixed and versioned: every combination of each category's slots, in a fixed order, repeated
until the category holds at least `MIN_PROMPTS_PER_CATEGORY` prompts (GenEval likewise asks one prompt several
times through its samples). Changing it means a new `PROMPT_SET_VERSION`; a test pins its digest.

Scores follow GenEval: an image is correct or not, a category's score is the mean over its images, and `overall`
is the mean of the six category scores.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from itertools import permutations
from pathlib import Path

import numpy as np

from vgt.data.shapes import COLORS, GENEVAL_TAGS, MAX_COUNT, RELATIONS, SHAPES, PromptSpec, make_prompt, render_scene
from vgt.data.shapes_world import scene_for_prompt
from vgt.eval.judge import judge_image
from vgt.eval.layout import read_layout, write_prompt_samples

PROMPT_SET_VERSION = "shapes-eval-v1"
MIN_PROMPTS_PER_CATEGORY = 80
BOOTSTRAP_RESAMPLES = 2000


def _category_prompts(tag: str) -> list[PromptSpec]:
    """Every distinct prompt of a category, in a fixed order."""
    pairs = list(permutations(SHAPES, 2))
    if tag == "single_object":
        return [make_prompt(tag, [s]) for s in SHAPES]
    if tag == "two_object":
        return [make_prompt(tag, pair) for pair in pairs]
    if tag == "counting":
        return [make_prompt(tag, [s], count=n) for s in SHAPES for n in range(1, MAX_COUNT + 1)]
    if tag == "colors":
        return [make_prompt(tag, [s], [c]) for s in SHAPES for c in COLORS]
    if tag == "position":
        return [make_prompt(tag, pair, relation=r) for pair in pairs for r in RELATIONS]
    if tag == "color_attr":
        return [make_prompt(tag, pair, colors) for pair in pairs for colors in permutations(COLORS, 2)]
    raise ValueError(f"unknown category {tag!r}; choose from {', '.join(GENEVAL_TAGS)}")


def shapes_eval_prompts() -> list[dict]:
    """The ShapesEval prompt set as GenEval metadata lines (tag, include, exclude?, prompt) plus `version`."""
    lines = []
    for tag in GENEVAL_TAGS:
        distinct = _category_prompts(tag)
        repeats = -(-MIN_PROMPTS_PER_CATEGORY // len(distinct))
        for spec in distinct * repeats:
            lines.append({**spec.to_metadata(), "version": PROMPT_SET_VERSION})
    return lines


def read_prompts(path: str | os.PathLike) -> list[dict]:
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                row = json.loads(line)
                if "prompt" not in row or "tag" not in row or "include" not in row:
                    raise ValueError(f"{path}:{number}: a prompt line needs 'tag', 'prompt' and 'include'")
                rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    return rows


def render_ground_truth(out_dir: str | os.PathLike, prompts: Sequence[dict] | None = None,
                        samples_per_prompt: int = 4, resolution: int = 128, seed: int = 0,
                        overwrite: bool = False) -> Path:
    """Render scenes that satisfy each prompt into the GenEval layout: a perfect generator, scoring ~1.0."""
    from tqdm import tqdm

    prompts = shapes_eval_prompts() if prompts is None else prompts
    for index, metadata in enumerate(tqdm(prompts, desc="render ground truth", unit="prompt")):
        spec = PromptSpec.from_metadata(metadata)
        images = [render_scene(scene_for_prompt(spec, np.random.default_rng([seed, index, k])), resolution)
                  for k in range(samples_per_prompt)]
        write_prompt_samples(out_dir, index, metadata, images, overwrite=overwrite)
    return Path(out_dir)


def _unit(result: dict) -> object:
    """What a bootstrap resamples: the prompt (all its images, over every seed) when known, else the image."""
    return result.get("index", result.get("filename", id(result)))


def _prompt_units(results: Sequence[dict]) -> dict[str, dict[object, list[bool]]]:
    """category -> bootstrap unit -> the verdicts of its images."""
    units: dict[str, dict[object, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        units[result["tag"]][_unit(result)].append(bool(result["correct"]))
    return units


def _resampled_scores(by_unit: dict[object, list[bool]], keys: Sequence[object], pick: np.ndarray) -> np.ndarray:
    """A category's score in every bootstrap draw: `pick` holds indices into `keys` (the units, in one order)."""
    units = [by_unit[key] for key in keys]
    correct = np.array([sum(v) for v in units], dtype=np.float64)
    count = np.array([len(v) for v in units], dtype=np.float64)
    return correct[pick].sum(axis=1) / count[pick].sum(axis=1)


def _interval_report(draws: dict[str, np.ndarray], level: float) -> tuple[dict[str, list[float]], list[float]]:
    """Percentile bounds of each category's draws and of their GenEval mean (`overall`)."""
    tail = (1 - level) / 2 * 100

    def bounds(values: np.ndarray) -> list[float]:
        return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]

    categories = {tag: bounds(draws[tag]) for tag in (*GENEVAL_TAGS, *sorted(draws)) if tag in draws}
    present = [tag for tag in GENEVAL_TAGS if tag in draws]
    overall = bounds(np.mean([draws[tag] for tag in present], axis=0)) if present else [0.0, 0.0]
    return categories, overall


def bootstrap_interval(results: Sequence[dict], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> dict:
    """Percentile bootstrap interval of every category score and of `overall`, resampling prompts within each
    category (a prompt's images are not independent: they share its text). Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    draws = {tag: _resampled_scores(by_unit, list(by_unit), rng.integers(0, len(by_unit), (resamples, len(by_unit))))
             for tag, by_unit in _prompt_units(results).items()}
    categories, overall = _interval_report(draws, level)
    return {"level": level, "method": "bootstrap over prompts", "overall": overall, "categories": categories}


def paired_difference(a: Sequence[dict], b: Sequence[dict], level: float = 0.95,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict:
    """B's scores minus A's, judged on the same prompts and seeds (two models, or two settings of one), with a
    percentile bootstrap interval that draws the same prompts for both: the luck of the prompt draw, which two
    separate intervals each carry, cancels, so a difference inside both intervals can still be told from zero."""
    units_a, units_b = _prompt_units(a), _prompt_units(b)
    shape_a = {tag: {k: len(v) for k, v in u.items()} for tag, u in units_a.items()}
    shape_b = {tag: {k: len(v) for k, v in u.items()} for tag, u in units_b.items()}
    if shape_a != shape_b:
        raise ValueError("the two evaluations did not judge the same prompts with the same number of images each: "
                         "compare evaluations of one prompt set, split, seeds and --num-images-per-prompt")
    rng = np.random.default_rng(seed)
    draws = {}
    for tag, by_unit in units_a.items():
        keys, pick = list(by_unit), rng.integers(0, len(by_unit), (resamples, len(by_unit)))
        draws[tag] = _resampled_scores(units_b[tag], keys, pick) - _resampled_scores(by_unit, keys, pick)
    scores_a, scores_b = summarize(a), summarize(b)
    categories, overall = _interval_report(draws, level)
    return {"a": {k: scores_a[k] for k in ("overall", "categories")},
            "b": {k: scores_b[k] for k in ("overall", "categories")},
            "difference": {"overall": scores_b["overall"] - scores_a["overall"],
                           "categories": {tag: scores_b["categories"][tag] - scores_a["categories"][tag]
                                          for tag in scores_a["categories"]}},
            "interval": {"level": level, "method": "paired bootstrap over prompts", "overall": overall,
                         "categories": categories},
            "n_images": len(a)}


def read_judged(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """The per-image verdicts of an evaluation and what they cover: a `vgt eval model --out` folder (every
    seed-S/per_image.jsonl; returns their seed folder names) or one per-image JSONL file (`vgt eval shapes
    --per-image`, `evaluate_pipeline`'s OUT/per_image.jsonl)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("seed-*/per_image.jsonl")) or sorted(path.glob("per_image.jsonl"))
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"no judged images at {str(path)!r}: pass a `vgt eval model --out` folder or a "
                                f"per-image JSONL file (`vgt eval shapes --per-image FILE`)")
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    return rows, [f.parent.name for f in files if f.parent.name.startswith("seed-")]


def detection_counts(results: Sequence[dict]) -> dict:
    """How many images hold no object at all, and how many found objects are of no known shape (the judge's
    "unknown", `shape` null in the per-image records)."""
    objects = [o for r in results for o in r.get("objects", [])]
    return {"images": len(results), "blank": sum(not r.get("objects") for r in results), "objects": len(objects),
            "unknown_shape": sum(o.get("shape") is None for o in objects)}


def summarize(results: Sequence[dict], seeds: dict[int, Sequence[dict]] | None = None) -> dict:
    """GenEval scores from per-image results: category means and their mean, with a 95% bootstrap interval over
    prompts; `seeds` (the same results split by sampling seed) adds each seed's scores."""
    by_tag: dict[str, list[bool]] = defaultdict(list)
    for result in results:
        by_tag[result["tag"]].append(bool(result["correct"]))
    categories = {tag: float(np.mean(by_tag[tag])) for tag in GENEVAL_TAGS if by_tag[tag]}
    extra = {tag: float(np.mean(v)) for tag, v in by_tag.items() if tag not in GENEVAL_TAGS}
    categories.update(extra)
    missing = [tag for tag in GENEVAL_TAGS if tag not in categories]
    overall = float(np.mean([categories[tag] for tag in GENEVAL_TAGS if tag in categories])) if categories else 0.0
    scores = {"overall": overall, "categories": categories, "n_images": len(results)}
    if results:
        scores["interval"] = bootstrap_interval(results)
    if seeds:
        scores["seeds"] = {str(seed): {k: v for k, v in summarize(rows).items() if k in ("overall", "categories")}
                           for seed, rows in seeds.items()}
    if missing:
        scores["missing_categories"] = missing
    return scores


def evaluate_layout(out_dir: str | os.PathLike, rules: str = "strict") -> tuple[dict, list[dict]]:
    """Judge every image of a GenEval-layout directory; returns (scores, per-image results)."""
    from PIL import Image
    from tqdm import tqdm

    prompts = read_layout(out_dir)
    results = []
    total = sum(len(p.sample_paths) for p in prompts)
    with tqdm(total=total, desc="judge", unit="img") as progress:
        for entry in prompts:
            for path in entry.sample_paths:
                with Image.open(path) as image:
                    verdict = judge_image(image, entry.metadata, rules)
                results.append({"filename": str(path), "index": entry.index, "tag": entry.metadata["tag"],
                                "prompt": entry.metadata.get("prompt", ""), "correct": verdict.correct,
                                "reason": "; ".join(verdict.reasons),
                                "objects": [d.to_dict() for d in verdict.detections]})
                progress.update()
    return summarize(results), results


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, ["-" * w for w in widths], *rows]]


def format_scores(scores: dict) -> str:
    """A table: each category's score, its 95% interval and, when several seeds were sampled, each seed's score."""
    interval = scores.get("interval", {})
    seeds = scores.get("seeds", {})
    header = ["category", "score", "95% interval", *(f"seed {s}" for s in seeds)]
    rows = []
    for name in [*scores["categories"], "overall"]:
        score = scores["overall"] if name == "overall" else scores["categories"][name]
        bounds = interval.get("overall") if name == "overall" else interval.get("categories", {}).get(name)
        per_seed = [seed["overall"] if name == "overall" else seed["categories"].get(name, float("nan"))
                    for seed in seeds.values()]
        rows.append([name, f"{score:.4f}", f"{bounds[0]:.3f}-{bounds[1]:.3f}" if bounds else "-",
                     *(f"{v:.4f}" for v in per_seed)])
    lines = _table(header, rows)
    note = f"{scores['n_images']} images"
    if seeds:
        note += f" over {len(seeds)} sampling seeds ({', '.join(seeds)}); score = their mean"
    if interval:
        note += f"; interval: {interval['method']}"
    lines.append(f"({note})")
    if scores.get("missing_categories"):
        lines.append(f"warning: no images for {', '.join(scores['missing_categories'])}; overall averages the rest")
    return "\n".join(lines)


def format_comparison(report: dict) -> str:
    """A table of `paired_difference`'s report: A, B, B - A and its paired interval per category and overall."""
    rows = []
    for name in [*report["a"]["categories"], "overall"]:
        a, b, diff, bounds = (part["overall"] if name == "overall" else part["categories"][name]
                              for part in (report["a"], report["b"], report["difference"], report["interval"]))
        rows.append([name, f"{a:.4f}", f"{b:.4f}", f"{diff:+.4f}", f"{bounds[0]:+.3f} to {bounds[1]:+.3f}"])
    lines = _table(["category", "A", "B", "B - A", "95% interval"], rows)
    lines.append(f"({report['n_images']} images each; interval: {report['interval']['method']})")
    return "\n".join(lines)
