"""The branches a GPU cluster takes, taken on the CPU: Slurm step layouts and one GPU per task (environment
dictionaries, mocked device counts), HOG targets under autocast (CPU bf16).
"""
from __future__ import annotations

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.engine import launch
from hiera_video.engine.runner import check_layout
from hiera_video.models.hog import hog_patch_targets
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
