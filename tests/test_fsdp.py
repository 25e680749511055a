"""TRAIN.PARALLELISM fsdp with 2 gloo processes on real videos: the same losses as DDP, exact mid-epoch resume after
a stop signal or a killed process, validation and testing of the sharded model, and its consolidated checkpoint
testing the same. The local Slurm requeue is tests/slurm/test_submit.py; one-process format tests are
tests/test_sharded_checkpoint.py."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine import launch as launcher
from hiera_video.engine.checkpoint import find_latest_checkpoint, list_checkpoints, load_checkpoint
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.preemption import StopRequested
from hiera_video.engine.runner import launch, run
from hiera_video.engine.trainer import Trainer
from hiera_video.evaluation.score_file import load_test_scores
from hiera_video.tasks.mae import MaeTask

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """8 training videos, 3 validation videos (so the 2 processes validate different numbers of batches), 4 test
    videos."""
    root = str(tmp_path_factory.mktemp("fsdp") / "motion")
    write_demo_dataset(root, num_classes=2, train_per_class=4, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    val = os.path.join(root, "val.csv")
    lines = open(val).read().splitlines()
    with open(val, "w") as f:
        f.write("\n".join(lines[:3]) + "\n")
    return root


def tiny_cfg(dataset: str, output_dir, *opts: str, task: str = "classification"):
    """The demo config on 2 processes, shrunk to 4-frame 32x32 clips and a 3-stage, 16-channel Hiera: 2 steps
    per epoch."""
    arch = "mae_hiera_base_16x224" if task == "mae" else "hiera_base_16x224"
    base = ["TASK", task, "MODEL.ARCH", arch, "OUTPUT_DIR", str(output_dir), "NUM_CPU_PROCS", "2",
            "DATA.PATH_TO_DATA_DIR", dataset, "DATA.PATH_PREFIX", dataset, "MODEL.NUM_CLASSES", "2", "HIERA.STAGES",
            "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2",
            "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE",
            "2", "SOLVER.WARMUP_EPOCHS", "1.0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1",
            "TENSORBOARD.ENABLE", "False", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "2",
            "MAE.MASK_RATIO", "0.5", "MAE.DECODER_EMBED_DIM", "32", "MAE.DECODER_DEPTH", "1",
            "MAE.DECODER_NUM_HEADS", "1"]
    return load_config(DEMO, base + list(opts))


def final_weights(output_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(find_latest_checkpoint(str(output_dir)))["model_state"]


# --------------------------------------------------------- functions run in the spawned processes (fresh each)
def _micro_batch_losses(ctx, cfg) -> list[float]:
    """Runs the MAE config `cfg`; returns this rank's loss of every micro-batch."""
    losses: list[float] = []
    original = MaeTask.loss

    def recording_loss(self, model, batch):
        loss, stats = original(self, model, batch)
        losses.append(loss.item())
        return loss, stats

    MaeTask.loss = recording_loss  # type: ignore[method-assign]
    run(ctx, cfg)
    return losses


def _interrupted(ctx, cfg, step: int, how: str) -> str:
    """Runs `cfg`; when rank 1 starts optimisation step number `step` (0-based, counted over the run), it gets
    SIGTERM (Slurm's preemption: stop with a checkpoint) or dies at once ("killed")."""
    original = Trainer._optimisation_step
    calls = {"n": 0}

    def interrupting_step(self, *args, **kwargs):
        if calls["n"] == step and ctx.rank == 1:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                os._exit(9)
        calls["n"] += 1
        return original(self, *args, **kwargs)

    Trainer._optimisation_step = interrupting_step  # type: ignore[method-assign]
    try:
        run(ctx, cfg)
    except StopRequested as stop:
        return str(stop)
    return "finished"


# ---------------------------------------------------------------------------------------------------- tests
def test_fsdp_loss_trajectory_equals_ddp_over_ten_steps(dataset, tmp_path):
    # MAE: the encoder's and the decoder's blocks are sharded; 2 accumulated micro-batches per step (FSDP's
    # gradient sync off for the first), clipping and layer decay act on the sharded gradients and parameters.
    opts = ["SOLVER.MAX_EPOCH", "5", "TRAIN.ACCUM_ITER", "2", "SOLVER.CLIP_GRAD_L2NORM", "0.05",
            "SOLVER.LAYER_DECAY", "0.75", "HIERA.DROP_PATH_RATE", "0.1", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE",
            "False", "SOLVER.BASE_LR", "0.05"]
    losses = {}
    for parallelism in ("ddp", "fsdp"):
        cfg = tiny_cfg(dataset, tmp_path / parallelism, *opts, "TRAIN.PARALLELISM", parallelism, task="mae")
        losses[parallelism] = launcher.launch_local(_micro_batch_losses, 2, args=(cfg,), timeout_minutes=5)
    for rank in (0, 1):
        ddp, fsdp = np.array(losses["ddp"][rank]), np.array(losses["fsdp"][rank])
        assert len(ddp) == len(fsdp) == 20  # 10 steps of 2 micro-batches
        assert np.abs(ddp - fsdp).max() < 1e-5, np.abs(ddp - fsdp)
        assert np.abs(ddp[-4:] - ddp[:4]).max() > 1e-3  # the weights did move
    checkpoints = [os.path.basename(p) for p in list_checkpoints(str(tmp_path / "fsdp"))]
    assert checkpoints == ["checkpoint_epoch_00005.dcp"]
    ddp_weights, fsdp_weights = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "fsdp")
    assert ddp_weights.keys() == fsdp_weights.keys()
    for key in ddp_weights:
        # Up to 2e-5 apart here: AdamW turns the rounding noise of gradients that are zero in exact arithmetic (the
        # attention's key bias, which softmax ignores) into steps as large as the learning rate (8e-4).
        torch.testing.assert_close(fsdp_weights[key], ddp_weights[key], rtol=0, atol=1e-4, msg=key)


