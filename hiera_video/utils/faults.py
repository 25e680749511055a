"""Fault injection for the tests of failure paths, read from `HIERA_VIDEO_FAULT` (here only):

- `raise:<rank>`: what a GPU cluster does when one rank fails, on the CPU. That rank raises RuntimeError when
  training starts, while every other rank blocks there for the collective timeout, as ranks waiting for it in an
  NCCL collective do: a gloo peer would notice the failed rank's closed connection by itself, NCCL does not.
  Whatever ends the job early (the local launcher, torchrun, srun --kill-on-bad-exit) must end the blocked ranks too.
- `hold:<n>`: a job still working when its time runs out, at a known place, so that a test's signal or requeue
  lands mid-run however fast the tiny run is. Training: after iteration <n> (counted from 1 over the whole run)
  every rank waits for a stop signal; the stop then saves and ends the run as usual. Feature extraction: after its
  <n>-th video (counting those done by earlier runs) a process waits until a signal handler ends it. A resumed run
  is past <n> and never waits again.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

logger = logging.getLogger(__name__)

FAULT_ENV = "HIERA_VIDEO_FAULT"


def _fault() -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kind, _, number = spec.partition(":")
    if kind not in ("raise", "hold") or not number.isdigit():
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected raise:<rank> or hold:<iteration>")
    return kind, int(number)


def inject_fault(rank: int, timeout_s: float) -> None:
    """`raise:<rank>`: raises on that rank and blocks the others for `timeout_s`; nothing otherwise."""
    fault = _fault()
    if fault is None or fault[0] != "raise":
        return
    spec, failing = os.environ[FAULT_ENV], fault[1]
    if rank == failing:
        raise RuntimeError(f"Fault injected on rank {rank} ({FAULT_ENV}={spec}) at unix time {time.time():.2f}")
    time.sleep(timeout_s)
    raise TimeoutError(f"rank {rank} waited {timeout_s:.0f} s for rank {failing} ({FAULT_ENV}={spec})")


def hold_after(count: int, what: str, timeout_s: float, stopped: Callable[[], bool] = lambda: False) -> None:
    """`hold:<count>`: after the `count`-th `what` (an iteration, a video), polls `stopped` until it is true (in
    training a collective, which every rank calls) or a signal handler ends the process, for at most `timeout_s`;
    nothing otherwise."""
    if _fault() != ("hold", count):
        return
    logger.warning("Holding after %s %d until a stop signal (%s=%s)", what, count, FAULT_ENV, os.environ[FAULT_ENV])
    deadline = time.monotonic() + timeout_s
    while not stopped():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no stop signal within {timeout_s:.0f} s of {what} {count} ({FAULT_ENV})")
        time.sleep(0.1)
