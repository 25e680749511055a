"""tools/submit.py ... extract-features on the local Slurm cluster: 2 tasks share the videos and write what one
process writes; the time-limit signal mid-extraction requeues the job, whose rerun skips the videos done."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hiera_video.cli.extract_features import main as extract_main
from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.checkpoint import save_checkpoint
from hiera_video.models.build import build_model
from hiera_video.utils.faults import FAULT_ENV
from tests.slurm.jobs import slurm_logs, wait_for_end, wait_until

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "Demo" / "HIERA_DEMO.yaml"
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_ID", "SLURM_PROCID", "SUBMITIT_EXECUTOR")


@pytest.fixture(scope="module")
def extraction(tmp_path_factory) -> tuple[list[str], list[str]]:
    """Demo videos (10, in train/ val/ test/), a checkpoint of the demo model, and the extraction's arguments
    (0.4-second windows, so that every video has a few) without --output; plus the videos."""
    root = tmp_path_factory.mktemp("slurm_features")
    data = str(root / "motion")
    write_demo_dataset(data, num_classes=2, train_per_class=2, val_per_class=1, test_per_class=2, num_frames=24,
                       size=32)
    opts = ["DATA.PATH_TO_DATA_DIR", data, "DATA.PATH_PREFIX", data, "DATA_LOADER.NUM_WORKERS", "1",
            "TEST.NUM_ENSEMBLE_VIEWS", "1", "OUTPUT_DIR", str(root / "run")]
    torch.manual_seed(0)
    weights = str(root / "weights.pyth")
    save_checkpoint(weights, {"model_state": build_model(load_config(str(DEMO), opts)).state_dict()})
    videos = sorted(os.path.relpath(os.path.join(folder, name), data) for folder, _, names in os.walk(data)
                    for name in names if name.endswith(".mp4"))
    return ["--cfg", str(DEMO), "--weights", weights, "--input", data, "--window", "0.4", *opts], videos


@pytest.fixture(scope="module")
def single_process(extraction, tmp_path_factory) -> Path:
    """The outputs of the same extraction by one process, here."""
    out = tmp_path_factory.mktemp("single")
    with pytest.MonkeyPatch.context() as env:
        for name in LAUNCH_VARIABLES:
            env.delenv(name, raising=False)
        assert extract_main([*extraction[0], "--output", str(out)]) == 0
    return out


def submit_extraction(job_dir: Path, out: Path, args: list[str], cluster, env: dict[str, str] | None = None) -> str:
    """tools/submit.py for 2 CPU tasks extracting into `out` (the job gets this environment plus `env`); returns
    the job id."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "submit.py"), "--ngpus", "0", "--tasks-per-node", "2",
         "--cpus-per-task", "1", "--mem", "2", "--partition", cluster.partition, "--timeout", "10", "--job-dir",
         str(job_dir), "extract-features", *args, "--output", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    assert f"Features, index.csv and failed.csv: {out}" in done.stdout
    match = re.search(r"Submitted job (\d+): 1 node\(s\) x 2 task\(s\)", done.stdout)
    assert match, done.stdout
    return match.group(1)


def features(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.load(p) for p in sorted(out.rglob("*.npy")) if ".index" not in p.parts}


def index_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "index.csv") as f:
        return list(csv.DictReader(f))


def assert_same_outputs(out: Path, reference: Path, videos: list[str]) -> None:
    got, expected = features(out), features(reference)
    assert sorted(got) == sorted(expected) == sorted(v[:-4] + ".npy" for v in videos)
    for name in expected:  # the same batches as one process, up to a BLAS's rounding
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert index_rows(out) == index_rows(reference)
    assert [row["video"] for row in index_rows(out)] == videos


def task_logs(job_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((job_dir / "submitit").rglob("*.out")))


def all_logs(job_dir: Path) -> str:
    """Every task's stdout and stderr of the job."""
    return task_logs(job_dir) + "\n" + slurm_logs(job_dir)


def test_two_tasks_extract_what_one_process_extracts(extraction, single_process, tmp_path, slurm_cluster,
                                                     cancel_at_exit):
    args, videos = extraction
    job_dir, out = tmp_path / "job", tmp_path / "features"
    job_id = submit_extraction(job_dir, out, args, slurm_cluster)
    cancel_at_exit.append(job_id)
    fields = wait_for_end(job_id, 300)
    assert fields["JobState"] == "COMPLETED", slurm_logs(job_dir)[-5000:]
    logs = task_logs(job_dir)
    assert "process 0 of 2: 5 videos: 5 extracted, 0 already done, 0 failed" in logs, logs[-3000:]
    assert "process 1 of 2: 5 videos: 5 extracted, 0 already done, 0 failed" in logs, logs[-3000:]
    assert_same_outputs(out, single_process, videos)


def test_the_time_limit_signal_requeues_and_the_rerun_skips_the_videos_done(extraction, single_process, tmp_path,
                                                                           slurm_cluster, cancel_at_exit):
    args, videos = extraction
    job_dir, out = tmp_path / "job", tmp_path / "features"
    # Each task waits after its second video: the signal lands with both tasks mid-share, however fast they are.
    job_id = submit_extraction(job_dir, out, args, slurm_cluster, env={FAULT_ENV: "hold:2"})
    cancel_at_exit.append(job_id)
    wait_until(lambda: all_logs(job_dir).count("Holding after video 2") == 2, 240, "both tasks' second video")
    # What Slurm sends `--signal` seconds before the time limit, to every process of the job (--full).
    subprocess.run(["scancel", "--signal=USR2", "--full", job_id], check=True, timeout=30)
    fields = wait_for_end(job_id, 420)
    logs = all_logs(job_dir)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, logs[-5000:]
    # Each task that received the warning before the requeue's SIGTERM asked for the requeue; one request did it
    # (Restarts=1 above). The restarted tasks ran the command again.
    assert "Received SIGUSR2 (the time-limit warning) on task" in logs, logs[-5000:]
    assert re.search(rf"Requeueing job {job_id} \(requeue 1 of at most \d+\)", logs), logs[-5000:]
    assert f"Slurm restart 1 of job {job_id}" in logs, logs[-5000:]
    assert "DataLoader worker" not in logs
    for task in (0, 1):
        assert f"process {task} of 2: 5 videos: 3 extracted, 2 already done, 0 failed" in logs, logs[-3000:]
    assert_same_outputs(out, single_process, videos)
