"""What the trainer needs from a task. The trainer never branches on the task; tasks never run the loop."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn
from torch.utils.data import DataLoader

from hiera_video.data.build import build_eval_loader, build_train_loader
from hiera_video.data.loader import ResumableSampler
from hiera_video.models.build import build_model
from hiera_video.utils import distributed as du
from hiera_video.utils.amp import amp_context
from hiera_video.utils.distributed import DistContext
from hiera_video.utils.reports import check_bad_fraction

logger = logging.getLogger(__name__)


class EvaluationInterrupted(Exception):
    """An evaluation stopped early because a stop (Slurm's time-limit warning, preemption) was requested."""


class Task:
    """A learning problem: its model, its data, its loss on a batch, and its evaluations.

    `loss(model, batch)` returns the scalar loss and a dict of 0-dim tensor statistics for the log, both left on
    the device (the trainer reads them at log steps only, so a step never waits for the device); `validate` runs the
    per-epoch evaluation and `test` the final one, both returning statistics (errors in %, or mAP). The model is
    MODEL.ARCH as models.build_model makes it, unless a task builds another; evaluation loaders are built once per
    split and kept (`loader`). Evaluations iterate `evaluation_batches`, which polls `should_stop` (set by whoever
    owns the stop signals: a collective returning True on every rank once a stop was requested) and raises
    EvaluationInterrupted, and run the model under `autocast()`, the training autocast.
    """

    # json_stats keys of `validate` whose minimum over epochs is also logged (as min_<key>).
    tracked_minima: tuple[str, ...] = ()
    # Put before the names of the files evaluations write (see output_prefix).
    _file_prefix = ""

    def __init__(self, cfg: CfgNode, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self._loaders: dict[str, DataLoader] = {}
        self._named_bad: set[Any] = set()  # failed evaluation videos already named in the log
        self.should_stop: Callable[[], bool] = lambda: False

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def train_loader(self) -> tuple[DataLoader, ResumableSampler]:
        """This process's shuffled, resumable loader of the training split, and its sampler."""
        return build_train_loader(self.cfg, self.ctx)

    def loader(self, split: str) -> DataLoader:
        """This process's in-order loader of `split` ("val" or "test"), built on first use."""
        if split not in self._loaders:
            self._loaders[split] = build_eval_loader(self.cfg, self.ctx, split)
        return self._loaders[split]

    def evaluation_batches(self, loader: DataLoader) -> Iterator[Any]:
        """`loader`'s batches. Before each batch that every rank has (sharding without padding leaves some ranks a
        batch more), asks `should_stop()` and raises EvaluationInterrupted when it says so."""
        common = min(du.all_gather_object(len(loader)))
        batches = iter(loader)
        for index in range(len(loader)):
            if index < common and self.should_stop():
                raise EvaluationInterrupted(f"stopped after {index} of {len(loader)} evaluation batches")
            yield next(batches)

    def count_bad_videos(self, bad: set[Any], split: str) -> int:
        """How many videos of `split` failed to decode and were left out of the evaluation, over all ranks (`bad`:
        this rank's). Names each in the log once per run and raises past DATA.MAX_BAD_FRACTION of the split."""
        everyone = set().union(*du.all_gather_object(bad))
        if self.ctx.is_main:
            for entry in sorted(everyone - self._named_bad, key=str):
                logger.warning("A %s video failed to decode and is left out: %s", split, entry)
        self._named_bad |= everyone
        check_bad_fraction(len(everyone), len(self.loader(split).dataset), self.cfg.DATA.MAX_BAD_FRACTION,
                           f"videos of the {split} split failed to decode (the warnings above name them)")
        return len(everyone)

    @contextlib.contextmanager
    def output_prefix(self, prefix: str) -> Iterator[None]:
        """Evaluations inside this context write their files (predictions, scores, detections) as `prefix` + name,
        beside the unprefixed ones: for evaluations of other weights of the same model (the EMA's)."""
        previous, self._file_prefix = self._file_prefix, prefix
        try:
            yield
        finally:
            self._file_prefix = previous

    def output_path(self, name: str) -> str:
        """Where an evaluation writes file `name` (relative to OUTPUT_DIR, or absolute), with the current prefix."""
        folder, base = os.path.split(name)
        return os.path.join(self.cfg.OUTPUT_DIR, folder, self._file_prefix + base)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The training autocast (TRAIN.MIXED_PRECISION on CUDA), for evaluation forward passes."""
        return amp_context(self.cfg, self.ctx.device)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def test(self, model: nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def model_input_shape(self) -> tuple[int, ...]:
        """Shape of one input clip [C,T,H,W], for complexity counts."""
        size = self.cfg.DATA.TRAIN_CROP_SIZE
        return (3, self.cfg.DATA.NUM_FRAMES, size, size)
