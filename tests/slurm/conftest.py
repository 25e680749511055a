"""A private one-node Slurm cluster for the tests in this folder (all marked `slurm`: select them with -m slurm).

The cluster lives in $HIERA_VIDEO_SLURM_DIR (default ${XDG_CACHE_HOME:-~/.cache}/hiera_video/slurm-test) and is
left running for the next session. The session fixture `slurm_cluster` runs start_local_slurm.sh (as root:
installs Slurm if needed, starts the cluster or finds it up) and points SLURM_CONF at the cluster's slurm.conf for
the whole session, so every Slurm command the tests run, tools/submit.py and the jobs themselves use it. It skips
only when we are not root and Slurm is not installed; with CI=true any failure to get a cluster fails.

test_system_config_untouched.py, run last, checks that the system's Slurm and munge paths are as they were.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
START_SCRIPT = HERE / "start_local_slurm.sh"
UNTOUCHED_CHECK = HERE / "test_system_config_untouched.py"
PARTITION = "debug"

# System paths the test cluster must leave alone. Config is compared by content; the state, spool and log dirs
# only by listing, since a system cluster running beside ours keeps rewriting its own state files and logs.
SYSTEM_CONFIG_GLOBS = ("/etc/slurm*", "/etc/munge", "/run/slurm*", "/run/munge")
SYSTEM_STATE_GLOBS = ("/var/spool/slurm*", "/var/lib/slurm*", "/var/log/slurm*")


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    conf: Path
    partition: str
    node: str
    cpus: int
    memory_mb: int


def slurm_dir() -> Path:
    """The cluster's private directory; start_local_slurm.sh has the same default."""
    configured = os.environ.get("HIERA_VIDEO_SLURM_DIR")
    if configured:
        return Path(configured).resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "hiera_video" / "slurm-test"


def _describe(path: str, with_content: bool) -> str:
    """Type, mode and owner of a path; plus a symlink's target, or a regular file's sha256 if with_content."""
    st = os.lstat(path)
    entry = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
    if stat.S_ISLNK(st.st_mode):
        return f"{entry} -> {os.readlink(path)}"
    if with_content and stat.S_ISREG(st.st_mode):
        try:
            return f"{entry} sha256={hashlib.sha256(Path(path).read_bytes()).hexdigest()}"
        except PermissionError:
            return f"{entry} unreadable"
    return entry


def snapshot_system_paths() -> dict[str, str]:
    """Every file and directory under the system's Slurm and munge paths, as `_describe` sees it."""
    snapshot = {}
    for patterns, with_content in ((SYSTEM_CONFIG_GLOBS, True), (SYSTEM_STATE_GLOBS, False)):
        for top in sorted(p for pattern in patterns for p in glob(pattern)):
            paths = [top] + [os.path.join(root, name) for root, dirs, files in os.walk(top) for name in dirs + files]
            for path in paths:
                try:
                    snapshot[path] = _describe(path, with_content)
                except FileNotFoundError:  # removed since the walk listed it; absent, then
                    pass
    return snapshot


@dataclass(frozen=True)
class SystemPaths:
    """The system's Slurm and munge paths as they were before the test cluster started."""

    before: dict[str, str]

    def changes(self) -> list[str]:
        """What differs now, one line per path."""
        after = snapshot_system_paths()
        return [f"{path}: {self.before.get(path, 'absent')} -> {after.get(path, 'absent')}"
                for path in sorted(self.before.keys() | after.keys()) if self.before.get(path) != after.get(path)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the local Slurm cluster of tests/slurm/start_local_slurm.sh")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slurm)
    # The check of the system's paths runs after every other test of the session (a stable sort keeps the rest).
    items.sort(key=lambda item: item.path == UNTOUCHED_CHECK)


def _running_cluster(conf: Path) -> SlurmCluster | None:
    """The partition's node as sinfo reports it (with SLURM_CONF set), if it can run jobs now."""
    if not conf.is_file():
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%N %c %m %T"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if len(out) < 4 or out[3] not in ("idle", "mixed", "allocated", "completing"):
        return None
    return SlurmCluster(conf=conf, partition=PARTITION, node=out[0], cpus=int(out[1]), memory_mb=int(out[2]))


def _run_start_script(*args: str) -> str:
    """Runs the start script on our directory; returns its output (a log file, not a pipe: the daemons it starts
    outlive it)."""
    env = {**os.environ, "HIERA_VIDEO_SLURM_DIR": str(slurm_dir())}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(["bash", str(START_SCRIPT), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                              timeout=900, check=False)
        log.seek(0)
        output = log.read()
    if proc.returncode != 0:
        pytest.fail(f"{START_SCRIPT} {' '.join(args)} failed with exit code {proc.returncode}:\n{output}",
                    pytrace=False)
    return output


@pytest.fixture(scope="session")
def system_paths() -> SystemPaths:
    """The system's Slurm and munge paths once Slurm is installed (as root: installs it), before our cluster
    starts."""
    if os.geteuid() == 0:
        _run_start_script("--install-only")
    elif shutil.which("sbatch") is None:
        reason = f"Slurm is not installed and installing it needs root: run {START_SCRIPT} as root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return SystemPaths(before=snapshot_system_paths())


@pytest.fixture(scope="session")
def slurm_cluster(system_paths: SystemPaths) -> Iterator[SlurmCluster]:
    """The running private cluster with partition `debug` (started on first use, when root), with SLURM_CONF set
    to its slurm.conf for the rest of the session."""
    conf = slurm_dir() / "slurm.conf"
    output = _run_start_script() if os.geteuid() == 0 else ""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SLURM_CONF", str(conf))
        cluster = _running_cluster(conf)
        if cluster is None:
            pytest.fail(f"no usable node in partition {PARTITION!r} of the cluster of {conf} (start it as root with "
                        f"HIERA_VIDEO_SLURM_DIR={conf.parent} {START_SCRIPT})\n{output}", pytrace=False)
        yield cluster


@pytest.fixture
def cancel_at_exit(slurm_cluster: SlurmCluster) -> Iterator[list[str]]:
    """Collects job ids; whatever is still queued or running when the test ends is cancelled."""
    job_ids: list[str] = []
    yield job_ids
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)
