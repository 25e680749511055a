"""Submit a config to Slurm through submitit: one task per GPU (or K CPU tasks), requeued on time limits and
preemption, resuming where it stopped.

    python tools/submit.py --cfg configs/Kinetics/HIERA_L_MAE.yaml --nodes 8 --ngpus 8 --partition learn \\
        --timeout 4320 [KEY VALUE ...]

OUTPUT_DIR defaults to the job directory (--job-dir, default ./slurm_jobs/<name>), so resubmitting the same command
continues the same run. Submitit's logs go to <job dir>/submitit/<job id>_<task>_log.{out,err}.

Feature extraction: the same Slurm options, then `extract-features` and exactly the arguments of
tools/extract_features.py (checked before submitting); every task takes its share of the videos, and a requeued
job (time limit, preemption) runs again and skips the videos already done:

    python tools/submit.py --nodes 4 --ngpus 8 --partition learn --timeout 600 \\
        extract-features --cfg configs/Kinetics/HIERA_B_16x224.yaml --weights W --input CSV_OR_PATHS --output DIR \\
        [--stage -1] [--pool mean|none] [--window SECONDS --stride SECONDS] [KEY VALUE ...]

The job's name defaults to features_<config name>; its tasks start in the folder you submit from.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import submitit
from fvcore.common.config import CfgNode

from hiera_video.cli import extract_features
from hiera_video.config import ConfigError, load_config
from hiera_video.data.build import per_process_batch
from hiera_video.engine.slurm import SlurmCommand, SlurmJob

# Seconds between Slurm's time-limit warning (SIGUSR2) and the limit: time to finish a step and save.
SIGNAL_DELAY_S = 120
# The command that submits tools/extract_features.py: every argument after it is that tool's.
EXTRACT_FEATURES = "extract-features"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The Slurm options; `command` holds the arguments after `extract-features` (None: train/test --cfg)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    at = argv.index(EXTRACT_FEATURES) if EXTRACT_FEATURES in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [SLURM OPTIONS] --cfg CFG [KEY VALUE ...]\n"
                                           f"       %(prog)s [SLURM OPTIONS] {EXTRACT_FEATURES} --cfg CFG --input ... "
                                           "--output DIR [...]")
    parser.add_argument("--cfg", default=None, help="config YAML file to train/test")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--ngpus", type=int, default=None, help="GPUs per node, one task each (default: NUM_GPUS)")
    parser.add_argument("--tasks-per-node", type=int, default=None,
                        help="CPU tasks per node when --ngpus is 0 (default: NUM_CPU_PROCS)")
    parser.add_argument("--cpus-per-task", type=int, default=10)
    parser.add_argument("--mem", type=int, default=None, help="memory per node in GB (default: Slurm's)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--qos", default=None)
    parser.add_argument("--constraint", default=None)
    parser.add_argument("--comment", default=None)
    parser.add_argument("--exclude", default=None, help="nodes to avoid, Slurm syntax")
    parser.add_argument("--timeout", type=int, default=4320, help="time limit per run in minutes")
    parser.add_argument("--max-requeues", type=int, default=20, help="requeues after time limits before giving up")
    parser.add_argument("--job-dir", default=None, help="job folder (default ./slurm_jobs/<name>)")
    parser.add_argument("--name", default=None,
                        help="job name (default: the config file's name; features_<it> for extract-features)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv[:at])
    args.command = argv[at + 1:] if at < len(argv) else None
    if args.command is None and args.cfg is None:
        parser.error(f"the following arguments are required: --cfg (or {EXTRACT_FEATURES} and its arguments)")
    if args.command is not None and (args.cfg or args.opts):
        parser.error(f"--cfg and KEY VALUE overrides of a feature extraction go after {EXTRACT_FEATURES}, as on "
                     f"the command line of tools/extract_features.py")
    return args


def job_layout(args: argparse.Namespace, cfg: CfgNode) -> tuple[int, int]:
    """(GPUs per node, tasks per node) after checking the config can run that way; errors say what to change."""
    ngpus = cfg.NUM_GPUS if args.ngpus is None else args.ngpus
    if ngpus < 0 or args.nodes < 1:
        raise ConfigError("--ngpus must be >= 0 and --nodes >= 1")
    training = args.command is None  # feature extraction runs on whatever devices its tasks get
    if training and ngpus == 0 and cfg.NUM_GPUS > 0 and args.ngpus is not None:
        raise ConfigError(f"The config asks for NUM_GPUS={cfg.NUM_GPUS} but --ngpus is 0: pass --ngpus "
                          f"{cfg.NUM_GPUS}, or add NUM_GPUS 0 to run on CPUs")
    tasks = ngpus if ngpus > 0 else (args.tasks_per_node or cfg.NUM_CPU_PROCS)
    if training and cfg.TRAIN.ENABLE:
        per_process_batch(cfg.TRAIN.BATCH_SIZE, args.nodes * tasks, cfg.TRAIN.ACCUM_ITER, "TRAIN.BATCH_SIZE")
    return ngpus, tasks


def config_name(cfg_file: str) -> str:
    return os.path.splitext(os.path.basename(cfg_file))[0]


def job_folder(args: argparse.Namespace, name: str) -> str:
    return os.path.abspath(args.job_dir or os.path.join("slurm_jobs", name))


def layout_or_exit(args: argparse.Namespace, cfg: CfgNode) -> tuple[int, int]:
    try:
        return job_layout(args, cfg)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"Not submitted: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    job: Callable[[], Any]
    if args.command is None:
        name = args.name or config_name(args.cfg)
        job_dir = job_folder(args, name)
        opts = list(args.opts)
        if "OUTPUT_DIR" not in opts[0::2]:
            opts += ["OUTPUT_DIR", job_dir]
        cfg = load_config(args.cfg, opts)
        ngpus, tasks = layout_or_exit(args, cfg)
        cfg.defrost()
        cfg.NUM_GPUS, cfg.NUM_SHARDS = ngpus, args.nodes
        cfg.freeze()
        job = SlurmJob(cfg.dump(), args.max_requeues, use_cuda=ngpus > 0)
        results = f"Checkpoints and json_stats.log: {cfg.OUTPUT_DIR}"
    else:
        # The arguments are checked here, as the tool checks them, so that a typo fails now and not in the queue.
        prog = f"{os.path.basename(sys.argv[0])} [SLURM OPTIONS] {EXTRACT_FEATURES}"
        request, cfg, _ = extract_features.load_request(args.command, prog)
        name = args.name or f"features_{config_name(request.cfg[0])}"
        job_dir = job_folder(args, name)
        ngpus, tasks = layout_or_exit(args, cfg)
        job = SlurmCommand(extract_features.main, args.command, args.max_requeues)
        results = f"Features, index.csv and failed.csv: {os.path.abspath(request.output)}"

    executor = submitit.AutoExecutor(folder=os.path.join(job_dir, "submitit", "%j"),
                                     slurm_max_num_timeout=args.max_requeues)
    extra = {key: value for key, value in (("account", args.account), ("qos", args.qos),
                                           ("constraint", args.constraint), ("comment", args.comment),
                                           ("exclude", args.exclude)) if value}
    executor.update_parameters(
        name=name,
        nodes=args.nodes,
        tasks_per_node=tasks,
        **({"gpus_per_node": ngpus} if ngpus else {}),
        **({"mem_gb": args.mem} if args.mem else {}),
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.timeout,
        slurm_partition=args.partition,
        slurm_signal_delay_s=SIGNAL_DELAY_S,
        # A task that fails ends the step: the others would otherwise wait for it in a collective until
        # DIST_TIMEOUT_MINUTES (NCCL does not notice a dead peer).
        slurm_srun_args=["--kill-on-bad-exit=1"],
        slurm_additional_parameters={"requeue": True},
        **{f"slurm_{key}": value for key, value in extra.items()},
    )
    submitted = executor.submit(job)
    print(f"Submitted job {submitted.job_id}: {args.nodes} node(s) x {tasks} task(s), {ngpus} GPU(s) per node")
    print(results)
    print(f"Slurm logs: {os.path.join(job_dir, 'submitit', str(submitted.job_id))}")


if __name__ == "__main__":
    main()
