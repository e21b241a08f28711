"""Shared fixtures: thread settings, the training engine's reference data and run, and the quick recipe run."""

import os

import pytest
import torch

# Any hub access must fail at once: tests use only models and data the project makes itself.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def single_thread():
    """Tiny models run fastest on one thread, and far faster than on two when other jobs share the cores.
    Use with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def benchmark_module():
    """Loads a script of benchmarks/ by name (they are not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """24 random non-square RGB images with captions, HF imagefolder layout (metadata.jsonl)."""
    import json

    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    with open(root / "metadata.jsonl", "w") as f:
        for i in range(24):
            array = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / f"{i:03d}.png")
            f.write(json.dumps({"file_name": f"{i:03d}.png", "text": f"image {i}"}) + "\n")
    return root


def _train_toy(folder, run_dir, dropout=0.2, noise=0.1, **changes):
    from vgt.data.readers import ImageFolderSource
    from vgt.train import TrainConfig, train
    from vgt.train.toy import DenoisingLoss, build_toy_model

    values = dict(run_dir=str(run_dir), steps=8, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=3,
                  weight_decay=0.01, log_every=1, save_every=4, keep_last=5, ema_decay=0.9, ema_start=2)
    model = build_toy_model(width=8, dropout=dropout, seed=0)
    return train(model, DenoisingLoss(noise), ImageFolderSource(folder, 16), TrainConfig(**{**values, **changes}))


@pytest.fixture(scope="session")
def train_toy():
    """`train_toy(folder, run_dir, dropout=0.2, noise=0.1, **TrainConfig changes)`: the engine's reference run, 8 steps
    of the toy denoiser on 16 px images (checkpoints at 4 and 8, EMA from step 2); returns the `TrainResult`."""
    return _train_toy


@pytest.fixture(scope="session")
def logged_losses():
    """`logged_losses(run_dir)`: the (step, loss) pairs of a run's metrics.jsonl."""
    from vgt.train import read_metrics

    return lambda run_dir: [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The quick ShapesWorld recipe (every stage for tens of steps, ~1 minute), run once per test session on one
    thread: on a machine shared with other jobs, PyTorch's thread pool slows such tiny models down many times over.
    Yields (OUT, the state of OUT/recipe.json)."""
    from vgt.presets import recipe_preset
    from vgt.recipe import run_recipe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("recipe") / "quick"
        state = run_recipe(recipe_preset("quick"), out)
        yield out, state
    finally:
        torch.set_num_threads(threads)
