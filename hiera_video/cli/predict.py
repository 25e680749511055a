"""Predict the classes of video files with a trained classifier, as the config's multi-view test scores them.

    python tools/predict.py --cfg configs/Kinetics/HIERA_B_16x224.yaml --weights hiera_base_16x224.pth \\
        --input my_videos/ clip.mp4 "more/*.mkv" [--top-k 5] [--json out.json] \\
        [--window 2 --stride 1] [--overlay out.mp4] [KEY VALUE ...]

--input takes files, folders (searched recursively for video files) and glob patterns. It prints each video's top
k classes; --json also writes {"videos": [{"path", "top_k": [{"label", "name", "score"}], "windows": [{"start",
"end", "top_k"}]}], "failed": [{"path", "error"}]} ("windows" only with --window; times in seconds). With --window
SECONDS (and --stride SECONDS, default the window) every window of the video is scored like a whole test video,
streaming; the video's top_k is then the mean of its windows' scores. --overlay writes a copy of the video with the
current top-3 drawn on it (a file for one input video, else a folder of <name>.mp4 files). Videos that cannot be
decoded are listed with the reason and the others still run: the exit status is 0 when every input succeeded and 2
when some failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hiera_video.cli.run_net import split_cfg_and_opts
from hiera_video.config import load_config
from hiera_video.data.video_io import VideoDecodeError
from hiera_video.engine.runner import test_weights_path
from hiera_video.inference.inputs import Failure, VideoInput, expand_inputs
from hiera_video.inference.overlay import OverlayWriter
from hiera_video.inference.predictor import ClassScore, Prediction, Predictor
from hiera_video.utils.atomic import atomic_open

OVERLAY_CLASSES = 3  # classes drawn on the overlay


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, nargs="+",
                        help="the classification config the weights were trained with (then KEY VALUE overrides)")
    parser.add_argument("--weights", default="",
                        help="weights file (default: as the test picks them: TEST.CHECKPOINT_FILE_PATH, the newest "
                             "checkpoint in OUTPUT_DIR, TRAIN.CHECKPOINT_FILE_PATH)")
    parser.add_argument("--input", nargs="+", required=True, help="video files, folders and glob patterns")
    parser.add_argument("--top-k", type=int, default=5, help="classes reported per video and window")
    parser.add_argument("--json", default="", help="also write the predictions to this JSON file")
    parser.add_argument("--window", type=float, default=None, help="score every window of this many seconds")
    parser.add_argument("--stride", type=float, default=None, help="seconds between windows (default: --window)")
    parser.add_argument("--overlay", default="", help="write the video with the current top-3 drawn on it")
    parser.add_argument("--ema", action="store_true",
                        help="predict with the checkpoint's EMA weights (trained with MODEL_EMA.ENABLE True)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides (anywhere on the command line)")
    args = parser.parse_intermixed_args(argv)
    if args.stride is not None and args.window is None:
        parser.error("--stride needs --window")
    if args.window is not None and not (args.window > 0 and (args.stride is None or args.stride > 0)):
        parser.error("--window and --stride must be positive numbers of seconds")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


@dataclass
class VideoResult:
    """What a video got: its top-k, and with --window each window's."""

    path: str
    top_k: list[ClassScore]
    windows: list[tuple[float, float, list[ClassScore]]] = field(default_factory=list)


def overlay_paths(target: str, videos: Sequence[VideoInput]) -> dict[str, str]:
    """Where each video's overlay goes: `target` itself for one video named *.mp4, else `target`/<relative path
    with .mp4>."""
    if not target:
        return {}
    if target.lower().endswith(".mp4"):
        if len(videos) != 1:
            raise SystemExit(f"--overlay {target} is one file but --input names {len(videos)} videos: give a folder "
                             f"instead")
        return {videos[0].path: target}
    return {v.path: os.path.join(target, os.path.splitext(v.relative)[0] + ".mp4") for v in videos}


def _scores_text(top: Sequence[ClassScore]) -> str:
    return " | ".join(f"{c.name} {c.score:.3f}" for c in top)


