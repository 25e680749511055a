"""Jobs on the local Slurm cluster: plain sbatch, submitit multi-task jobs, process groups, and requeues.

The requeue tests pin down what tools/submit.py and the trainer rely on (observed with Slurm 22.05, submitit 1.5):
- Time-limit warning: submitit asks for `--signal=USR2@<slurm_signal_delay_s>`. slurmctld checks time limits every
  30 s and sends USR2 to every task of the srun step at the first check with less than delay + 30 s left. submitit's
  handler calls the callable's checkpoint() on global rank 0, saves the submission it returns, runs
  `scontrol requeue` itself and exits; the job starts again from that checkpointed state.
- `scontrol requeue` from outside (an admin, or a preemption): every task gets SIGCONT + SIGTERM, which submitit
  only logs ("Bypassing signal SIGTERM"), then SIGKILL after KillWait. checkpoint() is NOT called: the job starts
  again from the callable as first submitted, so only what the job saved by itself survives.
A requeued job waits cred_expire (10 s here, 120 s by default) before it may start again.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit
import torch

from hiera_video.engine import launch
from hiera_video.utils import distributed as du
from tests.slurm.jobs import ENDED_STATES, job_fields, wait_until

REPO = Path(__file__).resolve().parents[2]
# The job callables below live in this test module, which the job's Python cannot import: pickle them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------------------------------ helpers
def wait_for_results(job: submitit.Job, timeout_s: float) -> list[Any]:
    """job.results(), bounded. submitit's own wait has no timeout and, without sacct, never notices a job that
    ended without writing its results, so we also watch the job's state."""
    def finished() -> bool:
        if all(job.task(i).paths.result_pickle.exists() for i in range(job.num_tasks)):
            return True
        state = job_fields(job.job_id).get("JobState", "")
        if state in ENDED_STATES:
            time.sleep(2)  # results are written just before the task exits
            if not all(job.task(i).paths.result_pickle.exists() for i in range(job.num_tasks)):
                pytest.fail(f"job {job.job_id} ended {state} without results:\n{job.stderr()}")
        return False

    wait_until(finished, timeout_s, f"the results of job {job.job_id}")
    return job.results()


def slurm_executor(folder: Path, cluster, **params: Any) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(slurm_partition=cluster.partition, nodes=1, tasks_per_node=1, cpus_per_task=1,
                               mem_gb=1, timeout_min=5,
                               slurm_setup=[f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"])
    executor.update_parameters(**params)
    return executor


# ------------------------------------------------------------------------------------ what jobs run
def task_identity() -> tuple[int, int, int, str]:
    env = submitit.JobEnvironment()
    return env.global_rank, env.num_tasks, env.local_rank, env.hostname


def average_over_tasks() -> dict[str, Any]:
    ctx = launch.init_distributed(use_cuda=False, timeout_minutes=2)
    try:
        return {"rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank,
                "local_world_size": ctx.local_world_size, "backend": ctx.backend, "launcher": ctx.launcher,
                "init_method": launch.detect_launch().init_method,
                "mean": du.all_reduce_mean(torch.tensor([float(ctx.rank)])).item(),
                "gathered": du.all_gather_object(ctx.rank * 10)}
    finally:
        du.destroy_process_group()


class StepCounter(submitit.helpers.Checkpointable):
    """Counts slow steps, logging events as JSON lines; a run started by a requeue stops 4 steps after it starts.

    With resume_from_log, a run continues from the last step in the log (as a trainer resumes from its own
    checkpoint files); otherwise from the step this object was pickled with (submitit's checkpoint()).
    """

    def __init__(self, log_path: str, resume_from_log: bool, max_steps: int = 600) -> None:
        self.log_path = log_path
        self.resume_from_log = resume_from_log
        self.max_steps = max_steps
        self.step = 0

    def _log(self, **event: Any) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps({**event, "time": time.time()}) + "\n")

    def __call__(self) -> dict[str, int]:
        if self.resume_from_log and os.path.exists(self.log_path):
            self.step = max(e["step"] for e in read_events(self.log_path))
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        self._log(event="start", step=self.step, restarts=restarts)
        stop_at = self.step + 4 if restarts else self.max_steps
        while self.step < stop_at:
            time.sleep(0.25)
            self.step += 1
            self._log(event="step", step=self.step)
        return {"step": self.step, "restarts": restarts}

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        self._log(event="checkpoint", step=self.step)
        return super().checkpoint()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------- tests
def test_commands_use_the_private_cluster(slurm_cluster):
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True).stdout
    config = {key.strip(): value.strip() for key, _, value in (line.partition(" = ") for line in out.splitlines())}
    assert config["SLURM_CONF"] == str(slurm_cluster.conf)
    assert config["ClusterName"] == "hieravideotest"
    assert (config["SlurmctldPort"], config["SlurmdPort"]) != ("6817", "6818")  # the defaults, left to the system


