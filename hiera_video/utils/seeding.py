"""Seeds derived from a base seed: one recipe for per-process seeds and per-sample seeds, and seeding the RNGs."""
from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*numbers: int) -> int:
    """A 63-bit seed that is a pure function of `numbers` (non-negative integers).

    numpy's SeedSequence hashes them, so nearby inputs give unrelated seeds (base_seed + rank would make rank 1 of
    seed 0 replay rank 0 of seed 1).
    """
    state = np.random.SeedSequence(list(numbers)).generate_state(2, np.uint32)
    return int(state.view(np.uint64)[0] >> np.uint64(1))


def seed_for(rank: int, base_seed: int, worker_id: int = 0) -> int:
    """The seed of one process: different for each (base_seed, rank, worker_id).

    worker_id tells apart the processes of one rank: 0 for the training process, k + 1 for DataLoader worker k.
    """
    for name, value in (("rank", rank), ("base_seed", base_seed), ("worker_id", worker_id)):
        if value < 0:
            raise ValueError(f"seed_for needs non-negative integers, got {name}={value}")
    return derive_seed(base_seed, rank, worker_id)


def seed_everything(seed: int) -> None:
    """Seeds Python's `random`, NumPy's global generator and torch (CPU and CUDA) from one 63-bit seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
