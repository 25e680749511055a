"""Shared pytest fixtures: small real videos and deterministic torch settings."""

import pytest
import torch
import torch.distributed as dist

# One thread: tiny test models gain nothing from more, and stall badly when the cores are shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def single_process_group(tmp_path):
    """A one-process gloo group for a real DistributedDataParallel wrapper (reuses one that already exists)."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()
