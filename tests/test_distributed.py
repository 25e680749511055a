"""hiera_video.engine.launch and hiera_video.utils.distributed: real gloo process groups on the CPU, launcher
detection, seeds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
import torch.distributed as dist

from hiera_video.engine import launch
from hiera_video.utils import distributed as du
from hiera_video.utils.seeding import seed_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "SUBMITIT_EXECUTOR")


@pytest.fixture
def no_launcher_env(monkeypatch):
    """A process that no launcher started, even if the tests themselves run under torchrun or srun."""
    for name in list(os.environ):
        if name in LAUNCHER_VARS or name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    du.destroy_process_group()
    yield monkeypatch
    du.destroy_process_group()


# ------------------------------------------------------------------------------ functions run in children
def _collectives(ctx: du.DistContext, base: float) -> dict:
    again = launch.init_distributed()
    mean = du.all_reduce_mean(torch.tensor([base * (ctx.rank + 1), 10.0 * ctx.rank]))
    int_mean = du.all_reduce_mean(torch.tensor([ctx.rank], dtype=torch.int64))
    du.barrier()
    return {
        "rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank,
        "local_world_size": ctx.local_world_size, "backend": ctx.backend, "device": str(ctx.device),
        "is_main": ctx.is_main, "same_context": again is ctx,
        "mean": mean.tolist(), "int_mean": [int_mean.item(), str(int_mean.dtype)],
        "gathered": du.all_gather_object({"rank": ctx.rank, "name": f"proc{ctx.rank}"}),
        "broadcast": du.broadcast_object(f"made by rank {ctx.rank}", src=1),
    }


def _fail_on_rank_one(ctx: du.DistContext) -> None:
    if ctx.rank == 1:
        raise RuntimeError("boom on rank 1")
    du.barrier()  # rank 0 would wait here forever if the failure were not propagated


def _exit_without_traceback_on_rank_one(ctx: du.DistContext) -> None:
    if ctx.rank == 1:
        os._exit(3)
    time.sleep(60)  # rank 0 is busy; it must be stopped, not waited for


def _rank_and_sum(ctx: du.DistContext) -> list:
    return [ctx.rank, ctx.world_size, ctx.local_rank, du.all_reduce_mean(torch.tensor([float(ctx.rank)])).item()]


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_two_gloo_processes_share_means_objects_and_broadcasts(no_launcher_env):
    results = launch.launch_local(_collectives, 2, args=(2.0,))
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert (r["world_size"], r["local_world_size"], r["backend"], r["device"]) == (2, 2, "gloo", "cpu")
        assert r["local_rank"] == r["rank"] and r["is_main"] == (r["rank"] == 0)
        assert r["same_context"]
        assert r["mean"] == [3.0, 5.0]  # mean of [2, 0] and [4, 10]
        assert r["int_mean"] == [0.5, "torch.float64"]
        assert r["gathered"] == [{"rank": 0, "name": "proc0"}, {"rank": 1, "name": "proc1"}]
        assert r["broadcast"] == "made by rank 1"
    assert not dist.is_initialized()  # the parent itself joined no group


@pytest.mark.slow
def test_exception_in_one_child_fails_the_launch_without_hanging(no_launcher_env):
    # Without propagation rank 0 would wait in its barrier for the 5-minute collective timeout, then fail with
    # another message.
    first_failure = r"(?s)local process 1 of 2 \(rank 1\) failed first.*boom on rank 1"
    with pytest.raises(launch.LocalLaunchError, match=first_failure):
        launch.launch_local(_fail_on_rank_one, 2, timeout_minutes=5)


@pytest.mark.slow
def test_child_dying_without_traceback_fails_the_launch(no_launcher_env):
    with pytest.raises(launch.LocalLaunchError, match="process 1 terminated with exit code 3"):
        launch.launch_local(_exit_without_traceback_on_rank_one, 2, timeout_minutes=5)


@pytest.mark.slow
def test_two_shards_form_one_group(no_launcher_env):
    init_method = f"tcp://127.0.0.1:{launch._free_local_port()}"
    results = {}

    def run_shard(shard_id: int) -> None:
        results[shard_id] = launch.launch_local(_rank_and_sum, 1, init_method=init_method, num_shards=2,
                                            shard_id=shard_id, timeout_minutes=1)

    threads = [threading.Thread(target=run_shard, args=(shard,)) for shard in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {0: [[0, 2, 0, 0.5]], 1: [[1, 2, 0, 0.5]]}


@pytest.mark.slow
def test_torchrun_environment_is_detected(no_launcher_env, tmp_path):
    script = textwrap.dedent("""
        import json, torch
        from hiera_video.engine import launch
        from hiera_video.utils import distributed as du
        ctx = launch.init_distributed(timeout_minutes=1)
        mean = du.all_reduce_mean(torch.tensor([float(ctx.rank)])).item()
        print(json.dumps([ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size, ctx.backend,
                          ctx.launcher, launch.launched_externally(), mean]))
        du.destroy_process_group()
    """)
    port = str(launch._free_local_port())
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, PYTHONPATH=REPO)
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs == [[0, 2, 0, 2, "gloo", "torchrun", True, 0.5], [1, 2, 1, 2, "gloo", "torchrun", True, 0.5]]


def test_slurm_step_environment_is_detected(no_launcher_env):
    env = {"SLURM_STEP_ID": "0", "SLURM_JOB_ID": "123456", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
           "SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "gpu[07-08]"}
    for name, value in env.items():
        no_launcher_env.setenv(name, value)
    spec = launch.detect_launch()
    assert spec == du.LaunchSpec(rank=5, world_size=8, local_rank=1, local_world_size=4,
                                 init_method=f"tcp://gpu07:{launch.slurm_port('123456')}", launcher="slurm")
    assert launch.launched_externally()
    no_launcher_env.setenv("MASTER_PORT", "29999")
    assert launch.detect_launch().init_method == "tcp://gpu07:29999"


def test_slurm_batch_script_is_a_single_process(no_launcher_env):
    # sbatch's own shell has SLURM_PROCID and SLURM_NTASKS but is not one of the srun tasks.
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}.items():
        no_launcher_env.setenv(name, value)
    assert launch.detect_launch().launcher == "single"
    assert not launch.launched_externally()


def test_single_process_creates_no_process_group(no_launcher_env):
    ctx = launch.init_distributed(use_cuda=False)
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.launcher, ctx.is_main) == (0, 1, None, "single", True)
    assert not dist.is_initialized()
    assert launch.init_distributed() is ctx
    values = torch.tensor([1.0, 2.0])
    mean = du.all_reduce_mean(values)
    assert torch.equal(mean, values) and mean is not values
    assert du.all_gather_object({"a": 1}) == [{"a": 1}]
    assert du.broadcast_object("x") == "x"
    du.barrier()
    with pytest.raises(ValueError, match="already initialised as rank 0 of 1"):
        launch.init_distributed(rank=1, world_size=2)


def test_bad_launch_arguments_fail_clearly(no_launcher_env):
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        launch.init_distributed(rank=0)
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT"):
        launch.init_distributed(rank=0, world_size=2, use_cuda=False)
    with pytest.raises(ValueError, match="rank 3 is outside world size 2"):
        launch.init_distributed(rank=3, world_size=2, init_method="tcp://127.0.0.1:1", use_cuda=False)
    with pytest.raises(ValueError, match="rank 1 is outside world size 1"):
        launch.init_distributed(rank=1, world_size=1, use_cuda=False)
    no_launcher_env.setenv("RANK", "zero")
    no_launcher_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK='zero' is not an integer"):
        launch.detect_launch()
    assert not dist.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_cuda_fails_clearly(no_launcher_env):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        launch.init_distributed(use_cuda=True)


def test_seeds_differ_per_rank_and_worker_and_are_reproducible():
    seeds = {(rank, worker): seed_for(rank, 42, worker) for rank in range(4) for worker in range(4)}
    assert len(set(seeds.values())) == 16
    assert seeds == {(rank, worker): seed_for(rank, 42, worker) for rank in range(4) for worker in range(4)}
    assert seed_for(1, 0) != seed_for(0, 1)  # not base_seed + rank
    assert seed_for(0, 42) == seeds[(0, 0)]
    assert all(0 <= s < 2**63 for s in seeds.values())
    torch.manual_seed(seed_for(3, 42, 2))  # usable as a torch seed
    with pytest.raises(ValueError, match="rank=-1"):
        seed_for(-1, 0)
