"""The branches a GPU cluster takes, taken on the CPU: Slurm step layouts and one GPU per task (environment
dictionaries, mocked device counts), HOG targets under autocast (CPU bf16), what ranks agree on (two gloo
processes), per-device CUDA RNG states (mocked), fp16 scaler state, spawned data-loader workers and stop signals.
"""
from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time

import pytest
import torch
from torch.utils.data import Dataset

from hiera_video.config import load_config
from hiera_video.data.loader import ResumableSampler, build_loader, collate_samples, start_method
from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine import launch
from hiera_video.engine.runner import check_layout
from hiera_video.engine.step_stats import StepStats
from hiera_video.models.hog import hog_patch_targets
from hiera_video.utils import distributed as du
from hiera_video.utils.distributed import LaunchSpec

# ------------------------------------------------------------------------------------ Slurm layout detection
# Two 8-GPU nodes; sbatch's allocation has 16 tasks. Each case adds the variables of the srun step.
ALLOCATION = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16", "SLURM_JOB_NUM_NODES": "2",
              "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_TASKS_PER_NODE": "8(x2)"}
PORT = launch.slurm_port("4242")


def step(tasks: int, nodes: int, nodelist: str, rank: int, local_rank: int, **extra: str) -> dict[str, str]:
    return {**ALLOCATION, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_NUM_NODES": str(nodes),
            "SLURM_STEP_NODELIST": nodelist, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(local_rank), **extra}


def test_sbatch_and_srun_per_gpu_join_one_group_of_every_task():
    spec = launch.detect_launch(step(16, 2, "gpu[07-08]", rank=9, local_rank=1))
    assert spec == LaunchSpec(9, 16, 1, 8, f"tcp://gpu07:{PORT}", "slurm")
    assert launch.launched_externally(8, 1, 0, spec)


def test_srun_inside_salloc_counts_the_step_not_the_allocation():
    # `srun -N1 -n2` on the third node of a 16-task allocation: a group of 2 that meets on that node.
    spec = launch.detect_launch(step(2, 1, "gpu09", rank=1, local_rank=1))
    assert spec == LaunchSpec(1, 2, 1, 2, f"tcp://gpu09:{PORT}", "slurm")
    assert launch.launched_externally(2, 1, 0, spec)
    # salloc's interactive step is one task: run_net.py starts the NUM_GPUS processes itself.
    alone = launch.detect_launch(step(1, 1, "gpu07", rank=0, local_rank=0))
    assert alone.world_size == 1 and not launch.launched_externally(8, 1, 0, alone)


def test_one_task_per_node_is_a_shard_launch_or_refused():
    spec = launch.detect_launch(step(2, 2, "gpu[07-08]", rank=1, local_rank=0))
    assert (spec.world_size, spec.local_world_size) == (2, 1)
    assert not launch.launched_externally(8, 2, 1, spec)  # --num_shards 2 --shard_id 1: starts 8 processes here
    assert launch.launched_externally(1, 1, 0, spec)  # NUM_GPUS 1: one process per node is the job
    with pytest.raises(ValueError, match=r"one task per machine \(2 tasks\).*8 processes per machine.*"
                                         r"srun --ntasks-per-node=8.*--num_shards 2 --shard_id \$SLURM_PROCID"):
        launch.launched_externally(8, 1, 0, spec)
    with pytest.raises(ValueError, match=r"--shard_id 0 but this is task 1 of the Slurm step"):
        launch.launched_externally(8, 2, 0, spec)


def test_torchrun_inside_slurm_is_torchrun():
    env = step(2, 2, "gpu[07-08]", rank=1, local_rank=0, RANK="9", WORLD_SIZE="16", LOCAL_RANK="1",
               LOCAL_WORLD_SIZE="8", MASTER_ADDR="gpu07", MASTER_PORT="29500")
    spec = launch.detect_launch(env)
    assert spec == LaunchSpec(9, 16, 1, 8, "env://", "torchrun")
    assert launch.launched_externally(8, 1, 0, spec)