def predict_video(predictor: Predictor, video: VideoInput, top_k: int, window: float | None, stride: float | None,
                  overlay: str | None) -> VideoResult:
    """One video's result, printed as it comes (and its overlay written once the video has decoded); raises
    VideoDecodeError when the video cannot be decoded."""
    print(video.path)
    with contextlib.ExitStack() as stack:
        if window is None:
            prediction = predictor.predict(video.path)
            result = VideoResult(video.path, prediction.top_k(top_k))
            width = max(len(item.name) for item in result.top_k)
            for rank, item in enumerate(result.top_k, start=1):
                print(f"  {rank:2d}. {item.name:<{width}}  {item.score:.4f}")
            if overlay:
                stack.enter_context(OverlayWriter(video.path, overlay)).write_until(None, _overlay_lines(prediction))
            return result
        writer, windows, total, last = None, [], None, None
        for prediction in predictor.predict_windows(video.path, window, stride or window):
            top = prediction.top_k(top_k)
            windows.append((prediction.start, prediction.end, top))
            total = prediction.scores.astype(np.float64) if total is None else total + prediction.scores
            print(f"  {prediction.start:8.2f}-{prediction.end:8.2f} s  {_scores_text(top)}")
            if overlay and writer is None:
                writer = stack.enter_context(OverlayWriter(video.path, overlay))
            if writer:  # the frames before this window show the previous one
                writer.write_until(prediction.start, _overlay_lines(last) if last else [])
            last = prediction
        assert last is not None and total is not None  # every video has at least one window
        mean = Prediction(video.path, 0.0, last.end, (total / len(windows)).astype(np.float32), last.class_names)
        print(f"  {'whole video (mean)':>20s}  {_scores_text(mean.top_k(top_k))}")
        if writer:
            writer.write_until(None, _overlay_lines(last))
        return VideoResult(video.path, mean.top_k(top_k), windows)


def _overlay_lines(prediction: Prediction) -> list[str]:
    return [f"{c.name} {c.score:.2f}" for c in prediction.top_k(OVERLAY_CLASSES)]


def _top_k_json(top: Sequence[ClassScore]) -> list[dict[str, Any]]:
    return [{"label": c.label, "name": c.name, "score": c.score} for c in top]


def results_json(results: Sequence[VideoResult], failures: Sequence[Failure], windows: bool) -> dict[str, Any]:
    videos = []
    for result in results:
        entry: dict[str, Any] = {"path": result.path, "top_k": _top_k_json(result.top_k)}
        if windows:
            entry["windows"] = [{"start": start, "end": end, "top_k": _top_k_json(top)}
                                for start, end, top in result.windows]
        videos.append(entry)
    return {"videos": videos, "failed": [{"path": f.path, "error": f.error} for f in failures]}


CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_inputs_and_opts(values: list[str]) -> tuple[list[str], list[str]]:
    """`--input a.mp4 b/ KEY VALUE ...`: the inputs end at the first config key (GROUP.KEY), the overrides follow."""
    for position, value in enumerate(values):
        if CONFIG_KEY.match(value):
            return values[:position], values[position:]
    return values, []


def load_tool_config(args: argparse.Namespace) -> Any:
    """The config of --cfg with every KEY VALUE override, wherever on the command line it came."""
    cfg_files, after_cfg = split_cfg_and_opts(args.cfg)
    args.input, after_input = split_inputs_and_opts(args.input)
    if not args.input:
        raise SystemExit("--input names no video: give files, folders or glob patterns")
    return load_config(cfg_files, after_cfg + after_input + args.opts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_tool_config(args)
    weights = args.weights or test_weights_path(cfg)
    if not weights:
        raise SystemExit("No weights to predict with: pass --weights, or set TEST.CHECKPOINT_FILE_PATH")
    try:
        predictor = Predictor(cfg, weights, device=args.device, ema=args.ema)
    except ValueError as error:  # weights that do not fit the config, or no EMA weights with --ema
        raise SystemExit(f"Cannot predict: {error}") from None
    videos, failures = expand_inputs(args.input)
    overlays = overlay_paths(args.overlay, videos)
    results = []
    for video in videos:
        try:
            results.append(predict_video(predictor, video, args.top_k, args.window, args.stride,
                                         overlays.get(video.path)))
        except (VideoDecodeError, OSError) as error:
            failures.append(Failure(video.path, str(error)))
            print(f"FAILED {video.path}: {error}", file=sys.stderr)
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(results_json(results, failures, args.window is not None), f, indent=1)
    print(f"{len(results)} videos predicted, {len(failures)} failed" + (f"; wrote {args.json}" if args.json else ""))
    for failure in failures:
        print(f"  failed: {failure.path}: {failure.error}")
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
