"""Launching: where the processes of this job come from, and starting them on this machine.

Where the processes come from, in the order `init_distributed` looks:
1. explicit arguments (`launch_local` below, or a manual multi-machine launch with --init_method);
2. torchrun (`env://`: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
3. Slurm: the variables of this `srun` step (submitit's jobs are one; its local executor's JobEnvironment), not
   of the allocation: the rendezvous is on the first host of the step (where Slurm places task 0) at a port derived
   from the job id. `launched_externally` tells a step of one task per machine with `--num_shards` (each task
   starts its machine's processes) from one task per GPU, and refuses the contradictions;
4. otherwise a single process, which creates no process group at all.
The process group, the DistContext and the collectives are hiera_video.utils.distributed.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Callable

import submitit
import torch.multiprocessing
from submitit.slurm.slurm import _parse_node_list
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from hiera_video.utils.distributed import (
    DistContext,
    LaunchSpec,
    current_context,
    destroy_process_group,
    init_process_group,
)

# Slurm jobs without MASTER_PORT rendezvous on SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN: jobs sharing a node
# get different ports, and a requeued job (same id) the same one. The range ends below Linux's ephemeral ports
# (32768+, net.ipv4.ip_local_port_range), which any outgoing connection on the node may hold.
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 12000


# ----------------------------------------------------------------------------------------------- detection
def _env_int(name: str, default: int | None = None, env: Mapping[str, str] = os.environ) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _torchrun_launch(env: Mapping[str, str]) -> LaunchSpec | None:
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return LaunchSpec(rank=_env_int("RANK", env=env), world_size=_env_int("WORLD_SIZE", env=env),
                      local_rank=_env_int("LOCAL_RANK", 0, env), local_world_size=_env_int("LOCAL_WORLD_SIZE", 1, env),
                      init_method="env://", launcher="torchrun")


def slurm_port(job_id: str) -> int:
    """The rendezvous port of Slurm job `job_id` (an array task's id counts its digits only)."""
    return SLURM_PORT_BASE + int("".join(c for c in job_id if c.isdigit())) % SLURM_PORT_SPAN


def _slurm_step_launch(env: Mapping[str, str]) -> LaunchSpec:
    """This task's place in its `srun` step. The step's variables, not SLURM_NTASKS / SLURM_JOB_*: those describe
    the allocation, which a step inside `salloc` or a step of one task per node does not fill."""
    world_size = _env_int("SLURM_STEP_NUM_TASKS", env=env)
    num_nodes = _env_int("SLURM_STEP_NUM_NODES", 1, env)
    init_method = None
    if world_size > 1:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        address = env.get("MASTER_ADDR") or _parse_node_list(nodes)[0]
        port = _env_int("MASTER_PORT", slurm_port(env.get("SLURM_JOB_ID", "0")), env)
        init_method = f"tcp://{address}:{port}"
    return LaunchSpec(rank=_env_int("SLURM_PROCID", env=env), world_size=world_size,
                      local_rank=_env_int("SLURM_LOCALID", 0, env), local_world_size=max(1, world_size // num_nodes),
                      init_method=init_method, launcher="slurm")


def _submitit_local_launch() -> LaunchSpec:
    job_env = submitit.JobEnvironment()
    world_size = job_env.num_tasks
    init_method = None
    if world_size > 1:
        address = os.environ.get("MASTER_ADDR") or job_env.hostnames[0]
        init_method = f"tcp://{address}:{_env_int('MASTER_PORT', slurm_port(job_env.raw_job_id))}"
    return LaunchSpec(rank=job_env.global_rank, world_size=world_size, local_rank=job_env.local_rank,
                      local_world_size=max(1, world_size // job_env.num_nodes), init_method=init_method,
                      launcher=job_env.name())


def _slurm_launch(env: Mapping[str, str]) -> LaunchSpec | None:
    if env.get("SUBMITIT_EXECUTOR") == "local":
        return _submitit_local_launch()
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        # An `srun` step (submitit's jobs are one). The batch script itself has SLURM_PROCID and SLURM_NTASKS but
        # no SLURM_STEP_ID: it is one process, not one of the job's tasks.
        return _slurm_step_launch(env)
    return None


def detect_launch(env: Mapping[str, str] | None = None) -> LaunchSpec:
    """The launch described by the environment (default os.environ): torchrun, then Slurm/submitit, else a single
    process."""
    env = os.environ if env is None else env
    return _torchrun_launch(env) or _slurm_launch(env) or LaunchSpec(0, 1, 0, 1, None, "single")


def launched_externally(procs_per_machine: int = 1, num_shards: int = 1, shard_id: int = 0,
                        spec: LaunchSpec | None = None) -> bool:
    """True when torchrun or Slurm started every process of the job (join them, start none here); False when this
    process starts `procs_per_machine` processes itself: alone, or as shard `shard_id` of `num_shards` that `srun`
    started once per machine (a PySlowFast-style `--num_shards` launch). `spec` defaults to `detect_launch()`.

    Raises ValueError naming the fix for a Slurm step of one task per machine with procs_per_machine > 1 outside
    such a launch: joining would run one process per machine with its whole share of the batch.
    """
    spec = detect_launch() if spec is None else spec
    if spec.world_size == 1:
        return False
    if spec.launcher != "slurm" or spec.local_world_size > 1 or procs_per_machine == 1:
        return True
    if num_shards != spec.world_size:
        raise ValueError(
            f"Slurm started one task per machine ({spec.world_size} tasks) but the config asks for "
            f"{procs_per_machine} processes per machine (NUM_GPUS / NUM_CPU_PROCS) with NUM_SHARDS={num_shards}: "
            f"start one task per GPU (srun --ntasks-per-node={procs_per_machine}, or tools/submit.py), or make each "
            f"task a shard (--num_shards {spec.world_size} --shard_id $SLURM_PROCID)")
    if shard_id != spec.rank:
        raise ValueError(f"--shard_id {shard_id} but this is task {spec.rank} of the Slurm step: pass --shard_id "
                         f"$SLURM_PROCID (one task per machine)")
    return False


# ------------------------------------------------------------------------------------------------------ init
def init_distributed(init_method: str | None = None, rank: int | None = None, world_size: int | None = None,
                     local_rank: int = 0, use_cuda: bool | None = None, timeout_minutes: float = 30,
                     local_world_size: int | None = None) -> DistContext:
    """Joins (or, alone, skips) the process group and picks this process's device; returns its DistContext.

    Explicit `rank` and `world_size` (pass both) override the environment: `local_rank` is then used as given,
    `local_world_size` defaults to world_size and `init_method` to env://. Otherwise the launch comes from
    `detect_launch()`, and an explicit `init_method` replaces the detected one. `use_cuda=None` means "if CUDA is
    available". Calling it again returns the same context; leave with utils.distributed.destroy_process_group().
    """
    joined = current_context()
    if joined is not None and rank is None and world_size is None:
        return joined
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError(f"pass both rank and world_size, got rank={rank}, world_size={world_size}")
        spec = LaunchSpec(rank, world_size, local_rank, local_world_size or world_size,
                          None if world_size == 1 else "env://", "arguments")
    else:
        spec = detect_launch()
    if init_method is not None and spec.world_size > 1:
        spec = replace(spec, init_method=init_method)
    return init_process_group(spec, use_cuda, timeout_minutes)


# ------------------------------------------------------------------------------------------ local spawning
# Seconds the processes of launch_local get to end by themselves once one failed, before SIGTERM, then SIGKILL.
SIBLING_GRACE_S = 5.0

class LocalLaunchError(RuntimeError):
    """A process started by launch_local failed; the message holds the traceback of the first one to fail, or
    how a process died without one."""


def _free_local_port() -> int:
    # Ask the OS for an unused port; another process could take it before rank 0 binds it, which is unlikely on
    # a test or single-user machine and fails loudly (address in use) rather than silently.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dump(path: str, obj: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _load(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def _run_local_process(local_rank: int, fn: Callable[..., Any], args: Sequence[Any], num_procs: int,
                       shard_id: int, num_shards: int, init_method: str, use_cuda: bool | None,
                       timeout_minutes: float, exchange_dir: str) -> None:
    try:
        ctx = init_distributed(init_method=init_method, rank=shard_id * num_procs + local_rank,
                               world_size=num_shards * num_procs, local_rank=local_rank, use_cuda=use_cuda,
                               timeout_minutes=timeout_minutes, local_world_size=num_procs)
        result = fn(ctx, *args)
    except BaseException:
        # Written before this process exits, hence before its peers fail on the broken connection: the parent
        # can tell the cause from the consequences.
        _dump(os.path.join(exchange_dir, f"{local_rank}.error"), (time.time(), traceback.format_exc()))
        raise
    finally:
        destroy_process_group()
    _dump(os.path.join(exchange_dir, f"{local_rank}.result"), result)


def _describe_failure(exchange_dir: str, num_procs: int, shard_id: int, error: ProcessException) -> str:
    failures = []
    for local_rank in range(num_procs):
        path = os.path.join(exchange_dir, f"{local_rank}.error")
        if os.path.exists(path):
            failed_at, trace = _load(path)
            failures.append((failed_at, local_rank, trace))
    parts = []
    if failures:
        _, local_rank, trace = min(failures)
        parts.append(f"local process {local_rank} of {num_procs} (rank {shard_id * num_procs + local_rank}) "
                     f"failed first:\n{trace}")
    if isinstance(error, ProcessExitedException):  # died without a Python exception: a signal, os._exit, OOM
        parts.append(f"torch.multiprocessing: {error}")
    return "\n".join(parts) or str(error)


def launch_local(fn: Callable[..., Any], num_procs: int, args: Sequence[Any] = (), init_method: str | None = None,
                 *, num_shards: int = 1, shard_id: int = 0, use_cuda: bool | None = None,
                 timeout_minutes: float = 30) -> list[Any]:
    """Runs `fn(ctx, *args)` in `num_procs` new processes of this machine (spawned) and returns their results.

    Process i gets rank shard_id * num_procs + i of num_shards * num_procs. `init_method` defaults to a free
    port on 127.0.0.1 (one machine); with several shards pass the same tcp://host:port on every machine. If any
    process fails, the others are ended within 2 x SIBLING_GRACE_S and LocalLaunchError reports the first
    failure's traceback (the others usually fail only because their peer left). `fn`, `args` and the results must
    be picklable.
    """
    if num_procs < 1:
        raise ValueError(f"num_procs must be >= 1, got {num_procs}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is outside num_shards {num_shards}")
    if init_method is None:
        if num_shards > 1:
            raise ValueError("several shards need a shared init_method such as tcp://<host of shard 0>:<port>")
        init_method = f"tcp://127.0.0.1:{_free_local_port()}"
    # Results and errors travel through files: a queue read after join() can deadlock on large results.
    with tempfile.TemporaryDirectory(prefix="launch_local_") as exchange_dir:
        try:
            processes = torch.multiprocessing.start_processes(
                _run_local_process, nprocs=num_procs, join=False, start_method="spawn",
                args=(fn, tuple(args), num_procs, shard_id, num_shards, init_method, use_cuda, timeout_minutes,
                      exchange_dir))
            # When one fails, the others get SIGTERM after SIBLING_GRACE_S and SIGKILL after as long again: a
            # training process takes SIGTERM for a stop request, and one blocked in a collective cannot act on it.
            while not processes.join(grace_period=SIBLING_GRACE_S):
                pass
        except ProcessException as error:
            raise LocalLaunchError(_describe_failure(exchange_dir, num_procs, shard_id, error)) from error
        results = []
        for local_rank in range(num_procs):
            path = os.path.join(exchange_dir, f"{local_rank}.result")
            if not os.path.exists(path):  # a clean exit without a return, e.g. sys.exit(0) inside fn
                raise LocalLaunchError(f"local process {local_rank} of {num_procs} exited without returning")
            results.append(_load(path))
        return results