def test_slurm_rendezvous_ports_stay_below_the_ephemeral_range():
    assert launch.SLURM_PORT_BASE >= 1024
    assert launch.SLURM_PORT_BASE + launch.SLURM_PORT_SPAN <= 32768
    assert launch.slurm_port("123_4") == launch.slurm_port("1234")  # array tasks


# ------------------------------------------------------------------------------------------ one GPU per task
def test_a_process_bound_to_one_gpu_passes_the_layout_check_when_launched_externally(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # srun --gpus-per-task=1
    cfg = load_config([], ["NUM_GPUS", "8", "TRAIN.BATCH_SIZE", "16"])
    check_layout(cfg, world_size=16, external=True)
    with pytest.raises(RuntimeError, match="NUM_GPUS=8 but only 1 CUDA devices are visible: set NUM_GPUS 1"):
        check_layout(cfg, world_size=8, external=False)  # run_net.py would start 8 processes on one GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA device is visible"):
        check_layout(cfg, world_size=16, external=True)


# ------------------------------------------------------------------------------------- HOG targets under AMP
def test_hog_targets_under_bf16_autocast_equal_the_float32_definition():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = hog_patch_targets(images, (16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = hog_patch_targets(images, (16, 16))
        from_bf16_input = hog_patch_targets(images.bfloat16(), (16, 16))
    assert under_amp.dtype == torch.float32 and torch.equal(under_amp, expected)
    assert torch.equal(from_bf16_input, hog_patch_targets(images.bfloat16().float(), (16, 16)))


# ------------------------------------------------------------------------------- what the ranks agree on
def _two_ranks(ctx: du.DistContext, root: str) -> dict:
    # Each rank scans its "own view" of OUTPUT_DIR: rank 1 sees a newer checkpoint than rank 0.
    view = os.path.join(root, f"view{ctx.rank}")
    ckpt.save_checkpoint(ckpt.checkpoint_path(view, 2 + ctx.rank), {"epoch": 2 + ctx.rank})
    good = [(1.0 + ctx.rank, 10.0 * ctx.rank), (3.0, 0.0)]  # per step: loss, top1_err
    # Rank 1's loss turns NaN at the third step (iteration index 2), rank 0's infinite one step later.
    bad = [(2.0, 0.0), (2.0, 0.0), (math.nan if ctx.rank else 2.0, 0.0), (math.nan if ctx.rank else math.inf, 0.0)]
    errors = []
    try:
        _read_steps(ctx, bad, skip_nonfinite=False)
    except FloatingPointError as error:
        errors.append(str(error))
    return {"resume": ckpt.agreed_latest_checkpoint(view, ctx.is_main), "gathered": du.gather_object(ctx.rank),
            "stacked": du.all_gather_tensor(torch.tensor([ctx.rank, 5.0])).tolist(),
            "means": _read_steps(ctx, good, skip_nonfinite=False), "errors": errors,
            "fp16": _read_steps(ctx, bad, skip_nonfinite=True)}


def _read_steps(ctx: du.DistContext, steps: list[tuple[float, float]], skip_nonfinite: bool) -> list[dict]:
    """The trainer's path: each step's loss checked and kept on the device, all of them read once (log step)."""
    stats = StepStats(ctx.device)
    for iteration, (loss, top1) in enumerate(steps):
        stats.check_loss(torch.tensor(loss), epoch=0, iteration=iteration)
        stats.add({"loss": torch.tensor(loss), "top1_err": torch.tensor(top1)})
    return stats.read("checkpoint_epoch_00000.pyth", skip_nonfinite=skip_nonfinite)


@pytest.mark.slow
def test_ranks_agree_on_the_checkpoint_the_losses_and_gather_results_on_rank_0(tmp_path):
    zero, one = launch.launch_local(_two_ranks, 2, args=(str(tmp_path),), timeout_minutes=2)
    assert zero["resume"] == one["resume"] == ckpt.checkpoint_path(str(tmp_path / "view0"), 2)
    assert (zero["gathered"], one["gathered"]) == ([0, 1], None)  # test scores go to rank 0 only
    assert zero["stacked"] == one["stacked"] == [[0.0, 5.0], [1.0, 5.0]]
    # The logged values are every rank's means, step by step.
    assert zero["means"] == one["means"] == [{"loss": 1.5, "top1_err": 5.0}, {"loss": 3.0, "top1_err": 0.0}]
    # Non-finite losses stop both ranks at the read with one message naming the first of them; fp16 skips them.
    assert zero["errors"] == one["errors"] == ["Loss is nan on rank 1 at epoch 1, iteration 3; last good checkpoint: "
                                               "checkpoint_epoch_00000.pyth. Lower SOLVER.BASE_LR, raise warmup or "
                                               "enable SOLVER.CLIP_GRAD_L2NORM, then resume."]
    assert [step["top1_err"] for step in zero["fp16"]] == [0.0] * 4
    assert [math.isnan(step["loss"]) for step in zero["fp16"]] == [False, False, True, True]  # no error


# ----------------------------------------------------------------------------- checkpoint state per device
def test_each_process_saves_and_restores_only_its_own_cuda_rng_state(monkeypatch):
    states = {3: torch.tensor([3], dtype=torch.uint8), 0: torch.tensor([0], dtype=torch.uint8)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[torch.device(device).index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("captured every device's state"))
    state = ckpt.capture_rng_state(torch.device("cuda", 3))
    assert torch.equal(state["cuda"], states[3])
    # Resumed where this rank now runs on cuda:0: its own stream goes to its own device.
    ckpt.restore_rng_state(state, torch.device("cuda", 0))
    assert len(restored) == 1 and torch.equal(restored[0][0], states[3]) and restored[0][1] == torch.device("cuda", 0)
    ckpt.restore_rng_state(state, torch.device("cpu"))  # a CPU run leaves CUDA alone
    assert "cuda" not in ckpt.capture_rng_state(torch.device("cpu")) and len(restored) == 1


def test_fp16_resumes_a_checkpoint_written_without_a_gradient_scaler():
    written = torch.amp.GradScaler("cpu", enabled=False).state_dict()  # bf16 or CPU run: {}
    fp16 = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    ckpt.restore_scaler(fp16, written)
    assert fp16.get_scale() == 2.0**16
    ckpt.restore_scaler(fp16, torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())
    assert fp16.get_scale() == 8.0


# ------------------------------------------------------------------ spawned workers and the stop signals
class _SlowRange(Dataset):
    """Like the real datasets, holds a closure: the standard pickler of spawn cannot send it to a worker."""

    def __init__(self) -> None:
        self.to_value = lambda index: float(index)
        self.size = 8

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key) -> dict:
        time.sleep(0.2)
        return {"video": torch.full((1, 1), self.to_value(key.index))}


@pytest.mark.slow
def test_spawned_workers_survive_the_stop_signals_slurm_sends_every_process():
    received = []  # the main process owns the signals: none of those sent to the workers may reach it
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        loader = build_loader(_SlowRange(), ResumableSampler(8, 0, 1, shuffle=False, seed=0), 2, num_workers=1,
                              pin_memory=False, drop_last=False, mp_context="spawn",
                              collate_fn=lambda samples: collate_samples(samples))
        assert len(loader.dataset) == loader.dataset.size == 8  # the dataset as the trainer sees it
        batches = iter(loader)
        workers = multiprocessing.active_children()
        for worker in workers:  # while the workers are still starting
            os.kill(worker.pid, signal.SIGUSR2)
        values = [next(batches)["video"].flatten().tolist()]
        for worker in workers:  # while they decode
            os.kill(worker.pid, signal.SIGUSR2)
            os.kill(worker.pid, signal.SIGTERM)
        values += [batch["video"].flatten().tolist() for batch in batches]
        assert values == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
        assert all(worker.is_alive() for worker in workers) and not received
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_workers_start_by_spawn_with_cuda_and_by_fork_otherwise(monkeypatch):
    assert start_method("auto", 0) is None and start_method("forkserver", 2) == "forkserver"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert start_method("auto", 2) == "spawn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert start_method("auto", 2) == "fork"
    with pytest.raises(ValueError, match="DATA_LOADER.MP_CONTEXT='thread'"):
        start_method("thread", 2)
