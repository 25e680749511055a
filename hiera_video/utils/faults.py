"""Fault injection for the tests of failure paths: what a GPU cluster does when one rank fails, on the CPU.

`HIERA_VIDEO_FAULT=raise:<rank>` (read here only) makes that rank raise RuntimeError when training starts, while
every other rank blocks there for the collective timeout, as ranks waiting for it in an NCCL collective do: a gloo
peer would notice the failed rank's closed connection by itself, NCCL does not. Whatever ends the job early (the
local launcher, torchrun, srun --kill-on-bad-exit) must end the blocked ranks too.
"""
from __future__ import annotations

import os
import time

FAULT_ENV = "HIERA_VIDEO_FAULT"


def inject_fault(rank: int, timeout_s: float) -> None:
    """Raises on the rank `HIERA_VIDEO_FAULT` names and blocks the others for `timeout_s`; nothing without it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, _, failing = spec.partition(":")
    if kind != "raise" or not failing.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected raise:<rank>")
    if rank == int(failing):
        raise RuntimeError(f"Fault injected on rank {rank} ({FAULT_ENV}={spec}) at unix time {time.time():.2f}")
    time.sleep(timeout_s)
    raise TimeoutError(f"rank {rank} waited {timeout_s:.0f} s for rank {failing} ({FAULT_ENV}={spec})")
