"""The training loop every stage runs: `train(model, loss_fn, source, cfg)`.

A stage supplies a model (fp32 `nn.Module`), a loss function and a data `Source`; the engine does the rest on
top of `accelerate`: device placement and DDP/FSDP (whatever `accelerate launch` / torchrun configured), autocast,
gradient accumulation and clipping, AdamW + warmup/cosine, EMA, checkpoints with exact resume, metrics, hooks,
and stopping on a non-finite loss. See docs/training.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedType
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from vgt.data.sources import Source
from vgt.train import checkpoint as ckpt
from vgt.train.config import TrainConfig
from vgt.train.ema import EMA
from vgt.train.loader import StreamPosition, make_loader
from vgt.train.lock import RunDirLock
from vgt.train.logging import MetricsLogger, write_run_info
from vgt.train.optim import build_optimizer, set_lr
from vgt.train.process import make_accelerator
from vgt.train.resume import check_resumed_config, find_resume_checkpoint, step_of

logger = logging.getLogger(__name__)


@dataclass
class StepContext:
    """What a loss function may need besides the batch."""

    step: int  # optimizer step being computed, 0-based
    micro_step: int  # gradient-accumulation micro-step within it
    #: one per sample of the batch, seeded by (seed, the sample's global index in the run): draw sample i's random
    #: numbers from generators[i], so 1 and N processes (and resumed runs) draw the same numbers for each sample
    generators: list[torch.Generator]
    device: torch.device
    accelerator: Accelerator


LossFn = Callable[[nn.Module, dict, StepContext], "tuple[torch.Tensor, dict[str, float | torch.Tensor]]"]


@dataclass
class HookContext:
    """Handed to hooks: the unwrapped model with its online weights, and the EMA if there is one."""

    step: int  # optimizer steps completed
    model: nn.Module
    ema: EMA | None
    run_dir: Path
    accelerator: Accelerator

    @contextmanager
    def eval_model(self) -> Iterator[nn.Module]:
        """The model in eval mode with EMA weights swapped in when EMA is enabled (online weights otherwise)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ema.applied_to(self.model) if self.ema is not None else nullcontext(self.model):
                yield self.model
        finally:
            self.model.train(was_training)


@dataclass
class Hook:
    """A periodic callback (sampling images, evaluation). Returns metrics to log, or None.

    `every` None means the config's `eval_every`. With `main_process_only` the other processes wait for it."""

    fn: Callable[[HookContext], dict | None]
    name: str = "hook"
    every: int | None = None
    main_process_only: bool = True
    at_end: bool = True


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    metrics: dict = field(default_factory=dict)  # the last logged metrics line
    skipped: int = 0  # unreadable samples skipped, all processes together
    is_main_process: bool = True  # False on the other ranks of a multi-process run (e.g. to print/export once)
    model_dir: Path | None = None  # where a stage function exported the trained model (main process only)
    weights: str | None = None  # which weights it exported: "ema" or "model"


class NonFiniteLossError(RuntimeError):
    pass


