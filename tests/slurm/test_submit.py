"""tools/submit.py on the local Slurm cluster: a 2-task gloo run, a requeue mid-epoch that resumes to the same
weights as an uninterrupted run, and the time-limit signal's save-and-requeue path."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.checkpoint import find_latest_checkpoint, list_checkpoints, load_checkpoint
from hiera_video.engine.logging import read_json_stats
from tests.slurm.test_local_slurm import ENDED_STATES, job_fields, wait_until

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "Demo" / "HIERA_DEMO.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("slurm_data") / "motion")
    write_demo_dataset(root, num_classes=2, train_per_class=8, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    return root


def tiny_opts(dataset: str, *extra: str) -> list[str]:
    return ["DATA.PATH_TO_DATA_DIR", dataset, "DATA.PATH_PREFIX", dataset, "MODEL.NUM_CLASSES", "2",
            "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE",
            "2", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1", "SOLVER.WARMUP_EPOCHS", "1.0",
            "TENSORBOARD.ENABLE", "False", *extra]


def submit(job_dir: Path, opts: list[str], cluster) -> str:
    """Runs tools/submit.py for 2 CPU tasks; returns the job id it prints."""
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "submit.py"), "--cfg", str(DEMO), "--ngpus", "0", "--tasks-per-node",
         "2", "--cpus-per-task", "1", "--mem", "2", "--partition", cluster.partition, "--timeout", "10",
         "--job-dir", str(job_dir), *opts],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    match = re.search(r"Submitted job (\d+)", out.stdout)
    assert match, out.stdout
    assert str(job_dir) in out.stdout  # says where checkpoints and logs go
    return match.group(1)


def wait_for_end(job_id: str, timeout_s: float) -> dict[str, str]:
    return wait_until(lambda: (f := job_fields(job_id)).get("JobState") in ENDED_STATES and f, timeout_s,
                      f"job {job_id} to end")


def slurm_logs(job_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((job_dir / "submitit").rglob("*.err")))


def test_two_cpu_tasks_train_and_test_to_completion(dataset, tmp_path, slurm_cluster, cancel_at_exit):
    job_dir = tmp_path / "job"
    job_id = submit(job_dir, tiny_opts(dataset, "SOLVER.MAX_EPOCH", "2"), slurm_cluster)
    cancel_at_exit.append(job_id)
    fields = wait_for_end(job_id, 240)
    assert fields["JobState"] == "COMPLETED", slurm_logs(job_dir)
    stats = read_json_stats(str(job_dir / "json_stats.log"))
    epochs = [s for s in stats if s.get("_type") == "train_epoch"]
    assert [s["world_size"] for s in epochs] == [2, 2]
    assert stats[-1]["split"] == "test_final" and stats[-1]["num_videos"] == 4


def test_requeue_mid_epoch_resumes_to_the_uninterrupted_weights(dataset, tmp_path, slurm_cluster, cancel_at_exit):
    from hiera_video.config import load_config
    from hiera_video.engine.runner import launch

    opts = tiny_opts(dataset, "SOLVER.MAX_EPOCH", "8", "TRAIN.CHECKPOINT_ITER_PERIOD", "1",
                     "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False", "AUG.ENABLE", "True")
    job_dir = tmp_path / "job"
    job_id = submit(job_dir, opts, slurm_cluster)
    cancel_at_exit.append(job_id)
    wait_until(lambda: any("_iter_" in p for p in list_checkpoints(str(job_dir))), 180,
               "a mid-epoch checkpoint")
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    fields = wait_for_end(job_id, 300)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, slurm_logs(job_dir)
    log = (job_dir / "stdout.log").read_text()
    resumed = re.findall(r"Resumed from \S+checkpoint_epoch_(\d+)_iter_(\d+)\.pyth at epoch (\d+), iteration (\d+)",
                         log)
    assert len(resumed) == 1, log[-3000:]

    reference = tmp_path / "reference"
    launch(load_config(str(DEMO), opts + ["OUTPUT_DIR", str(reference), "NUM_CPU_PROCS", "2"]))
    straight = load_checkpoint(find_latest_checkpoint(str(reference)))["model_state"]
    requeued = load_checkpoint(find_latest_checkpoint(str(job_dir)))["model_state"]
    for key in straight:
        assert torch.equal(straight[key], requeued[key]), key


def test_time_limit_signal_saves_and_requeues(dataset, tmp_path, slurm_cluster, cancel_at_exit):
    opts = tiny_opts(dataset, "SOLVER.MAX_EPOCH", "6", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False")
    job_dir = tmp_path / "job"
    job_id = submit(job_dir, opts, slurm_cluster)
    cancel_at_exit.append(job_id)
    wait_until(lambda: (job_dir / "json_stats.log").exists(), 180, "training to start")
    # What Slurm sends `--signal` seconds before the time limit.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    fields = wait_for_end(job_id, 300)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, slurm_logs(job_dir)
    log = (job_dir / "stdout.log").read_text()
    assert "Received SIGUSR2" in log
    assert re.search(rf"Requeued job {job_id} \(requeue 1 of at most 20\)", log), log[-3000:]
    assert re.search(r"Resumed from \S+checkpoint_epoch_\d+(_iter_\d+)?\.pyth at epoch \d+, iteration \d+", log)
    assert os.path.basename(find_latest_checkpoint(str(job_dir))) == "checkpoint_epoch_00006.pyth"
