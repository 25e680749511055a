"""Training options that only CUDA supports or gains from, decided in one place from the device.

On CUDA: the fused AdamW kernel (one launch for all parameters instead of several per parameter); DDP with
`gradient_as_bucket_view` (gradients live in the all-reduce buckets: no copy and one gradient-sized buffer less) and
`static_graph` (DDP records the graph once instead of tracking it every step). On the CPU none of them: fused
AdamW would run other kernels than the tested ones, and the DDP options gain nothing for gloo.

`static_graph` is left off with gradient accumulation: torch (2.14 included) fails on the first backward under
`no_sync()` with static_graph ("expect_autograd_hooks_ INTERNAL ASSERT FAILED", pytorch/pytorch#143580), and
TRAIN.ACCUM_ITER > 1 uses no_sync. The graph is otherwise static: every parameter that trains is used in every step
(drop path scales rows instead of skipping blocks; frozen parameters are not DDP's), and activation checkpointing
is non-reentrant.

These CUDA paths are not exercised by the tests (the project's machines have no GPU): the tests check the decisions
with torch.device("cuda") objects, and that DDP with the CUDA options trains like plain DDP on gloo.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class CudaOptions:
    """Whether AdamW runs fused, and the keyword arguments of DistributedDataParallel."""

    fused_adamw: bool
    ddp: dict[str, Any]


def cuda_options(device: torch.device, accum_iter: int) -> CudaOptions:
    """The options for training on `device` with `accum_iter` micro-batches per optimiser step."""
    on_cuda = device.type == "cuda"
    ddp: dict[str, Any] = {"device_ids": [device.index] if on_cuda else None, "find_unused_parameters": False}
    if on_cuda:
        ddp.update(gradient_as_bucket_view=True, static_graph=accum_iter == 1)
    return CudaOptions(fused_adamw=on_cuda, ddp=ddp)
