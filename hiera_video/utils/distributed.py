"""This process's place in the job (DistContext), joining and leaving the process group, and the collectives.

Where the processes come from (torchrun, Slurm, local spawning) is hiera_video.engine.launch's business; it hands
a LaunchSpec to `init_process_group`. NCCL on CUDA, gloo on the CPU; every collective has a timeout, so a dead rank
fails the job instead of hanging it. Without a process group (world size 1) every collective is a local no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class LaunchSpec:
    """Where this process sits in the job, as found in the arguments or the environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    init_method: str | None  # None for a single process
    launcher: str  # "single", "arguments", "torchrun", "slurm" or "local" (submitit's local executor)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str | None  # "nccl", "gloo", or None when there is no process group (world size 1)
    launcher: str

    @property
    def is_main(self) -> bool:
        """True on global rank 0, the process that logs and writes shared files."""
        return self.rank == 0


_CONTEXT: DistContext | None = None


def current_context() -> DistContext | None:
    """The context of the process group this process joined, or None before `init_process_group`."""
    return _CONTEXT


def _select_device(use_cuda: bool, local_rank: int) -> torch.device:
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("use_cuda=True but torch sees no CUDA device (run on the CPU with NUM_GPUS 0)")
    count = torch.cuda.device_count()
    # One visible device means the launcher already gave each process its own GPU (CUDA_VISIBLE_DEVICES,
    # srun --gpus-per-task); otherwise local rank i takes device i.
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise RuntimeError(f"local rank {local_rank} has no CUDA device: only {count} are visible")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _check_launch(spec: LaunchSpec) -> None:
    if not 0 <= spec.rank < spec.world_size:
        raise ValueError(f"rank {spec.rank} is outside world size {spec.world_size} (launcher: {spec.launcher})")
    if spec.world_size > 1 and spec.init_method == "env://":
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise ValueError(f"init_method env:// needs {' and '.join(missing)} in the environment "
                             f"(rank {spec.rank} of {spec.world_size}); or pass init_method='tcp://host:port'")


def init_process_group(spec: LaunchSpec, use_cuda: bool | None = None, timeout_minutes: float = 30) -> DistContext:
    """Joins the process group `spec` describes (none for world size 1), picks the device; returns the context.

    `use_cuda=None` means "if CUDA is available". Fails when this process already joined as another rank.
    """
    global _CONTEXT
    if _CONTEXT is not None:
        if (spec.rank, spec.world_size) != (_CONTEXT.rank, _CONTEXT.world_size):
            raise ValueError(f"already initialised as rank {_CONTEXT.rank} of {_CONTEXT.world_size}, asked for "
                             f"rank {spec.rank} of {spec.world_size}: call destroy_process_group() first")
        return _CONTEXT
    _check_launch(spec)
    use_cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    device = _select_device(use_cuda, spec.local_rank)
    backend = None
    if spec.world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, init_method=spec.init_method, rank=spec.rank, world_size=spec.world_size,
                                timeout=timedelta(minutes=timeout_minutes))
    _CONTEXT = DistContext(rank=spec.rank, world_size=spec.world_size, local_rank=spec.local_rank,
                           local_world_size=spec.local_world_size, device=device, backend=backend,
                           launcher=spec.launcher)
    return _CONTEXT


def destroy_process_group() -> None:
    """Leaves the process group (if any); init_process_group may be called again afterwards."""
    global _CONTEXT
    if _group_active():
        dist.destroy_process_group()
    _CONTEXT = None


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Waits for every rank (no-op for a single process)."""
    if _group_active():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over all ranks, as a new tensor on the input's device (integers are averaged as float64).

    The input is left untouched; every rank must call this with a tensor of the same shape.
    """
    result = tensor.detach().clone() if tensor.is_floating_point() else tensor.detach().double()
    if not _group_active():
        return result
    # The backend decides where tensors must live (CPU for gloo, this rank's GPU for NCCL).
    work = result.to(_CONTEXT.device if _CONTEXT is not None else torch.device("cpu"))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return (work / dist.get_world_size()).to(tensor.device)


def all_gather_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` stacked in rank order, [world size, *shape], on the input's device (every rank passes
    the same shape and dtype)."""
    if not _group_active():
        return tensor.detach().clone().unsqueeze(0)
    work = tensor.detach().to(_CONTEXT.device if _CONTEXT is not None else torch.device("cpu"))
    parts = [torch.empty_like(work) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, work)
    return torch.stack(parts).to(tensor.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's (picklable) `obj`, in rank order."""
    if not _group_active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's (picklable) `obj` in rank order on rank `dst`, None elsewhere: results that only rank `dst`
    writes out need no copy on the other ranks (at 64 GPUs, 64 copies of a test set's scores per rank)."""
    if not _group_active():
        return [obj]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s (picklable) `obj`, returned on every rank."""
    if not _group_active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (a collective: call it on all ranks)."""
    if not _group_active():
        return flag
    raised = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(raised, op=dist.ReduceOp.MAX)
    return bool(raised.item())
