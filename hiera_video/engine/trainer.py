"""The epoch / iteration loop: LR schedule, AMP, accumulation, clipping, logging, evaluation, checkpoints, resume.

Resuming is exact: a checkpoint holds the model, optimizer, scaler, the position in the epoch and every rank's
RNG state, and the sampler replays the same order and per-sample seeds, so a run stopped mid-epoch and resumed
reaches the same weights as one that never stopped.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hiera_video.config import register_choices
from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine import parallel
from hiera_video.engine.compile import COMPILE_MODES, compile_model
from hiera_video.engine.cuda_options import cuda_options
from hiera_video.engine.ema import build_model_ema, ema_statistics
from hiera_video.engine.logging import TensorboardWriter, log_json_stats, memory_string
from hiera_video.engine.optim import LR_POLICIES, OPTIMIZERS, build_optimizer, lr_at, scaled_lr, set_lr
from hiera_video.engine.preemption import StopFlag, StopRequested
from hiera_video.engine.sharded_checkpoint import ShardedCheckpointWriter, read_checkpoint
from hiera_video.engine.step_stats import StepStats
from hiera_video.models.weights import load_pretrained, load_state_file
from hiera_video.tasks.base import EvaluationInterrupted, Task
from hiera_video.utils import distributed as du
from hiera_video.utils.amp import AMP_DTYPES, amp_context
from hiera_video.utils.faults import hold_after, inject_fault
from hiera_video.utils.meters import MetricLogger
from hiera_video.utils.progress import ProgressReporter, eta_string
from hiera_video.utils.reports import check_bad_fraction
from hiera_video.utils.wrappers import unwrap_model

logger = logging.getLogger(__name__)

register_choices("SOLVER.OPTIMIZING_METHOD", OPTIMIZERS)
register_choices("SOLVER.LR_POLICY", LR_POLICIES)
register_choices("TRAIN.AMP_DTYPE", AMP_DTYPES)
register_choices("TRAIN.COMPILE", COMPILE_MODES)


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors of a batch on `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Trainer:
    """Trains `task`'s model as the config says, on this process's share of the data."""

    def __init__(self, cfg: CfgNode, task: Task, ctx: du.DistContext) -> None:
        self.cfg = cfg
        self.task = task
        self.ctx = ctx
        self.device = ctx.device
        # With TRAIN.PARALLELISM fsdp the model is sharded here, before the optimizer takes its parameters.
        self.model = parallel.shard_model(task.build_model().to(self.device), cfg, ctx)
        self.sharded_writer = ShardedCheckpointWriter(ctx.is_main) if parallel.is_sharded(self.model) else None
        self.global_batch = cfg.TRAIN.BATCH_SIZE
        self.base_lr = scaled_lr(cfg.SOLVER.BASE_LR, self.global_batch, cfg.SOLVER.BASE_LR_BATCH)
        self.cuda_options = cuda_options(self.device, cfg.TRAIN.ACCUM_ITER)
        self.optimizer = build_optimizer(
            self.model, name=cfg.SOLVER.OPTIMIZING_METHOD, base_lr=self.base_lr,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY, betas=tuple(cfg.SOLVER.BETAS), momentum=cfg.SOLVER.MOMENTUM,
            layer_decay=cfg.SOLVER.LAYER_DECAY, fused=self.cuda_options.fused_adamw)
        self.ema = build_model_ema(cfg, unwrap_model(self.model))  # None without MODEL_EMA.ENABLE
        use_scaler = self.device.type == "cuda" and cfg.TRAIN.MIXED_PRECISION and cfg.TRAIN.AMP_DTYPE == "float16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.step_stats = StepStats(self.device)  # read at log steps only: steps never wait for the device
        self.start_epoch, self.start_iter = 0, 0
        self.last_checkpoint = ""
        self.eval_pending = False  # resumed from a checkpoint whose evaluation was interrupted
        self.best: dict[str, float] = {}
        self.reported_bad: set[str] = set()  # bad videos already named in the log (each is named once per run)
        self.tensorboard = TensorboardWriter(f"{cfg.OUTPUT_DIR}/{cfg.TENSORBOARD.LOG_DIR}",
                                             enabled=cfg.TENSORBOARD.ENABLE and ctx.is_main)

    # ------------------------------------------------------------------------------------------------ state
    def _state(self, epoch: int, iteration: int, eval_pending: bool) -> dict[str, Any]:
        rng_states = du.gather_object(ckpt.capture_rng_state(self.device))  # rank 0 writes them
        model_state, optimizer_state = parallel.training_state(self.model, self.optimizer)
        return {
            "model_state": model_state,
            "optimizer_state": optimizer_state,
            "scaler_state": self.scaler.state_dict(),
            "epoch": epoch,
            "iter": iteration,
            "world_size": self.ctx.world_size,
            "rng_states": rng_states,
            "best": dict(self.best),
            "eval_pending": eval_pending,
            "cfg": self.cfg.dump(),
            **(self.ema.to_checkpoint() if self.ema is not None else {}),
        }

    def save(self, epoch: int, iteration: int, eval_pending: bool = False) -> str:
        """Checkpoint after `epoch` completed epochs and `iteration` steps of the next one (all ranks call it);
        `eval_pending`: the evaluation of epoch `epoch` follows, and a run resuming here starts with it."""
        state = self._state(epoch, iteration, eval_pending)
        sharded = self.sharded_writer is not None
        path = ckpt.checkpoint_path(self.cfg.OUTPUT_DIR, epoch, iteration or None, sharded=sharded)

        def prune() -> None:
            if iteration == 0:
                ckpt.keep_last(self.cfg.OUTPUT_DIR, self.cfg.TRAIN.KEEP_ITER_CHECKPOINTS)

        if self.sharded_writer is not None:  # every rank writes its shards, in the background (`wait_for_checkpoint`)
            self.sharded_writer.save(path, state, on_complete=prune)
        else:
            if self.ctx.is_main:
                ckpt.save_checkpoint(path, state)
                prune()
            du.barrier()
        self.last_checkpoint = path
        return path

    def wait_for_checkpoint(self) -> None:
        """Returns once the last checkpoint is complete on disk (sharded ones are written in the background)."""
        if self.sharded_writer is not None:
            self.sharded_writer.wait()

    def resume_or_initialise(self) -> None:
        """Continue from the newest checkpoint in OUTPUT_DIR (rank 0's choice), else start from
        TRAIN.CHECKPOINT_FILE_PATH."""
        latest = ckpt.agreed_latest_checkpoint(self.cfg.OUTPUT_DIR, self.ctx.is_main) \
            if self.cfg.TRAIN.AUTO_RESUME else None
        if latest:
            state = read_checkpoint(latest, self.model, self.optimizer)
            parallel.load_model_state(self.model, state["model_state"])
            parallel.load_optimizer_state(self.model, self.optimizer, state["optimizer_state"])
            ckpt.restore_scaler(self.scaler, state["scaler_state"])
            if self.ema is not None:
                self.ema.from_checkpoint(state, latest)
            self.start_epoch, self.start_iter = int(state["epoch"]), int(state["iter"])
            self.best = dict(state.get("best", {}))
            self.eval_pending = bool(state.get("eval_pending", False))
            rng_states = state["rng_states"]
            if len(rng_states) == self.ctx.world_size:
                ckpt.restore_rng_state(rng_states[self.ctx.rank], self.device)
            else:
                logger.warning("Checkpoint was written by %d processes, this run has %d: RNG streams restart",
                               len(rng_states), self.ctx.world_size)
            self.last_checkpoint = latest
            logger.info("Resumed from %s at epoch %d, iteration %d", latest, self.start_epoch + 1, self.start_iter)
        elif self.cfg.TRAIN.CHECKPOINT_FILE_PATH:
            path = self.cfg.TRAIN.CHECKPOINT_FILE_PATH
            state = load_state_file(path)
            report = load_pretrained(unwrap_model(self.model), state,
                                     copy=lambda tensors: parallel.load_model_state(self.model, tensors, strict=False))
            logger.info("Initialised from %s: %s", path, report.summary())
            if not self.cfg.TRAIN.CHECKPOINT_EPOCH_RESET and "optimizer_state" in state:
                parallel.load_optimizer_state(self.model, self.optimizer, state["optimizer_state"])
                self.start_epoch, self.start_iter = int(state.get("epoch", 0)), int(state.get("iter", 0))
                if self.ema is not None:
                    self.ema.from_checkpoint(state, path)

    # ------------------------------------------------------------------------------------------------ loop
    def train(self, stop: StopFlag) -> nn.Module:
        """Runs epochs start_epoch..MAX_EPOCH-1; returns the (unwrapped) trained model.

        A stop signal (`stop`) ends the run with StopRequested and a checkpoint to resume from: polled before every
        step, after every epoch-end save and during evaluations; a run stopped during an evaluation runs it again
        when resumed.
        """
        cfg = self.cfg
        self.resume_or_initialise()
        model = compile_model(self.model, cfg.TRAIN.COMPILE)  # evaluation and checkpoints use the eager self.model
        if self.ctx.world_size > 1 and not parallel.is_sharded(self.model):
            model = DistributedDataParallel(model, **self.cuda_options.ddp)
        self.train_model = model
        loader, sampler = self.task.train_loader()
        batch_size = loader.batch_size
        assert batch_size is not None  # the loader batches samples itself
        self.steps_per_epoch = sampler.samples_per_epoch() // batch_size // cfg.TRAIN.ACCUM_ITER
        try:
            inject_fault(self.ctx.rank, cfg.DIST_TIMEOUT_MINUTES * 60)
            if self.eval_pending:
                self._evaluate_or_stop(self.start_epoch - 1, stop, saved=True)
            for epoch in range(self.start_epoch, cfg.SOLVER.MAX_EPOCH):
                start_iter = self.start_iter if epoch == self.start_epoch else 0
                sampler.set_epoch(epoch, start_iter * batch_size * cfg.TRAIN.ACCUM_ITER)
                self.train_epoch(loader, epoch, start_iter, stop)
                last = epoch + 1 == cfg.SOLVER.MAX_EPOCH
                evaluate = bool(cfg.TRAIN.EVAL_PERIOD) and (last or (epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0)
                saved = last or (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0
                if saved:
                    self.save(epoch + 1, 0, eval_pending=evaluate)
                if stop.agreed(self.device):  # arrived during the epoch's last step or its save
                    path = self.last_checkpoint if saved else self.save(epoch + 1, 0, eval_pending=evaluate)
                    raise StopRequested(stop.signal_name, path)
                if evaluate:
                    self._evaluate_or_stop(epoch, stop, saved)
            self.wait_for_checkpoint()
        except StopRequested:
            self.wait_for_checkpoint()  # the checkpoint named in the stop is complete before the job ends
            raise
        finally:
            self.tensorboard.close()
        return unwrap_model(self.model)

    def train_epoch(self, loader, epoch: int, start_iter: int, stop: StopFlag) -> None:
        cfg, model = self.cfg, self.train_model
        model.train()
        meters = MetricLogger()
        bad_files: set[str] = set()
        accum = cfg.TRAIN.ACCUM_ITER
        progress = ProgressReporter(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                                    enabled=self.ctx.is_main, initial=start_iter)
        batches = iter(loader)
        for step in range(start_iter, self.steps_per_epoch):
            if stop.agreed(self.device):
                self._read_stats(meters)  # a non-finite loss stops the run before a checkpoint keeps its weights
                path = self.save(epoch, step)
                raise StopRequested(stop.signal_name, path)
            lr = lr_at(epoch + step / self.steps_per_epoch, self.base_lr, cfg.SOLVER.MAX_EPOCH,
                       cfg.SOLVER.WARMUP_EPOCHS, cfg.SOLVER.WARMUP_START_LR, cfg.SOLVER.COSINE_END_LR,
                       cfg.SOLVER.LR_POLICY)
            set_lr(self.optimizer, lr)
            t0 = time.perf_counter()
            micro_batches = [next(batches) for _ in range(accum)]
            t_data = time.perf_counter() - t0
            self._optimisation_step(model, micro_batches, epoch, step)
            if self.ema is not None:
                self.ema.update(unwrap_model(self.model))
            for micro in micro_batches:
                bad_files.update(self._report_bad(micro))
            dt = time.perf_counter() - t0
            meters.update({"dt": dt, "dt_data": t_data, "dt_net": dt - t_data})
            progress.update(1)
            done = step + 1
            if done % cfg.LOG_PERIOD == 0 or done == self.steps_per_epoch:
                last = self._read_stats(meters)
                remaining = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * self.steps_per_epoch + self.steps_per_epoch - done
                line = {"_type": "train_iter", "epoch": f"{epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                        "iter": f"{done}/{self.steps_per_epoch}", "lr": lr, "mem": memory_string(),
                        "eta": eta_string(meters.median("dt") * remaining), **meters.medians()}
                self._log(line)
                self.tensorboard.add_scalars({"Train/loss": last["loss"], "Train/lr": lr},
                                             epoch * self.steps_per_epoch + done)
            if cfg.TRAIN.CHECKPOINT_ITER_PERIOD and done % cfg.TRAIN.CHECKPOINT_ITER_PERIOD == 0 \
                    and done < self.steps_per_epoch:
                self._read_stats(meters)
                self.save(epoch, done)
            hold_after(epoch * self.steps_per_epoch + done, "iteration", cfg.DIST_TIMEOUT_MINUTES * 60,
                       lambda: stop.agreed(self.device))
        progress.close()
        bad_count = sum(du.all_gather_object(len(bad_files)))
        self._log({"_type": "train_epoch", "epoch": f"{epoch + 1}/{cfg.SOLVER.MAX_EPOCH}", "lr": lr,
                   "mem": memory_string(), "bad_videos": bad_count, "world_size": self.ctx.world_size,
                   **meters.global_averages()})
        check_bad_fraction(bad_count, len(loader.dataset), cfg.DATA.MAX_BAD_FRACTION,
                           "videos of the train split failed to decode (the warnings above name them)")

    def _optimisation_step(self, model: nn.Module, micro_batches: list[dict], epoch: int, step: int
                           ) -> dict[str, torch.Tensor]:
        """One optimiser step; its loss and statistics (0-dim float64 tensors, returned) stay on the device and go
        to step_stats, as does the check that every loss is finite: nothing is read on the host."""
        accum = len(micro_batches)
        totals: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro_batches):
            # Gradients are all-reduced (FSDP: reduce-scattered) once, after the last micro-batch.
            parallel.set_gradient_sync(self.model, i == accum - 1)
            sync = model.no_sync() if isinstance(model, DistributedDataParallel) and i < accum - 1 else \
                contextlib.nullcontext()
            with sync, amp_context(self.cfg, self.device):
                loss, stats = self.task.loss(model, move_to(batch, self.device))
            self.step_stats.check_loss(loss, epoch, step)
            self.scaler.scale(loss / accum).backward()
            values = {"loss": loss, **stats}
            for key in sorted(values):
                totals[key] = totals.get(key, 0.0) + values[key].detach().to(torch.float64) / accum
        if self.cfg.SOLVER.CLIP_GRAD_L2NORM > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.SOLVER.CLIP_GRAD_L2NORM)
            totals["grad_norm"] = parallel.whole_tensor(norm.detach()).to(torch.float64)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_stats.add(totals)
        return totals

    def _read_stats(self, meters: MetricLogger) -> dict[str, float]:
        """Adds every step's statistics since the last read to `meters` (a collective) and returns the last step's;
        raises FloatingPointError naming the first iteration whose loss was not finite (fp16: warns)."""
        steps = self.step_stats.read(self.last_checkpoint, skip_nonfinite=self.scaler.is_enabled())
        for values in steps:
            meters.update(values)
        return steps[-1] if steps else {}

    def _report_bad(self, batch: dict) -> set[str]:
        """The batch's failed videos; names the ones not named before in the log."""
        bad = set(batch.get("bad_files", []))
        for entry in sorted(bad - self.reported_bad):
            logger.warning("Skipped a video that failed to decode: %s", entry)
        self.reported_bad |= bad
        return bad

    def _evaluate_or_stop(self, epoch: int, stop: StopFlag, saved: bool) -> None:
        """Evaluates after `epoch`; when a stop interrupts it, saves (unless `saved`: the epoch-end checkpoint,
        marked eval_pending, is there) and raises StopRequested."""
        try:
            self.evaluate(epoch)
        except EvaluationInterrupted:
            path = self.last_checkpoint if saved else self.save(epoch + 1, 0, eval_pending=True)
            raise StopRequested(stop.signal_name, path) from None

    def evaluate(self, epoch: int) -> dict[str, Any]:
        model = unwrap_model(self.model)
        with parallel.full_parameters(model):
            stats = self.task.validate(model, epoch)
        if self.ema is not None:
            ema = self.ema.module
            stats.update(ema_statistics(self.task, lambda: self.task.validate(ema, epoch)))
        for key in [name for minimum in self.task.tracked_minima for name in (minimum, f"ema_{minimum}")]:
            if key in stats:
                self.best[key] = min(self.best.get(key, math.inf), stats[key])
                stats[f"min_{key}"] = self.best[key]
        self._log({"_type": "val_epoch", "epoch": f"{epoch + 1}/{self.cfg.SOLVER.MAX_EPOCH}", **stats})
        self.tensorboard.add_scalars({f"Val/{k}": v for k, v in stats.items() if isinstance(v, (int, float))},
                                     epoch + 1)
        return stats

    def _log(self, stats: dict[str, Any]) -> None:
        if self.ctx.is_main:
            log_json_stats(stats, self.cfg.OUTPUT_DIR)
