"""tools/submit.py on the local Slurm cluster: a 2-task gloo run; a requeue mid-epoch (with DDP and with FSDP's
sharded checkpoints), and the time-limit signal sent to every process of the job mid-epoch with spawned data-loader
workers (as on a GPU cluster), all resuming to the weights of an uninterrupted run; a failing task ending the job."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from hiera_video.engine.logging import read_json_stats
from hiera_video.utils.faults import FAULT_ENV
from tests.slurm.jobs import slurm_logs, wait_for_end, wait_until

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


def submit(job_dir: Path, opts: list[str], cluster, env: dict[str, str] | None = None) -> str:
    """Runs tools/submit.py for 2 CPU tasks (the job gets this environment plus `env`); returns the job id."""
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "submit.py"), "--cfg", str(DEMO), "--ngpus", "0", "--tasks-per-node",
         "2", "--cpus-per-task", "1", "--mem", "2", "--partition", cluster.partition, "--timeout", "10",
         "--job-dir", str(job_dir), *opts],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    match = re.search(r"Submitted job (\d+)", out.stdout)
    assert match, out.stdout
    assert str(job_dir) in out.stdout  # says where checkpoints and logs go
    return match.group(1)


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


def requeue_opts(dataset: str) -> list[str]:
    """8 epochs of 4 steps; the only mid-epoch checkpoint is the one a stop makes."""
    return tiny_opts(dataset, "SOLVER.MAX_EPOCH", "8", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
                     "AUG.ENABLE", "True")


# Every task waits after iteration 6 (epoch 2, iteration 2) for the stop: it lands there however fast the run is.
HOLD = {FAULT_ENV: "hold:6"}


def wait_for_hold(job_dir: Path) -> None:
    wait_until(lambda: "Holding after iteration 6" in read_if_any(job_dir / "stdout.log"), 240, "iteration 6")


def read_if_any(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def assert_resumed_after_the_hold(job_dir: Path, suffix: str) -> None:
    """The run stopped at the hold with a mid-epoch checkpoint and resumed from it, once."""
    log = (job_dir / "stdout.log").read_text()
    resumed = re.findall(r"Resumed from \S+checkpoint_epoch_(\d+)_iter_(\d+)" + re.escape(suffix)
                         + r" at epoch (\d+), iteration (\d+)", log)
    assert resumed == [("00001", "000002", "2", "2")], log[-3000:]


def reference_weights(dataset: str, reference: Path, parallelism: str) -> dict[str, torch.Tensor]:
    """The final weights of `requeue_opts` run without interruption by 2 local processes."""
    from hiera_video.config import load_config
    from hiera_video.engine.runner import launch

    launch(load_config(str(DEMO), requeue_opts(dataset) + ["OUTPUT_DIR", str(reference), "NUM_CPU_PROCS", "2",
                                                           "TRAIN.PARALLELISM", parallelism]))
    return load_checkpoint(find_latest_checkpoint(str(reference)))["model_state"]


@pytest.fixture(scope="module")
def uninterrupted_weights(dataset, tmp_path_factory) -> dict[str, torch.Tensor]:
    return reference_weights(dataset, tmp_path_factory.mktemp("reference"), "ddp")


@pytest.fixture(scope="module")
def uninterrupted_fsdp_weights(dataset, tmp_path_factory) -> dict[str, torch.Tensor]:
    return reference_weights(dataset, tmp_path_factory.mktemp("reference_fsdp"), "fsdp")


def assert_same_weights(expected: dict[str, torch.Tensor], job_dir: Path, name="checkpoint_epoch_00008.pyth") -> None:
    final = load_checkpoint(find_latest_checkpoint(str(job_dir)))["model_state"]
    assert os.path.basename(find_latest_checkpoint(str(job_dir))) == name
    for key in expected:
        assert torch.equal(expected[key], final[key]), key


def requeue_mid_epoch_and_check(dataset: str, job_dir: Path, slurm_cluster, cancel_at_exit: list[str],
                                expected: dict[str, torch.Tensor], parallelism: str, suffix: str) -> None:
    """Submits `requeue_opts` with `parallelism`, requeues the job at the hold, and checks it resumed once from the
    stop's mid-epoch checkpoint (`suffix`: .pyth or .dcp) to the `expected` final weights."""
    job_id = submit(job_dir, requeue_opts(dataset) + ["TRAIN.PARALLELISM", parallelism], slurm_cluster, env=HOLD)
    cancel_at_exit.append(job_id)
    wait_for_hold(job_dir)
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
    fields = wait_for_end(job_id, 300)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, slurm_logs(job_dir)
    assert_resumed_after_the_hold(job_dir, suffix)
    assert_same_weights(expected, job_dir, f"checkpoint_epoch_00008{suffix}")


