"""Shared pytest fixtures: small real videos and deterministic torch settings."""

import pytest
import torch

# One thread: tiny test models gain nothing from more, and stall badly when the cores are shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
