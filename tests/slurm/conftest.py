"""A real one-node Slurm cluster for the tests in this folder (all marked `slurm`: select them with -m slurm).

The session fixture `slurm_cluster` runs start_local_slurm.sh (as root: installs Slurm if needed, starts it).
It skips only when we are not root and Slurm is not installed; with CI=true any failure to get a cluster fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START_SCRIPT = HERE / "start_local_slurm.sh"
PARTITION = "debug"


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    partition: str
    node: str
    cpus: int
    memory_mb: int


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the local Slurm cluster of tests/slurm/start_local_slurm.sh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slurm)


def _running_cluster() -> SlurmCluster | None:
    """The partition's node as sinfo reports it, if it can run jobs now."""
    try:
        out = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%N %c %m %T"], capture_output=True, text=True,
                             timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if len(out) < 4 or out[3] not in ("idle", "mixed", "allocated", "completing"):
        return None
    return SlurmCluster(partition=PARTITION, node=out[0], cpus=int(out[1]), memory_mb=int(out[2]))


def _start_cluster() -> str:
    """Runs the start script; returns its output (a log file, not a pipe: the daemons it starts outlive it)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(["bash", str(START_SCRIPT)], stdout=log, stderr=subprocess.STDOUT, timeout=900)
        log.seek(0)
        output = log.read()
    if proc.returncode != 0:
        pytest.fail(f"{START_SCRIPT} failed with exit code {proc.returncode}:\n{output}", pytrace=False)
    return output


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A running one-node cluster with partition `debug`, started (and if needed installed) on first use."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    output = ""
    if os.geteuid() == 0:
        output = _start_cluster()
    elif shutil.which("sbatch") is None:
        reason = f"Slurm is not installed and installing it needs root: run {START_SCRIPT} as root"
        if in_ci:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    cluster = _running_cluster()
    if cluster is None:
        pytest.fail(f"no usable node in Slurm partition {PARTITION!r} (start it as root with {START_SCRIPT})\n"
                    f"{output}", pytrace=False)
    return cluster


@pytest.fixture
def cancel_at_exit():
    """Collects job ids; whatever is still queued or running when the test ends is cancelled."""
    job_ids: list[str] = []
    yield job_ids
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)