def test_requeue_mid_epoch_resumes_to_the_uninterrupted_weights(dataset, tmp_path, slurm_cluster, cancel_at_exit,
                                                                uninterrupted_weights):
    requeue_mid_epoch_and_check(dataset, tmp_path / "job", slurm_cluster, cancel_at_exit, uninterrupted_weights,
                                "ddp", ".pyth")


def test_requeue_mid_epoch_with_fsdp_resumes_from_sharded_checkpoints_to_the_uninterrupted_weights(
        dataset, tmp_path, slurm_cluster, cancel_at_exit, uninterrupted_fsdp_weights):
    requeue_mid_epoch_and_check(dataset, tmp_path / "job", slurm_cluster, cancel_at_exit, uninterrupted_fsdp_weights,
                                "fsdp", ".dcp")


def test_time_limit_signal_to_every_process_with_spawned_workers_saves_requeues_and_resumes(
        dataset, tmp_path, slurm_cluster, cancel_at_exit, uninterrupted_weights):
    # As on a GPU cluster: 2 workers per task, started by spawn, which die of SIGUSR2 unless they ignore it.
    opts = requeue_opts(dataset) + ["DATA_LOADER.NUM_WORKERS", "2", "DATA_LOADER.MP_CONTEXT", "spawn"]
    job_dir = tmp_path / "job"
    job_id = submit(job_dir, opts, slurm_cluster, env=HOLD)
    cancel_at_exit.append(job_id)
    wait_for_hold(job_dir)
    # What Slurm sends `--signal` seconds before the time limit, here to every process of the job (--full).
    subprocess.run(["scancel", "--signal=USR2", "--full", job_id], check=True, timeout=30)
    fields = wait_for_end(job_id, 420)
    logs = slurm_logs(job_dir)
    assert fields["JobState"] == "COMPLETED" and int(fields["Restarts"]) == 1, logs[-5000:]
    assert "DataLoader worker" not in logs
    log = (job_dir / "stdout.log").read_text()
    assert "Received SIGUSR2" in log
    assert re.search(rf"Requeueing job {job_id} \(requeue 1 of at most 20\)", log), log[-3000:]
    assert_resumed_after_the_hold(job_dir, ".pyth")
    assert_same_weights(uninterrupted_weights, job_dir)


def test_a_failing_task_ends_the_job_within_a_minute(dataset, tmp_path, slurm_cluster, cancel_at_exit):
    # Rank 1 fails as training starts; rank 0 blocks as in an NCCL collective: srun --kill-on-bad-exit ends it.
    opts = tiny_opts(dataset, "DIST_TIMEOUT_MINUTES", "5", "TEST.ENABLE", "False")
    job_dir = tmp_path / "job"
    job_id = submit(job_dir, opts, slurm_cluster, env={FAULT_ENV: "raise:1"})
    cancel_at_exit.append(job_id)
    fields = wait_for_end(job_id, 240)
    ended = time.time()
    logs = slurm_logs(job_dir)
    failed_at = re.search(r"Fault injected on rank 1 \(\S+\) at unix time ([\d.]+)", logs)
    assert fields["JobState"] == "FAILED" and failed_at, logs[-5000:]
    assert ended - float(failed_at.group(1)) < 60
    assert "waited" not in logs  # rank 0 was ended, not released by its collective timeout
    script = next((job_dir / "submitit").rglob("*_submission.sh")).read_text()
    assert "--kill-on-bad-exit=1" in script