# 3 epochs of 4 steps (1 video per process and step), a checkpoint after every step.
RESUME_OPTS = ["SOLVER.MAX_EPOCH", "3", "TRAIN.BATCH_SIZE", "2", "TRAIN.CHECKPOINT_ITER_PERIOD", "1",
               "TRAIN.CHECKPOINT_PERIOD", "1", "TRAIN.EVAL_PERIOD", "1", "AUG.ENABLE", "True",
               "DATA.RANDOM_FLIP", "True", "HIERA.DROP_PATH_RATE", "0.1", "TRAIN.PARALLELISM", "fsdp"]


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    """An fsdp run of RESUME_OPTS that validates (3 videos on 2 processes) after every epoch and tests at the end."""
    output = tmp_path_factory.mktemp("uninterrupted")
    results = launch(tiny_cfg(dataset, output, *RESUME_OPTS))
    return output, results


@pytest.mark.parametrize("how", ["sigterm", "killed"])
def test_an_interrupted_fsdp_run_resumes_mid_epoch_to_the_uninterrupted_weights(dataset, tmp_path, uninterrupted,
                                                                               how):
    cfg = tiny_cfg(dataset, tmp_path, *RESUME_OPTS)
    if how == "sigterm":  # during the 2nd step of epoch 2; the stop comes after it, with a checkpoint
        stopped = launcher.launch_local(_interrupted, 2, args=(cfg, 5, how), timeout_minutes=5)
        assert stopped == [f"Stopped on {name}; state saved in {tmp_path}/checkpoints/checkpoint_epoch_00001_iter_"
                           f"000002.dcp" for name in ("SIGTERM(other rank)", "SIGTERM")]
    else:  # rank 1 dies as the 3rd step of epoch 2 starts, maybe while the checkpoint of the 2nd is written
        with pytest.raises(launcher.LocalLaunchError, match="exit code 9"):
            launcher.launch_local(_interrupted, 2, args=(cfg, 6, how), timeout_minutes=5)
    latest = find_latest_checkpoint(str(tmp_path))
    assert re.fullmatch(r"checkpoint_epoch_00001_iter_00000[12]\.dcp", os.path.basename(latest)), latest
    launch(cfg)
    log = (tmp_path / "stdout.log").read_text()
    assert re.search(r"Resumed from \S+checkpoint_epoch_00001_iter_00000[12]\.dcp at epoch 2, iteration [12]", log)
    straight, resumed = final_weights(uninterrupted[0]), final_weights(tmp_path)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    validations = [s["top1_err"] for s in read_json_stats(str(tmp_path / "json_stats.log"))
                   if s.get("_type") == "val_epoch"]
    assert len(validations) >= 2  # epochs 2 and 3 validated after the resume (epoch 1 before the stop)


def test_the_sharded_model_validates_tests_and_consolidates_to_a_file_that_tests_the_same(dataset, tmp_path,
                                                                                         uninterrupted,
                                                                                         single_process):
    output, results = uninterrupted
    stats = read_json_stats(str(output / "json_stats.log"))
    assert [s["num_clips"] for s in stats if s.get("_type") == "val_epoch"] == [3, 3, 3]  # 2 + 1 per process
    assert results["num_videos"] == 4
    sharded = find_latest_checkpoint(str(output))
    assert os.path.basename(sharded) == "checkpoint_epoch_00003.dcp"
    consolidated = tmp_path / "model.pyth"
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "consolidate_checkpoint.py"), sharded,
                          str(consolidated)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Wrote {consolidated}: epoch 3, iteration 0, ")
    state = torch.load(consolidated, weights_only=True)
    assert len(state["rng_states"]) == 2 and state["optimizer_state"]["state"]

    # One process tests the consolidated file, and the sharded folder directly: the scores of the sharded run.
    expected = load_test_scores(str(output / "test_scores.npz"))
    for kind, weights in (("file", str(consolidated)), ("folder", sharded)):
        test_dir = tmp_path / f"test_from_{kind}"
        cfg = tiny_cfg(dataset, test_dir, "TRAIN.ENABLE", "False", "NUM_CPU_PROCS", "1",
                       "TEST.CHECKPOINT_FILE_PATH", weights)
        assert run(single_process, cfg)["top1_acc"] == results["top1_acc"]
        scores = load_test_scores(str(test_dir / "test_scores.npz"))
        assert list(scores.video_ids) == list(expected.video_ids)
        np.testing.assert_allclose(scores.scores, expected.scores, rtol=0, atol=1e-5)
