"""Extract features of many videos: one .npy per video, resumable, sharded over the processes of a launch.

    python tools/extract_features.py --cfg CFG [--weights W] --input CSV_OR_PATHS --output DIR [--stage -1]
        [--pool mean|none] [--window SECONDS --stride SECONDS] [KEY VALUE ...]

--input is a Kinetics-format list (.csv, paths relative to DATA.PATH_PREFIX) or video files, folders and globs.
DIR/<video's relative path>.npy holds a row per window: [windows, C] pooled (the last stage's pooled features of a
classifier are its head's input), or [windows, T, H, W, C] with --pool none; each window's features are the mean
over its test views (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS; set both to 1 for one centre clip). Without
--window a video is one window. DIR/index.csv lists video, file, windows, start and end times (seconds) and shape;
DIR/failed.csv the videos that could not be decoded. A rerun skips finished videos. Under torchrun or a Slurm step
(srun, or a job of tools/submit.py ... extract-features ARGS) every process takes every N-th video.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from fvcore.common.config import CfgNode

from hiera_video.cli.predict import load_tool_config
from hiera_video.engine.launch import detect_launch
from hiera_video.engine.runner import test_weights_path
from hiera_video.inference.features import (
    POOLS,
    FeatureExtractor,
    load_feature_model,
    plan_jobs,
    prepare_output,
    write_index,
)
from hiera_video.inference.inputs import expand_inputs, read_video_list


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The command line; `prog` names the command in usage and errors (default: this tool's name)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, nargs="+", help="config of the weights (then KEY VALUE overrides)")
    parser.add_argument("--weights", default="", help="weights file (default: as the test picks them)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="a video list (.csv, relative to DATA.PATH_PREFIX), or video files, folders and globs")
    parser.add_argument("--output", required=True, help="folder of the .npy files, index.csv and failed.csv")
    parser.add_argument("--stage", type=int, default=-1, help="backbone stage (0 = first, -1 = last)")
    parser.add_argument("--pool", choices=POOLS, default="mean", help="mean over space and time, or the full map")
    parser.add_argument("--window", type=float, default=None, help="features of every window of this many seconds")
    parser.add_argument("--stride", type=float, default=None, help="seconds between windows (default: --window)")
    parser.add_argument("--device", default=None, help="default: this process's CUDA device when there is one")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides (anywhere on the command line)")
    args = parser.parse_intermixed_args(argv)
    if args.stride is not None and args.window is None:
        parser.error("--stride needs --window")
    if args.window is not None and not (args.window > 0 and (args.stride is None or args.stride > 0)):
        parser.error("--window and --stride must be positive numbers of seconds")
    return args


def load_request(argv: list[str] | None = None, prog: str | None = None
                 ) -> tuple[argparse.Namespace, CfgNode, str]:
    """The arguments, the config and the weights of a command line (tools/submit.py checks them before it submits
    one, as `prog`); errors exit with what to fix."""
    args = parse_args(argv, prog)
    cfg = load_tool_config(args)
    weights = args.weights or test_weights_path(cfg)
    if not weights:
        raise SystemExit("No weights to extract features with: pass --weights, or set TEST.CHECKPOINT_FILE_PATH")
    return args, cfg, weights


def main(argv: list[str] | None = None) -> int:
    args, cfg, weights = load_request(argv)
    launch = detect_launch()
    if len(args.input) == 1 and args.input[0].lower().endswith(".csv"):
        videos, missing = read_video_list(args.input[0], cfg.DATA.PATH_PREFIX, cfg.DATA.PATH_LABEL_SEPARATOR), []
    else:
        videos, missing = expand_inputs(args.input)
    for failure in missing:
        print(f"failed: {failure.path}: {failure.error}", file=sys.stderr)
    device = torch.device(args.device or (f"cuda:{launch.local_rank}" if torch.cuda.is_available() else "cpu"))
    prepare_output(args.output)
    jobs, skipped = plan_jobs(videos, args.output, launch.rank, launch.world_size)
    model = load_feature_model(cfg, weights, args.stage, args.pool)
    views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    extractor = FeatureExtractor(cfg, model, device, args.stage, args.pool, args.window, args.stride,
                                 batch_clips=max(1, cfg.TEST.BATCH_SIZE // launch.world_size) * views)
    summary = extractor.run(jobs, args.output, launch.rank, cfg.DATA_LOADER.NUM_WORKERS, skipped)
    listed, failed = write_index(args.output)
    where = f"process {launch.rank} of {launch.world_size}: " if launch.world_size > 1 else ""
    print(f"{where}{len(jobs) + skipped} videos: {summary.extracted} extracted, {skipped} already done, "
          f"{len(summary.failed)} failed; {os.path.join(args.output, 'index.csv')} lists {listed} videos, "
          f"failed.csv {failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