def _seed_for(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


class Trainer:
    """One run. `train()` below is the usual entry point; the class exists so tests and stages can inspect it."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, source: Source, cfg: TrainConfig,
                 hooks: list[Hook] | tuple = (), extra_config: dict | None = None,
                 find_unused_parameters: bool = False, accelerator: Accelerator | None = None):
        self.cfg = cfg
        self.loss_fn = loss_fn
        self.hooks = list(hooks)
        self.run_dir = Path(cfg.run_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise FileExistsError(f"--run-dir {str(self.run_dir)!r} is a file; a run directory is due there")
        self.accelerator = accelerator or make_accelerator(cfg.precision, find_unused_parameters)
        created = not self.run_dir.exists()
        self.lock = RunDirLock(self.run_dir) if self.accelerator.is_main_process else None
        try:
            self._setup(model, source, extra_config)
        except BaseException:
            self.release()
            if created and self.lock is not None:  # a run that never started leaves no directory behind
                self.lock.path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.run_dir.rmdir()
            raise

    def release(self) -> None:
        """Let another training use the run directory (done at the end of `train()`)."""
        if self.lock is not None:
            self.lock.release()

    def _setup(self, model: nn.Module, source: Source, extra_config: dict | None) -> None:
        acc, cfg = self.accelerator, self.cfg
        self.micro_batch = cfg.micro_batch_size(acc.num_processes)
        self.fsdp = acc.distributed_type == DistributedType.FSDP
        if self.fsdp and cfg.ema_decay > 0:
            raise ValueError("EMA is not supported with FSDP (the weights are sharded); set --ema-decay 0")

        config = json.loads(json.dumps({"train": cfg.to_dict(), **(extra_config or {})}))
        resume_from, state = find_resume_checkpoint(self.run_dir, self.cfg.resume)
        if resume_from is not None:
            check_resumed_config(resume_from, config, self.run_dir, self.cfg.allow_config_change,
                                 acc.is_main_process)
            ckpt.load_state_strict(model, state["model"], str(resume_from / ckpt.MODEL_FILE))
        optimizer = build_optimizer(model, cfg)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # after prepare, so the average lives on the training device
        self.ema = EMA(acc.unwrap_model(self.model), cfg.ema_decay, cfg.ema_start) if cfg.ema_decay > 0 else None
        self.step = 0
        num_parts = acc.num_processes * max(1, cfg.num_workers)
        self.position = StreamPosition(num_parts)
        rank_state = None
        if resume_from is not None:
            rank_state = self._load_state(resume_from, state, num_parts)
        self.resumed_from = resume_from

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            if resume_from is not None:  # a later checkpoint belongs to an abandoned branch (or is damaged)
                later = [p for p in ckpt.list_checkpoints(self.run_dir) if step_of(p) > self.step]
                if later:
                    moved = ckpt.set_aside(later)
                    logger.warning("resuming from step %d: set aside the later checkpoint(s) %s in %s, so that "
                                   "--resume auto continues this run", self.step, [p.name for p in later], moved)
            setup = {"num_processes": acc.num_processes, "distributed_type": str(acc.distributed_type.value),
                     "device": str(acc.device), "mixed_precision": acc.mixed_precision,
                     "resumed_from": str(resume_from) if resume_from else None}
            write_run_info(self.run_dir, config, cfg.seed, setup)
        self.logger = MetricsLogger(self.run_dir, self.step if resume_from else None) if acc.is_main_process else None
        self.loader = make_loader(source, self.micro_batch, cfg.seed, acc.process_index, acc.num_processes,
                                  cfg.num_workers, self.position, pin_memory=acc.device.type == "cuda")
        # Global RNGs last, after everything that might draw from them: identical state on fresh start/resume.
        if rank_state is not None:
            ckpt.restore_rng(rank_state["rng"])
        else:
            set_seed(cfg.seed, device_specific=True)
        self.last_checkpoint = resume_from

    # -- checkpoints -------------------------------------------------------------------------------------------
    def _load_state(self, path: Path, state: dict, num_parts: int) -> dict:
        acc = self.accelerator
        trainer = state["trainer"]
        if trainer["world_size"] != acc.num_processes or trainer["batch_size"] != self.cfg.batch_size:
            raise ValueError(
                f"{path} was saved by {trainer['world_size']} process(es) at global batch {trainer['batch_size']}; "
                f"resume with the same (now {acc.num_processes} process(es), batch {self.cfg.batch_size})"
            )
        rank_state = state["ranks"][acc.process_index]
        try:
            self.optimizer.load_state_dict(rank_state["optimizer"] if self.fsdp else trainer["optimizer"])
        except ValueError as err:
            raise ValueError(
                f"{path}: the optimizer state does not fit this model's parameter groups ({err}); the trainable "
                "parameters, --weight-decay grouping or --lr-mult prefixes changed since it was saved"
            ) from None
        self.step = trainer["step"]
        if acc.scaler is not None and trainer.get("grad_scaler") is not None:
            acc.scaler.load_state_dict(trainer["grad_scaler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise FileNotFoundError(f"{path} has no EMA weights but --ema-decay is set; resume with --ema-decay 0")
            self.ema.load_state_dict({k: v.to(acc.device) for k, v in state["ema"].items()})
        self.position = StreamPosition.from_state(rank_state["data"], num_parts)
        return rank_state

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step (collective: every process must call it)."""
        acc, step = self.accelerator, self.step
        partial = ckpt.partial_dir(self.run_dir, step)
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        model_state = acc.get_state_dict(self.model)
        rank_state = {"rng": ckpt.capture_rng(), "data": self.position.state_dict()}
        if self.fsdp:
            rank_state["optimizer"] = self.optimizer.state_dict()
        ckpt.torch_save_synced(rank_state, partial / ckpt.rank_file(acc.process_index))
        if acc.is_main_process:
            ckpt.save_weights(model_state, partial / ckpt.MODEL_FILE, {"weights": "online", "step": str(step)})
            files = {ckpt.MODEL_FILE: "online weights (what the optimizer trained)"}
            if self.ema is not None:
                ckpt.save_weights(self.ema.state_dict(), partial / ckpt.EMA_FILE,
                                  {"weights": "ema", "step": str(step), "decay": str(self.ema.decay)})
                files[ckpt.EMA_FILE] = (f"EMA of the weights (decay {self.ema.decay}, averaging from step "
                                        f"{self.ema.start}); use these for evaluation and export")
            trainer = {"step": step, "world_size": acc.num_processes, "batch_size": self.cfg.batch_size,
                       "optimizer": None if self.fsdp else self.optimizer.state_dict(),
                       "grad_scaler": acc.scaler.state_dict() if acc.scaler is not None else None}
            ckpt.torch_save_synced(trainer, partial / ckpt.TRAINER_FILE)
        acc.wait_for_everyone()
        final = partial.parent / ckpt.step_dir_name(step)
        if acc.is_main_process:
            meta = {"step": step, "files": files, "world_size": acc.num_processes, "ema": self.ema is not None,
                    "eval_weights": ckpt.EMA_FILE if self.ema is not None else ckpt.MODEL_FILE}
            final = ckpt.publish(partial, meta, self.cfg.keep_last)
        acc.wait_for_everyone()
        self.last_checkpoint = final
        return final

    # -- the loop ----------------------------------------------------------------------------------------------
    def _hook_context(self) -> HookContext:
        return HookContext(self.step, self.accelerator.unwrap_model(self.model), self.ema, self.run_dir,
                           self.accelerator)

    def _run_hooks(self, final: bool) -> dict:
        metrics = {}
        for hook in self.hooks:
            every = self.cfg.eval_every if hook.every is None else hook.every
            if every <= 0 or not (self.step % every == 0 or (final and hook.at_end)):
                continue
            if not hook.main_process_only or self.accelerator.is_main_process:
                metrics.update({f"{hook.name}/{k}": v for k, v in (hook.fn(self._hook_context()) or {}).items()})
                self.model.train()  # whatever mode the hook left the model in
            self.accelerator.wait_for_everyone()
        return metrics

    def _stop_non_finite(self, loss: float, grad_norm: float, metrics: dict) -> None:
        where = f"{self.last_checkpoint}" if self.last_checkpoint else "none (no checkpoint was written yet)"
        message = (
            f"non-finite training loss at step {self.step + 1} (loss {loss}, grad norm {grad_norm}, "
            f"metrics {metrics}); the run stopped without saving. Last good checkpoint: {where}. "
            "Try a lower --lr, --grad-clip 1.0, or another --precision, then continue with --resume auto "
            "--allow-config-change."
        )
        if self.logger is not None:
            self.logger.log(self.step + 1, {"error": message})
        raise NonFiniteLossError(message)

    def _generators(self, micro: int) -> list[torch.Generator]:
        """Per-sample generators. Sample j of this process's micro-batch is global sample
        rank + N * ((step * grad_accum + micro) * micro_batch + j): the index an indexed source deals it from, so
        a sample's numbers depend on neither the process count nor the accumulation split."""
        acc, first = self.accelerator, (self.step * self.cfg.grad_accum + micro) * self.micro_batch
        return [torch.Generator(device=acc.device).manual_seed(
                    _seed_for(self.cfg.seed, acc.process_index + acc.num_processes * (first + j)))
                for j in range(self.micro_batch)]

    def _optimizer_step(self, batches: Iterator[dict]) -> dict[str, torch.Tensor]:
        """One optimizer step over `grad_accum` micro-batches; returns this process's metrics (loss, grad_norm,
        the task's), or stops the run on a non-finite loss or gradient."""
        acc, cfg = self.accelerator, self.cfg
        metrics_sum: dict[str, torch.Tensor] = {}
        for micro in range(cfg.grad_accum):
            try:
                batch = self.position.advance(next(batches))
            except StopIteration:
                raise RuntimeError(
                    f"the data source ended after {self.position.batches} batches; training sources must repeat "
                    "(Source.stream is called with repeat=True)"
                ) from None
            batch = {k: v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            context = StepContext(self.step, micro, self._generators(micro), acc.device, acc)
            sync = micro == cfg.grad_accum - 1  # gradients are all-reduced only on the last micro-step
            with nullcontext() if sync else acc.no_sync(self.model):
                with acc.autocast():
                    loss, metrics = self.loss_fn(self.model, batch, context)
                acc.backward(loss / cfg.grad_accum)
            for name, value in {"loss": loss, **metrics}.items():
                value = torch.as_tensor(value, dtype=torch.float32, device=acc.device).detach()
                metrics_sum[name] = metrics_sum.get(name, 0.0) + value / cfg.grad_accum
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        grad_norm = torch.as_tensor(grad_norm, dtype=torch.float32, device=acc.device)
        # one collective + one host sync per step: any process with a non-finite loss stops every process; a
        # non-finite gradient norm too, except in fp16 where the grad scaler skips such steps by design
        bad = (~torch.isfinite(metrics_sum["loss"])).float()
        if cfg.precision != "fp16":
            bad = bad + (~torch.isfinite(grad_norm)).float()
        if acc.reduce(bad, reduction="sum").item() > 0:
            self._stop_non_finite(metrics_sum["loss"].item(), grad_norm.item(),
                                  {k: v.item() for k, v in metrics_sum.items()})
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.accelerator.unwrap_model(self.model), self.step)
        self.step += 1
        return {**metrics_sum, "grad_norm": grad_norm}

    def train(self) -> TrainResult:
        acc, cfg = self.accelerator, self.cfg
        batches = iter(self.loader)
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not acc.is_local_main_process, desc="train",
                   dynamic_ncols=True)
        sums: dict[str, torch.Tensor] = {}
        count, t_last, step_last, last_metrics = 0, time.perf_counter(), self.step, {}
        try:
            while self.step < cfg.steps:
                lr = set_lr(self.optimizer, self.step, cfg)
                for name, value in self._optimizer_step(batches).items():
                    sums[name] = sums.get(name, 0.0) + value
                count += 1
                bar.update(1)
                final = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or final:
                    names = sorted(sums)
                    means = acc.reduce(torch.stack([sums[n] / count for n in names]), reduction="mean").tolist()
                    elapsed = time.perf_counter() - t_last
                    last_metrics = {**dict(zip(names, means, strict=True)), "lr": lr, "skipped": self._skipped(),
                                    "samples_per_s": cfg.batch_size * (self.step - step_last) / max(elapsed, 1e-9)}
                    if self.logger is not None:
                        self.logger.log(self.step, last_metrics)
                    bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", lr=f"{lr:.2e}",
                                    sps=f"{last_metrics['samples_per_s']:.1f}", refresh=False)
                    sums, count, t_last, step_last = {}, 0, time.perf_counter(), self.step
                hook_metrics = self._run_hooks(final)
                if hook_metrics and self.logger is not None:
                    self.logger.log(self.step, hook_metrics)
                if final or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                    self.save_checkpoint()
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()
            self.release()
        return TrainResult(self.step, self.last_checkpoint, last_metrics, self._skipped(), acc.is_main_process)

    def _skipped(self) -> int:
        """Unreadable samples skipped so far, all processes together (collective)."""
        count = torch.tensor(self.position.skipped, device=self.accelerator.device)
        return int(self.accelerator.reduce(count, reduction="sum").item())


def train(model: nn.Module, loss_fn: LossFn, source: Source, cfg: TrainConfig, hooks: list[Hook] | tuple = (),
          extra_config: dict | None = None, find_unused_parameters: bool = False) -> TrainResult:
    """Train `model` by minimising `loss_fn(model, batch, ctx) -> (loss, metrics)` over batches of `source`.

    `model` must hold fp32 weights; `loss_fn` must run the forward through `model(...)` (the wrapped module, so
    DDP/FSDP see it). Resumes from `cfg.run_dir` per `cfg.resume`. `extra_config` (the stage's own settings) is
    saved next to the training config in `RUN_DIR/config.json`.
    """
    return Trainer(model, loss_fn, source, cfg, hooks, extra_config, find_unused_parameters).train()
