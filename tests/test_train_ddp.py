"""The engine from the CLI with 2 processes (torchrun, gloo on CPU): same weights as 1 process, exact resume."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from vgt.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


def _toy_cli(run_dir, processes, data):
    args = ["train", "toy", "--run-dir", str(run_dir), "--data", f"folder:{data}",
            "--size", "16", "--width", "8", "--max-steps", "4", "--batch-size", "8", "--noise", "0.2",
            "--log-every", "1", "--save-every", "2"]
    if processes == 1:
        assert main(args) == 0
        return
    # torchrun; on a machine without GPUs the engine joins the gloo process group on CPU
    _torchrun(processes, "-m", "vgt", *args)


def _torchrun(processes, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_ddp_matches_one_process_from_the_cli(tmp_path, image_folder, logged_losses):
    _toy_cli(tmp_path / "one", 1, image_folder)
    _toy_cli(tmp_path / "two", 2, image_folder)
    assert json.loads((tmp_path / "two/run_info.json").read_text())["num_processes"] == 2
    one = load_file(str(tmp_path / "one/checkpoints/step_00000004/model.safetensors"))
    two = load_file(str(tmp_path / "two/checkpoints/step_00000004/model.safetensors"))
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    # a tolerance, not rounding: two losses 1e-9 apart can round to different 5th decimals
    one_losses, two_losses = logged_losses(tmp_path / "one"), logged_losses(tmp_path / "two")
    assert [s for s, _ in one_losses] == [s for s, _ in two_losses]
    assert [x for _, x in two_losses] == pytest.approx([x for _, x in one_losses], abs=1e-5)
    # the 2-process run resumes exactly as well
    shutil.rmtree(tmp_path / "two/checkpoints/step_00000004")
    before = logged_losses(tmp_path / "two")
    _toy_cli(tmp_path / "two", 2, image_folder)
    assert logged_losses(tmp_path / "two") == before


_DDP_WORKER = """
import sys, torch, torch.distributed as dist
from vgt.train.process import end_distributed_process
dist.init_process_group("gloo")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
for _ in range(3):
    model(torch.ones(8, 64)).sum().backward()
dist.all_reduce(torch.ones(1))
sys.stdout.write(f"<rank {dist.get_rank()} done>")  # one small write: atomic on a pipe
end_distributed_process(0)
"""


def test_ddp_worker_exits_cleanly(tmp_path):
    # without end_distributed_process 2-4 in 10 of these runs abort at interpreter shutdown (SIGABRT, "terminate
    # called without an active exception"), more on a busy machine
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    for _ in range(4):
        result = _torchrun(2, str(script))
        assert "<rank 0 done>" in result.stdout and "<rank 1 done>" in result.stdout  # output flushed


def test_single_process_cpu_launch_asking_for_several_processes_is_refused(monkeypatch):
    from vgt.train.process import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu --num_processes 2` sets
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --standalone --nproc_per_node N"):
        make_accelerator("fp32", False)
