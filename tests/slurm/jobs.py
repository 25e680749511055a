"""Watching jobs of the local Slurm cluster from a test: their state, and waiting for a condition."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (we run no accounting storage, so sacct has nothing to say)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    return dict(token.split("=", 1) for token in out.stdout.split() if "=" in token)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Polls `condition` until it returns something truthy; fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)
    return value


def wait_for_end(job_id: str, timeout_s: float) -> dict[str, str]:
    """The job's fields once it has ended."""
    return wait_until(lambda: (f := job_fields(job_id)).get("JobState") in ENDED_STATES and f, timeout_s,
                      f"job {job_id} to end")


def slurm_logs(job_dir: Path) -> str:
    """Every task's stderr of every job submitted with `job_dir`."""
    return "\n".join(p.read_text(errors="replace") for p in sorted((job_dir / "submitit").rglob("*.err")))
