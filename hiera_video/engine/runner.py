"""One job = train (TRAIN.ENABLE) then test (TEST.ENABLE) a config, in every process of the job.

`launch(cfg, ...)` decides how many processes this machine runs (torchrun, NUM_GPUS, NUM_CPU_PROCS) and calls
`run(ctx, cfg)` in each; tools/run_net.py and tools/submit.py both come through here.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr

from hiera_video.data.build import per_process_batch
from hiera_video.data.demo import optional_settings, read_manifest, write_demo_dataset
from hiera_video.data.video_io import set_decoder_log_level
from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine import launch as launcher
from hiera_video.engine import parallel
from hiera_video.engine.ema import ema_statistics, load_test_ema
from hiera_video.engine.logging import log_json_stats, setup_logging
from hiera_video.engine.preemption import StopFlag, StopRequested
from hiera_video.engine.trainer import Trainer
from hiera_video.models.complexity import count_gmacs, count_params
from hiera_video.models.weights import load_pretrained, load_state_file
from hiera_video.tasks import build_task
from hiera_video.tasks.base import EvaluationInterrupted
from hiera_video.utils import distributed as du
from hiera_video.utils.seeding import seed_everything, seed_for

logger = logging.getLogger(__name__)


def check_layout(cfg: CfgNode, world_size: int, external: bool) -> None:
    """Fails early, saying what to change, when the config cannot run with `world_size` processes here.

    `external`: torchrun or Slurm started this process, one per device. Clusters that bind one GPU per task
    (`--gpus-per-task=1`, `--gpu-bind`) show each process a single device, so only this process needs one;
    otherwise this machine starts NUM_GPUS processes and must see that many.
    """
    if cfg.NUM_GPUS > 0 and not torch.cuda.is_available():
        raise RuntimeError(f"NUM_GPUS={cfg.NUM_GPUS} but no CUDA device is visible: set NUM_GPUS 0 to run on the CPU")
    if not external and cfg.NUM_GPUS > torch.cuda.device_count() > 0:
        raise RuntimeError(f"NUM_GPUS={cfg.NUM_GPUS} but only {torch.cuda.device_count()} CUDA devices are visible: "
                           f"set NUM_GPUS {torch.cuda.device_count()} or make more visible (CUDA_VISIBLE_DEVICES)")
    if cfg.TRAIN.ENABLE:
        per_process_batch(cfg.TRAIN.BATCH_SIZE, world_size, cfg.TRAIN.ACCUM_ITER, "TRAIN.BATCH_SIZE")


def seed_process(cfg: CfgNode, rank: int) -> None:
    """Per-rank seeds derived from RNG_SEED: reproducible runs whose ranks draw different random numbers."""
    seed_everything(seed_for(rank, cfg.RNG_SEED))


def prepare_demo_data(cfg: CfgNode, ctx: du.DistContext) -> None:
    """With DATA.DEMO_DATASET, makes sure PATH_TO_DATA_DIR holds the demo videos of seed DATA.DEMO_SEED, with
    MODEL.NUM_CLASSES directions, DATA.DEMO_PATTERN, DATA.DEMO_DISTRACTOR and DATA.DEMO_NOISE.

    Writes them into a missing or empty folder. A demo folder with these settings (any size) or a folder with a
    train.csv of its own (a user's dataset) is used as it is; a demo folder with other settings is refused.
    """
    root = cfg.DATA.PATH_TO_DATA_DIR
    if not cfg.DATA.DEMO_DATASET:
        return
    manifest = read_manifest(root)
    if manifest is None and g_pathmgr.exists(os.path.join(root, "train.csv")):
        return
    wanted = {"seed": cfg.DATA.DEMO_SEED, "num_classes": cfg.MODEL.NUM_CLASSES,
              "distractor": cfg.DATA.DEMO_DISTRACTOR, "pattern": cfg.DATA.DEMO_PATTERN, "noise": cfg.DATA.DEMO_NOISE}
    if manifest is not None and wanted == {"seed": manifest["seed"], "num_classes": len(manifest["class_names"]),
                                           **optional_settings(manifest)}:
        return
    if ctx.is_main:
        logger.info("Writing the demo dataset (DATA.DEMO_SEED %d, %d directions, DATA.DEMO_PATTERN %s, "
                    "DATA.DEMO_DISTRACTOR %g, DATA.DEMO_NOISE %g) into %s", cfg.DATA.DEMO_SEED, cfg.MODEL.NUM_CLASSES,
                    cfg.DATA.DEMO_PATTERN, cfg.DATA.DEMO_DISTRACTOR, cfg.DATA.DEMO_NOISE, root)
        write_demo_dataset(root, num_classes=cfg.MODEL.NUM_CLASSES, seed=cfg.DATA.DEMO_SEED,
                           distractor=cfg.DATA.DEMO_DISTRACTOR, pattern=cfg.DATA.DEMO_PATTERN,
                           noise=cfg.DATA.DEMO_NOISE)
    du.barrier()


def test_weights_path(cfg: CfgNode, is_main: bool = True) -> str:
    """The weights a test of `cfg` uses: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in OUTPUT_DIR (rank
    0's choice: all ranks call this), else TRAIN.CHECKPOINT_FILE_PATH; '' when none."""
    return cfg.TEST.CHECKPOINT_FILE_PATH or ckpt.agreed_latest_checkpoint(cfg.OUTPUT_DIR, is_main) or \
        cfg.TRAIN.CHECKPOINT_FILE_PATH


def load_test_weights(cfg: CfgNode, model: torch.nn.Module, is_main: bool) -> str:
    """Loads the weights of `test_weights_path` into `model`. Returns the path used ('' when none: the model stays
    as built)."""
    path = test_weights_path(cfg, is_main)
    if not path:
        logger.warning("TEST.ENABLE without any checkpoint to load: testing the freshly initialised model")
        return ""
    report = load_pretrained(model, load_state_file(path))
    logger.info("Testing weights from %s: %s", path, report.summary())
    return path


def log_model_info(model: torch.nn.Module, input_shape: tuple[int, ...]) -> None:
    params = count_params(model)
    try:
        gmacs = count_gmacs(model, (1, *input_shape))
    except Exception as exc:  # a complexity count must never stop training
        logger.warning("Could not count GMACs: %s", exc)
        gmacs = float("nan")
    logger.info("Model: %.2fM parameters, %.1f GMACs per %s clip", params / 1e6, gmacs,
                "x".join(map(str, input_shape)))


def run(ctx: du.DistContext, cfg: CfgNode) -> dict[str, Any]:
    """Train and/or test `cfg` in this process; returns the test statistics (rank 0) or {}.

    This process owns the stop signals (SIGUSR2, SIGTERM) for the whole run: training then stops with a checkpoint
    to resume from, an interrupted test runs again when the run restarts; either way StopRequested is raised.
    """
    setup_logging(cfg.OUTPUT_DIR, ctx.rank)
    set_decoder_log_level(cfg.DATA.DECODER_LOG_LEVEL)  # data-loader workers inherit it
    g_pathmgr.mkdirs(cfg.OUTPUT_DIR)
    if ctx.is_main:
        logger.info("Running with %d process(es), device %s. Config:\n%s", ctx.world_size, ctx.device, cfg.dump())
    stop = StopFlag().install()
    try:
        return _train_and_test(ctx, cfg, stop)
    finally:
        stop.uninstall()


def _train_and_test(ctx: du.DistContext, cfg: CfgNode, stop: StopFlag) -> dict[str, Any]:
    check_layout(cfg, ctx.world_size, external=ctx.launcher not in ("single", "arguments"))
    seed_process(cfg, ctx.rank)
    prepare_demo_data(cfg, ctx)
    task = build_task(cfg, ctx)
    task.should_stop = lambda: stop.agreed(ctx.device)
    model, ema_model, weights = None, None, ""
    if cfg.TRAIN.ENABLE:
        trainer = Trainer(cfg, task, ctx)
        if ctx.is_main:
            # Counting draws random numbers (MAE masks; the copy's init): the training's stream stays as it was. A
            # sharded model's forward pass is a collective, so rank 0 counts an unsharded copy.
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                log_model_info(task.build_model() if parallel.is_sharded(trainer.model) else trainer.model,
                               task.model_input_shape())
        model = trainer.train(stop)
        ema_model = trainer.ema.module if trainer.ema is not None else None
        weights = trainer.last_checkpoint
    results: dict[str, Any] = {}
    if cfg.TEST.ENABLE:
        if model is None:
            model = task.build_model().to(ctx.device)
            weights = load_test_weights(cfg, model, ctx.is_main)
            ema_model = load_test_ema(cfg, task, weights, ctx.device)
        try:
            with parallel.full_parameters(model):
                results = task.test(model)
            if ema_model is not None:
                results.update(ema_statistics(task, lambda: task.test(ema_model)))
        except EvaluationInterrupted:
            raise StopRequested(stop.signal_name, weights or "nothing (no weights were loaded)") from None
        if ctx.is_main:
            log_json_stats({"split": "test_final", **results}, cfg.OUTPUT_DIR)
    du.barrier()
    return results


def launch(cfg: CfgNode, init_method: str | None = None) -> dict[str, Any]:
    """Runs `cfg` with the processes this machine should start: one per GPU (NUM_GPUS), NUM_CPU_PROCS on the CPU,
    or just this one under torchrun / Slurm, where the launcher started every process already. A Slurm task that
    is one shard of a `--num_shards` launch rendezvous, without --init_method, where a Slurm step would."""
    procs = cfg.NUM_GPUS if cfg.NUM_GPUS > 0 else cfg.NUM_CPU_PROCS
    spec = launcher.detect_launch()
    external = launcher.launched_externally(procs, cfg.NUM_SHARDS, cfg.SHARD_ID, spec)
    if not external:
        check_layout(cfg, procs * cfg.NUM_SHARDS, external=False)
    if external or procs * cfg.NUM_SHARDS == 1:
        ctx = launcher.init_distributed(use_cuda=cfg.NUM_GPUS > 0, timeout_minutes=cfg.DIST_TIMEOUT_MINUTES)
        try:
            return run(ctx, cfg)
        finally:
            du.destroy_process_group()
    results = launcher.launch_local(run, procs, args=(cfg,), init_method=init_method or spec.init_method,
                                    num_shards=cfg.NUM_SHARDS, shard_id=cfg.SHARD_ID, use_cuda=cfg.NUM_GPUS > 0,
                                    timeout_minutes=cfg.DIST_TIMEOUT_MINUTES)
    return results[0] if results else {}
