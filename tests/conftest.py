"""Shared pytest fixtures: deterministic torch settings, process groups, the official model's state-dict layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

# As the command-line tools do: importing the engine registers every task, dataset and allowed config value.
from hiera_video.engine import launch, runner  # noqa: F401
from hiera_video.utils.distributed import destroy_process_group

# One thread: tiny test models gain nothing from more, and stall badly when the cores are shared.
torch.set_num_threads(1)

SLURM_TESTS = Path(__file__).parent / "slurm"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/slurm needs the local Slurm cluster: mark it `slurm` (deselect with -m "not slurm")."""
    for item in items:
        if SLURM_TESTS in item.path.parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def single_process():
    """This process as a job of one process (no process group), on the CPU: what `run` gets from run_net.py."""
    ctx = launch.init_distributed(rank=0, world_size=1, use_cuda=False)
    yield ctx
    destroy_process_group()


@pytest.fixture
def single_process_group(tmp_path):
    """A one-process gloo group for a real DistributedDataParallel wrapper (reuses one that already exists)."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture
def official_keys_and_shapes():
    """(key, shape) pairs of an official `hiera.<name>` model's state dict, from the hiera-transformer package."""
    hiera_pkg = pytest.importorskip("hiera")

    def keys_and_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
        model = getattr(hiera_pkg, name)(pretrained=False)  # the official code calls .item(): no meta device
        return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]

    return keys_and_shapes
