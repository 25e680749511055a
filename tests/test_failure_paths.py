"""Cluster behaviour end to end on the CPU: a stop signal during an evaluation or the epoch-end save stops with a
checkpoint that resumes to the uninterrupted weights; evaluations run under the training autocast; one failing rank
ends every process of the job quickly under run_net.py and torchrun (the local Slurm case is
tests/slurm/test_submit.py)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.data import clip_dataset
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.preemption import StopRequested
from hiera_video.engine.runner import run
from hiera_video.tasks import base, build_task
from hiera_video.utils.faults import FAULT_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("failure_paths") / "motion")
    write_demo_dataset(root, num_classes=2, train_per_class=4, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    return root


def tiny_opts(dataset: str, *extra: str) -> list[str]:
    return ["DATA.PATH_TO_DATA_DIR", dataset, "DATA.PATH_PREFIX", dataset, "MODEL.NUM_CLASSES", "2",
            "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE",
            "2", "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0", "DATA_LOADER.NUM_WORKERS", "0",
            "TENSORBOARD.ENABLE", "False", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1", *extra]


def signal_on_first_open(monkeypatch, split: str) -> list[str]:
    """Sends this process SIGUSR2 (Slurm's time-limit warning) while the first video of `split` decodes; returns
    the list of `split` videos opened."""
    opened: list[str] = []
    original = clip_dataset.open_video

    def open_video(source, **kwargs):
        if f"/{split}/" in source:
            opened.append(source)
            if len(opened) == 1:
                os.kill(os.getpid(), signal.SIGUSR2)
        return original(source, **kwargs)

    monkeypatch.setattr(clip_dataset, "open_video", open_video)
    return opened


def signal_after_first_epoch_save(monkeypatch) -> None:
    original = ckpt.save_checkpoint

    def save_checkpoint(path, state):
        original(path, state)
        if os.path.basename(path) == "checkpoint_epoch_00001.pyth":
            os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_checkpoint)


@pytest.mark.parametrize("when", ["validation", "epoch-end save"])
def test_a_stop_during_validation_or_the_epoch_end_save_resumes_by_validating_again(dataset, tmp_path, monkeypatch,
                                                                                   single_process, when):
    # Validating 2 batches is "long" here: the signal arrives during the first, the stop comes before the second.
    opts = tiny_opts(dataset, "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "1",
                     "TRAIN.CHECKPOINT_PERIOD", "2" if when == "validation" else "1")
    run(single_process, load_config(DEMO, opts + ["OUTPUT_DIR", str(tmp_path / "straight")]))
    broken = load_config(DEMO, opts + ["OUTPUT_DIR", str(tmp_path / "broken")])
    with monkeypatch.context() as patch:
        if when == "validation":
            opened = signal_on_first_open(patch, "val")
        else:
            signal_after_first_epoch_save(patch)
        with pytest.raises(StopRequested, match=r"Stopped on SIGUSR2; state saved in \S+checkpoint_epoch_00001\.pyth"):
            run(single_process, broken)
    if when == "validation":
        assert len(opened) == 2  # the first batch of 2 videos; the second batch never started
    stopped = ckpt.load_checkpoint(ckpt.find_latest_checkpoint(str(tmp_path / "broken")))
    assert (stopped["epoch"], stopped["iter"], stopped["eval_pending"]) == (1, 0, True)
    assert not [s for s in read_json_stats(str(tmp_path / "broken" / "json_stats.log")) if s["_type"] == "val_epoch"]

    run(single_process, broken)
    stats = read_json_stats(str(tmp_path / "broken" / "json_stats.log"))
    assert [s["epoch"] for s in stats if s.get("_type") == "val_epoch"] == ["1/2", "2/2"]  # epoch 1 ran again
    straight = ckpt.load_checkpoint(ckpt.find_latest_checkpoint(str(tmp_path / "straight")))["model_state"]
    resumed = ckpt.load_checkpoint(ckpt.find_latest_checkpoint(str(tmp_path / "broken")))["model_state"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_a_stop_during_the_final_test_stops_and_the_rerun_tests_again(dataset, tmp_path, monkeypatch,
                                                                       single_process):
    cfg = load_config(DEMO, tiny_opts(dataset, "TRAIN.ENABLE", "False", "OUTPUT_DIR", str(tmp_path)))
    with monkeypatch.context() as patch:
        opened = signal_on_first_open(patch, "test")
        with pytest.raises(StopRequested, match="Stopped on SIGUSR2"):
            run(single_process, cfg)
    assert len(opened) == 2
    assert run(single_process, cfg)["num_videos"] == 4


def test_evaluations_run_under_the_training_autocast(dataset, tmp_path, monkeypatch, single_process):
    # What TRAIN.MIXED_PRECISION gives on CUDA, here on the CPU.
    monkeypatch.setattr(base, "amp_context", lambda cfg, device: torch.autocast("cpu", dtype=torch.bfloat16))
    task = build_task(load_config(DEMO, tiny_opts(dataset, "OUTPUT_DIR", str(tmp_path))), single_process)
    model = task.build_model()
    outputs: list[torch.dtype] = []
    model.head.register_forward_hook(lambda module, inputs, output: outputs.append(output.dtype))
    task.validate(model, epoch=0)
    task.test(model)
    assert outputs == [torch.bfloat16] * 4  # 2 validation and 2 test batches


# ------------------------------------------------------------------------------------------ a failing rank
def run_with_a_failing_rank(launcher: list[str], opts: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """Runs tools/run_net.py with rank 1 failing as training starts (the other rank blocks as in an NCCL
    collective); returns the result and the seconds from the failure to the end of every process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env[FAULT_ENV] = "raise:1"
    out = subprocess.run([*launcher, os.path.join(REPO, "tools", "run_net.py"), "--cfg", DEMO, *opts],
                         capture_output=True, text=True, timeout=400, env=env)
    ended = time.time()
    failed_at = re.search(r"Fault injected on rank 1 \(\S+\) at unix time ([\d.]+)", out.stderr)
    assert failed_at, out.stderr[-3000:]
    return out, ended - float(failed_at.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["run_net", "torchrun"])
def test_one_failing_rank_ends_every_process_within_a_minute(dataset, tmp_path, launcher):
    opts = tiny_opts(dataset, "OUTPUT_DIR", str(tmp_path), "DIST_TIMEOUT_MINUTES", "5")
    if launcher == "run_net":
        out, seconds = run_with_a_failing_rank([sys.executable], opts + ["NUM_CPU_PROCS", "2"])
        assert "local process 1 of 2 (rank 1) failed first" in out.stderr
    else:
        out, seconds = run_with_a_failing_rank([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                                "2"], opts)
    assert out.returncode != 0
    assert seconds < 60, (seconds, out.stderr[-3000:])
    assert "waited" not in out.stderr  # rank 0 was ended, not released by its collective timeout