def test_sbatch_jobs_end_with_their_exit_status(slurm_cluster, tmp_path, cancel_at_exit):
    def sbatch(command: str, output: Path) -> str:
        out = subprocess.run(["sbatch", "--parsable", "-p", slurm_cluster.partition, "-o", str(output), "--wrap",
                              command], capture_output=True, text=True, timeout=30, check=True).stdout
        cancel_at_exit.append(out.strip().split(";")[0])
        return cancel_at_exit[-1]

    good = sbatch("echo hello from job $SLURM_JOB_ID on $(hostname -s) with $SLURM_CONF", tmp_path / "good.out")
    bad = sbatch("exit 3", tmp_path / "bad.out")
    for job_id in (good, bad):
        wait_until(lambda: job_fields(job_id).get("JobState") in ENDED_STATES, 60, f"job {job_id} to end")
    assert (job_fields(good)["JobState"], job_fields(good)["ExitCode"]) == ("COMPLETED", "0:0")
    assert (job_fields(bad)["JobState"], job_fields(bad)["ExitCode"]) == ("FAILED", "3:0")
    assert (tmp_path / "good.out").read_text().strip() == (f"hello from job {good} on {slurm_cluster.node} "
                                                           f"with {slurm_cluster.conf}")


def test_submitit_job_runs_one_result_per_task(slurm_cluster, tmp_path, cancel_at_exit):
    executor = slurm_executor(tmp_path, slurm_cluster, tasks_per_node=2)
    job = executor.submit(task_identity)
    cancel_at_exit.append(job.job_id)
    host = socket.gethostname()
    assert wait_for_results(job, 60) == [(0, 2, 0, host), (1, 2, 1, host)]


def test_slurm_tasks_form_a_gloo_process_group(slurm_cluster, tmp_path, cancel_at_exit):
    job = slurm_executor(tmp_path, slurm_cluster, tasks_per_node=2).submit(average_over_tasks)
    cancel_at_exit.append(job.job_id)
    results = wait_for_results(job, 90)
    port = launch.SLURM_PORT_BASE + int(job.job_id) % launch.SLURM_PORT_SPAN
    for rank, result in enumerate(results):
        assert result == {"rank": rank, "world_size": 2, "local_rank": rank, "local_world_size": 2,
                          "backend": "gloo", "launcher": "slurm", "init_method": f"tcp://{slurm_cluster.node}:{port}",
                          "mean": 0.5, "gathered": [0, 10]}


def test_time_limit_signal_checkpoints_and_requeues_with_saved_state(slurm_cluster, tmp_path, cancel_at_exit):
    # 1-minute limit, USR2 20 s before it: slurmctld's 30-s checks deliver it 10-40 s into the run.
    executor = slurm_executor(tmp_path, slurm_cluster, timeout_min=1, slurm_signal_delay_s=20)
    log = tmp_path / "events.jsonl"
    job = executor.submit(StepCounter(str(log), resume_from_log=False))
    cancel_at_exit.append(job.job_id)
    result = wait_for_results(job, 110)[0]

    events = read_events(log)
    starts = [e for e in events if e["event"] == "start"]
    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    assert [s["restarts"] for s in starts] == [0, 1]
    assert len(checkpoints) == 1 and checkpoints[0]["step"] > 0
    assert checkpoints[0]["time"] - starts[0]["time"] < 60  # warned before the time limit
    assert starts[1]["step"] == checkpoints[0]["step"]  # the second run began from the checkpointed object
    assert result == {"step": checkpoints[0]["step"] + 4, "restarts": 1}
    assert "Caught signal SIGUSR2" in job.stderr()
    assert job_fields(job.job_id)["Restarts"] == "1"


def test_scontrol_requeue_restarts_the_job_as_submitted(slurm_cluster, tmp_path, cancel_at_exit):
    executor = slurm_executor(tmp_path, slurm_cluster, timeout_min=5)
    log = tmp_path / "events.jsonl"
    job = executor.submit(StepCounter(str(log), resume_from_log=True))
    cancel_at_exit.append(job.job_id)
    wait_until(lambda: log.exists() and len(read_events(log)) >= 5, 60, "the job to make progress")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)
    result = wait_for_results(job, 60)[0]

    events = read_events(log)
    starts = [i for i, e in enumerate(events) if e["event"] == "start"]
    assert [events[i]["restarts"] for i in starts] == [0, 1]
    assert not [e for e in events if e["event"] == "checkpoint"]  # SIGTERM does not reach checkpoint()
    last_step_before_restart = events[starts[1] - 1]["step"]
    assert last_step_before_restart >= 4
    assert events[starts[1]]["step"] == last_step_before_restart  # resumed only thanks to its own log
    assert result == {"step": last_step_before_restart + 4, "restarts": 1}
    assert "Bypassing signal SIGTERM" in job.stderr()
