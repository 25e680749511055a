"""How the training processes share the model (TRAIN.PARALLELISM): DistributedDataParallel or FSDP2.

With "ddp" every process holds the whole model and optimizer (the trainer wraps the model in
DistributedDataParallel). With "fsdp" (several processes) `shard_model` applies torch.distributed.fsdp.fully_shard
(FSDP2) to every HieraBlock (the encoder's and the MAE decoder's), then to the whole model: each process keeps
1/world-size of every parameter, gradient and optimizer state as DTensor shards, and gathers a block's weights only
while it runs. The rest of this module lets the trainer treat both alike: gradient synchronisation with
accumulation, evaluation, and the model and optimizer state in and out of checkpoints.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from fvcore.common.config import CfgNode
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from hiera_video.config import register_choices
from hiera_video.models.hiera import HieraBlock
from hiera_video.utils.dcp_folders import is_keyed_by_name, optimizer_state_by_name
from hiera_video.utils.distributed import DistContext
from hiera_video.utils.wrappers import unwrap_model

logger = logging.getLogger(__name__)

PARALLELISMS = ("ddp", "fsdp")
register_choices("TRAIN.PARALLELISM", PARALLELISMS)


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` was sharded by `shard_model` (FSDP2)."""
    return isinstance(model, FSDPModule)


def shard_model(model: nn.Module, cfg: CfgNode, ctx: DistContext) -> nn.Module:
    """`model` sharded over the processes with FSDP2 when TRAIN.PARALLELISM is fsdp and there are several of them
    (in place; the same object is returned); otherwise `model` unchanged. Build the optimizer afterwards: it must
    hold the sharded parameters.

    Every rank first takes rank 0's weights (ranks draw different random numbers, so their initialisations differ;
    DistributedDataParallel does the same when it wraps). On CUDA with TRAIN.MIXED_PRECISION, FSDP computes in
    TRAIN.AMP_DTYPE and reduces gradients in float32 (its MixedPrecisionPolicy); the stored shards stay float32.
    """
    if cfg.TRAIN.PARALLELISM != "fsdp":
        return model
    if ctx.world_size == 1:
        logger.info("TRAIN.PARALLELISM fsdp with a single process: nothing to shard, the model stays whole")
        return model
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            dist.broadcast(tensor, src=0)
        # FSDP2 shards contiguous parameters only; the channels-last stem kernel (a speed layout, PatchEmbed in
        # models/hiera.py) goes back to the default layout.
        for param in model.parameters():
            if not param.is_contiguous():
                param.data = param.data.contiguous()
    policy = MixedPrecisionPolicy()
    if ctx.device.type == "cuda" and cfg.TRAIN.MIXED_PRECISION:
        policy = MixedPrecisionPolicy(param_dtype=getattr(torch, cfg.TRAIN.AMP_DTYPE), reduce_dtype=torch.float32)
    for block in [m for m in model.modules() if isinstance(m, HieraBlock)]:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Whether the next backward pass of a sharded model reduce-scatters its gradients: off for all but the last
    micro-batch of an accumulated step (FSDP reads it during backward, so it is a setting rather than a context
    like DistributedDataParallel's no_sync). Nothing for other models."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)


def whole_tensor(value: torch.Tensor) -> torch.Tensor:
    """`value` as a plain tensor: a DTensor (a sharded model's gradient norm) is assembled on every rank."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def _broadcast_buffers(model: nn.Module) -> None:
    # Buffers (a linear probe's BatchNorm statistics) are not sharded: every rank updates its own copy. Rank 0's
    # are the model's, as with DistributedDataParallel, which broadcasts them before every forward pass.
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


@contextlib.contextmanager
def full_parameters(model: nn.Module) -> Iterator[None]:
    """Evaluation of a sharded model: every rank gathers all weights once (a collective) and keeps them until the
    end, so forward passes need no collective and ranks may run different numbers of batches, which evaluation
    sharding leaves them (memory as with DistributedDataParallel). Nothing for other models."""
    if not isinstance(model, FSDPModule):
        yield
        return
    _broadcast_buffers(model)
    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for module in sharded:
        module.unshard()
    model.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for module in sharded:
            module.reshard()
        # fully_shard's defaults: the blocks free their gathered weights after forward, the root keeps its own.
        model.set_reshard_after_forward(True)
        model.set_reshard_after_forward(False, recurse=False)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The model and optimizer state for a checkpoint (all ranks call it).

    Whole tensors and the optimizer's own numbering for other models; for a sharded model each rank's DTensor
    shards, the optimizer state keyed by parameter name (torch.distributed.checkpoint.state_dict), and None while
    the optimizer has taken no step (asking for it then would initialise it with a step of zero gradients).
    """
    if not is_sharded(model):
        return unwrap_model(model).state_dict(), optimizer.state_dict()
    _broadcast_buffers(model)
    optimizer_state = get_optimizer_state_dict(model, optimizer) if optimizer.state else None
    return get_model_state_dict(model), optimizer_state


def holds_dtensors(value: Any) -> bool:
    """Whether `value` is a DTensor (a shard) or a nested mapping holding one."""
    if isinstance(value, DTensor):
        return True
    return isinstance(value, Mapping) and any(holds_dtensors(v) for v in value.values())


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Loads a model state: whole tensors (any checkpoint file) into any model, or a sharded model's own DTensor
    shards (`training_state`, read back from a sharded checkpoint) into it."""
    if not is_sharded(model):
        unwrap_model(model).load_state_dict(state, strict=strict)
        return
    whole = not holds_dtensors(state)
    # A copy: with whole tensors torch fills in the keys a non-strict load lacks.
    set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=whole, strict=strict))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: Mapping[str, Any] | None) -> None:
    """Loads an optimizer state as `load_model_state` does the model's (None: the checkpoint was written before the
    first step; the optimizer stays fresh)."""
    if state is None:
        return
    if not is_sharded(model):
        optimizer.load_state_dict(dict(state))
        return
    whole = not holds_dtensors(state["state"])
    if not is_keyed_by_name(state):
        names = {id(param): name for name, param in model.named_parameters()}
        state = optimizer_state_by_name(state, [names[id(p)] for g in optimizer.param_groups for p in g["params"]])
    set_optimizer_state_dict(model, optimizer, dict(state), options=StateDictOptions(full_state_dict=whole))
