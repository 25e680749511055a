"""An exponential moving average (EMA) of the model's weights, updated after every optimiser step (MODEL_EMA.*).

Update t (t = 0, 1, ...) moves every floating-point parameter and buffer (BatchNorm statistics included) to
`decay_t * ema + (1 - decay_t) * weight`, with decay_t = DECAY * min(1, t / max(WARMUP_STEPS, 1)): the first update
copies the weights, then the decay rises linearly to DECAY over WARMUP_STEPS updates, so the average soon forgets the
weights training started from instead of keeping them for about 1 / (1 - DECAY) steps. Integer buffers (BatchNorm's
batch count) are copied.

Not torch.optim.swa_utils.AveragedModel: its update reads its device-side update counter on the host twice per
step (`bool(self.n_averaged == 0)`, `self.n_averaged > 0`), a host-device synchronisation in every training step;
here the counter is a Python int and an update is one foreach lerp.

With DDP every rank holds the same EMA without communicating: the parameters are equal on every rank after each
step, and the first update copies them after DDP's initial broadcast. Checkpoints keep the average as a plain state
dict (`model_ema_state`, loadable like `model_state`) and the update count (`model_ema_updates`).
"""
from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

from hiera_video.config import ConfigError
from hiera_video.models.weights import EMA_STATE_KEY, load_pretrained, load_state_file
from hiera_video.tasks.base import Task

logger = logging.getLogger(__name__)

UPDATES_KEY = "model_ema_updates"
PREFIX = "ema_"  # of the statistics and files of evaluations of the EMA weights


class ModelEma:
    """An EMA copy of `model` (`module`, without gradients); `update(model)` after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if warmup_steps < 0:
            raise ValueError(f"EMA warmup steps must be >= 0, got {warmup_steps}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0

    def decay_at(self, update: int) -> float:
        """The decay of update number `update` (0-based)."""
        return self.decay * min(1.0, update / max(self.warmup_steps, 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average towards `model`'s current weights (the bare model, same structure as `module`)."""
        weight = 1.0 - self.decay_at(self.updates)
        averaged, current = [], []
        for mine, theirs in zip(_tensors(self.module), _tensors(model)):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                mine.copy_(theirs)
        if weight == 1.0:  # the first update
            for mine, theirs in zip(averaged, current):
                mine.copy_(theirs)
        else:
            torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint entries of the average."""
        return {EMA_STATE_KEY: self.module.state_dict(), UPDATES_KEY: self.updates}

    def from_checkpoint(self, state: Mapping[str, Any], source: str) -> None:
        """Restores the average from checkpoint entries; a checkpoint without them (`source` names it) restarts the
        average, which the next update sets to the weights."""
        if EMA_STATE_KEY not in state:
            logger.warning("%s holds no EMA weights (%s): the EMA restarts from the current weights", source,
                           EMA_STATE_KEY)
            self.updates = 0
            return
        self.module.load_state_dict(state[EMA_STATE_KEY])
        self.updates = int(state[UPDATES_KEY])


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return list(itertools.chain(model.parameters(), model.buffers()))


def build_model_ema(cfg: CfgNode, model: nn.Module) -> ModelEma | None:
    """The EMA of MODEL_EMA.* for `model`, or None when MODEL_EMA.ENABLE is off."""
    if not cfg.MODEL_EMA.ENABLE:
        return None
    if cfg.TRAIN.PARALLELISM == "fsdp":
        # The copy would hold sharded parameters that neither the evaluation nor the sharded checkpoint handles yet.
        raise ConfigError("MODEL_EMA.ENABLE True does not work with TRAIN.PARALLELISM fsdp yet: use ddp, or turn "
                          "the EMA off")
    return ModelEma(model, cfg.MODEL_EMA.DECAY, cfg.MODEL_EMA.WARMUP_STEPS)


def ema_statistics(task: Task, evaluate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs `evaluate` (an evaluation of the EMA weights) with the task writing its files under ema_ names; returns its
    statistics under ema_ keys."""
    with task.output_prefix(PREFIX):
        return {PREFIX + key: value for key, value in evaluate().items()}


def load_test_ema(cfg: CfgNode, task: Task, path: str, device: torch.device) -> nn.Module | None:
    """With MODEL_EMA.ENABLE, the task's model with the EMA weights of checkpoint `path` for the test; None when
    disabled or when the file holds none (warned)."""
    if not cfg.MODEL_EMA.ENABLE:
        return None
    state = load_state_file(path) if path else {}
    if EMA_STATE_KEY not in state:
        logger.warning("MODEL_EMA.ENABLE, but %s holds no EMA weights (%s): testing without them",
                       path or "there is no checkpoint", EMA_STATE_KEY)
        return None
    model = task.build_model().to(device)
    report = load_pretrained(model, state[EMA_STATE_KEY])
    logger.info("Testing the EMA weights of %s too: %s", path, report.summary())
    return model
