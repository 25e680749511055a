"""Running a config on Slurm through submitit, surviving time limits and preemption.

Every Slurm task runs `SlurmJob.__call__`: it joins the process group from the Slurm environment and runs the
config. When Slurm warns of the time limit (SIGUSR2, `--signal`), preempts the job or requeues it (SIGTERM), the
trainer saves a mid-epoch checkpoint at the next iteration boundary and stops; after a time-limit warning rank 0
requeues the job itself (preemption and `scontrol requeue` requeue it already). The requeued job runs the same
call again and auto-resume continues from that checkpoint, at the same iteration, with the same data order.

`SlurmCommand` runs a command-line tool instead, on every task, for tools whose rerun continues where a run stopped
(tools/extract_features.py skips the videos it finished); each task finds its place in the job from the Slurm
environment, as under `srun`. It owns the stop signals too: after a time-limit warning every task still working asks
for the requeue (the first request counts), and the SIGTERM of a requeue or preemption ends every task at once.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Callable

import submitit
from fvcore.common.config import CfgNode

from hiera_video.engine.launch import init_distributed
from hiera_video.engine.preemption import StopRequested
from hiera_video.engine.runner import run
from hiera_video.utils.distributed import destroy_process_group
from hiera_video.utils.stop_signals import stop_signals_held

logger = logging.getLogger(__name__)


def restart_count() -> int:
    """How many times Slurm has restarted this job (0 on the first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeue_self(max_requeues: int) -> bool:
    """Asks Slurm to requeue this job unless it has already been requeued `max_requeues` times; whether it did.
    Another task's requeue of the same job, a moment earlier, makes this one fail harmlessly: logged."""
    job_id = os.environ.get("SLURM_JOB_ID")
    restarts = restart_count()
    if not job_id:
        logger.warning("Not running under Slurm: nothing to requeue; rerun the same command to resume")
        return False
    if restarts >= max_requeues:
        logger.error("Job %s was already requeued %d times (the limit): not requeueing; resubmit to resume",
                     job_id, restarts)
        return False
    # Logged first: the SIGTERM that the requeue sends can end this process before scontrol returns. A thread of
    # this process may take that signal while the main thread blocks it, and Python then runs the handler in the
    # main thread anyway; scontrol itself inherits the blocked signals and completes the request.
    logger.warning("Requeueing job %s (requeue %d of at most %d)", job_id, restarts + 1, max_requeues)
    with stop_signals_held():
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if done.returncode:
        logger.warning("scontrol requeue %s failed (exit status %d; another task may have requeued it a moment ago): "
                       "%s", job_id, done.returncode, done.stderr.strip())
        return False
    return True


class SlurmJob(submitit.helpers.Checkpointable):
    """The function every Slurm task runs: `SlurmJob(cfg_yaml, max_requeues)()`."""

    def __init__(self, cfg_yaml: str, max_requeues: int, use_cuda: bool) -> None:
        self.cfg_yaml = cfg_yaml
        self.max_requeues = max_requeues
        self.use_cuda = use_cuda

    def __call__(self) -> dict[str, Any]:
        cfg = CfgNode.load_cfg(self.cfg_yaml)
        cfg.freeze()
        ctx = init_distributed(use_cuda=self.use_cuda, timeout_minutes=cfg.DIST_TIMEOUT_MINUTES)
        if restart_count():
            logger.warning("Slurm restart %d of job %s: resuming from %s", restart_count(),
                           os.environ.get("SLURM_JOB_ID"), cfg.OUTPUT_DIR)
        try:
            return run(ctx, cfg)
        except StopRequested as stop:
            logger.warning("%s", stop)
            if ctx.is_main and stop.signal_name == "SIGUSR2":  # the time-limit warning: requeue ourselves
                requeue_self(self.max_requeues)
            # Exit without a result, like submitit's own requeue path: the requeued run will write it.
            sys.exit(-1)
        finally:
            # Leaving a gloo/NCCL group alive at interpreter exit aborts the process ("terminate called ...").
            destroy_process_group()


class SlurmCommand(submitit.helpers.Checkpointable):
    """A tool's `main(argv)` run by every Slurm task: `SlurmCommand(main, argv, max_requeues)()`; `main` finds the
    task's rank in the Slurm environment (hiera_video.engine.launch.detect_launch) and returns an exit status.

    Nothing to save on a stop: the tool's outputs are its checkpoint (written atomically, skipped by a rerun). The
    time-limit warning (SIGUSR2) has every task still running `main` requeue the job (the first request counts; at
    most `max_requeues` times) and leave; a task that has finished its share ignores it. The SIGTERM of a requeue or
    a preemption ends every task. The requeued job runs the command again and it continues. (submitit's handler,
    replaced here, has only task 0 requeue, even when it has finished while others work, and runs `scontrol requeue`
    unprotected from the SIGTERM that the requeue sends.)
    """

    def __init__(self, main: Callable[[list[str]], int], argv: Sequence[str], max_requeues: int) -> None:
        self.main = main
        self.argv = list(argv)
        self.max_requeues = max_requeues

    def __call__(self) -> int:
        if restart_count():
            logger.warning("Slurm restart %d of job %s: running the command again, it continues where it stopped",
                           restart_count(), os.environ.get("SLURM_JOB_ID"))
        task = int(os.environ.get("SLURM_PROCID", "0") or 0)

        def on_time_limit(signum: int, frame: Any) -> None:
            logger.warning("Received SIGUSR2 (the time-limit warning) on task %d", task)
            if requeue_self(self.max_requeues):
                sys.exit(-1)  # like submitit's requeue path: no result, the requeued run writes it

        def on_terminate(signum: int, frame: Any) -> None:
            logger.warning("Received SIGTERM on task %d: stopping; a rerun continues where this one stopped", task)
            sys.exit(-1)

        signal.signal(signal.SIGUSR2, on_time_limit)
        signal.signal(signal.SIGTERM, on_terminate)
        try:
            status = self.main(self.argv)
        finally:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # from now on the requeue is the running tasks' business
        if status:
            raise RuntimeError(f"the command ended with exit status {status}")  # the job fails, as the tool would
        return status
