"""CUDA-only training options (fused AdamW, DDP gradient_as_bucket_view and static_graph): decided from the device.

No GPU here: the decisions are checked with torch.device("cuda") objects, the optimiser's `fused` flag with CPU's
own fused AdamW kernel, and the DDP options by training on gloo with them.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from hiera_video.engine import launch
from hiera_video.engine.cuda_options import cuda_options
from hiera_video.engine.optim import build_optimizer
from hiera_video.models import create_model
from hiera_video.utils import distributed as du

TINY = dict(input_size=(4, 64, 64), embed_dim=8, num_heads=2, stages=(1, 2, 2), q_pool=2,
            mask_unit_attn=(True, True, False), num_classes=3, drop_path_rate=0.2)


def test_on_cuda_everything_is_on_and_static_graph_only_without_accumulation():
    options = cuda_options(torch.device("cuda", 3), accum_iter=1)
    assert options.fused_adamw is True
    assert options.ddp == {"device_ids": [3], "find_unused_parameters": False, "gradient_as_bucket_view": True,
                           "static_graph": True}
    # ACCUM_ITER > 1 steps under DDP's no_sync, which static_graph does not support.
    accumulating = cuda_options(torch.device("cuda", 0), accum_iter=4)
    assert accumulating.ddp["static_graph"] is False and accumulating.ddp["gradient_as_bucket_view"] is True


def test_on_the_cpu_everything_is_off():
    options = cuda_options(torch.device("cpu"), accum_iter=1)
    assert options.fused_adamw is False
    assert options.ddp == {"device_ids": None, "find_unused_parameters": False}


def test_fused_adamw_steps_like_the_default_one():
    """`fused=True` reaches AdamW (checked on the CPU's fused kernel); False keeps torch's default choice."""
    models = [create_model("hiera_base_16x224", **TINY) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(model, "adamw", 1e-3, 0.05, layer_decay=0.9, fused=fused)
                  for model, fused in zip(models, (False, True))]
    assert optimizers[0].defaults["fused"] is None and optimizers[1].defaults["fused"] is True
    clip = torch.randn(2, 3, 4, 64, 64)
    for _ in range(2):
        for model, optimizer in zip(models, optimizers):
            torch.manual_seed(0)
            F.cross_entropy(model(clip), torch.tensor([0, 2])).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for (name, default), fused in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(fused, default, rtol=1e-5, atol=1e-6, msg=name)


def _train_with_ddp_options(ctx: du.DistContext, options_per_accum: dict[int, dict]) -> dict[int, dict]:
    """Per ACCUM_ITER: the weights after three optimiser steps of a tiny Hiera (activation checkpointing, drop path)
    under DDP with that ACCUM_ITER's options (no_sync on all micro-batches but the last)."""
    weights = {}
    for accum_iter, options in options_per_accum.items():
        torch.manual_seed(0)
        model = create_model("hiera_base_16x224", **TINY, act_checkpoint=True)
        ddp = DistributedDataParallel(model, find_unused_parameters=False, **options)
        optimizer = build_optimizer(model, "adamw", 1e-2, 0.05)
        data = torch.Generator().manual_seed(ctx.rank)
        for _ in range(3):
            for micro in range(accum_iter):
                sync = ddp.no_sync() if micro < accum_iter - 1 else contextlib.nullcontext()
                with sync:
                    clip, label = torch.randn(1, 3, 4, 64, 64, generator=data), torch.randint(3, (1,), generator=data)
                    (F.cross_entropy(ddp(clip), label) / accum_iter).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        weights[accum_iter] = {name: p.detach().clone() for name, p in model.named_parameters()}
    return weights


@pytest.mark.slow
def test_the_cuda_ddp_options_train_like_plain_ddp():
    """The DDP options chosen for CUDA, run on gloo: the same weights as plain DDP, with and without accumulation."""
    chosen = {}
    for accum_iter in (1, 2):
        options = cuda_options(torch.device("cuda", 0), accum_iter).ddp
        chosen[accum_iter] = {k: v for k, v in options.items() if k not in ("device_ids", "find_unused_parameters")}
    assert chosen == {1: {"gradient_as_bucket_view": True, "static_graph": True},
                      2: {"gradient_as_bucket_view": True, "static_graph": False}}
    plain = launch.launch_local(_train_with_ddp_options, 2, args=({1: {}, 2: {}},), timeout_minutes=5)
    tuned = launch.launch_local(_train_with_ddp_options, 2, args=(chosen,), timeout_minutes=5)
    torch.manual_seed(0)
    initial = create_model("hiera_base_16x224", **TINY).state_dict()
    for accum_iter in (1, 2):
        for name, value in plain[0][accum_iter].items():
            torch.testing.assert_close(tuned[0][accum_iter][name], value, rtol=1e-5, atol=1e-6, msg=name)
            assert torch.equal(tuned[1][accum_iter][name], tuned[0][accum_iter][name]), name  # ranks agree
        assert not torch.equal(plain[0][accum_iter]["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"])
