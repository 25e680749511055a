"""Videos resized per second: `tools/prepare_data.py resize` against the ffmpeg command giving the same output.

    python benchmarks/prepare_speed.py            # 6 videos of 640x360, 10 s at 30 fps -> short side 320 (~5 min)
    python benchmarks/prepare_speed.py --smoke    # 1 video of 2 s, one round (seconds)

Contenders, one process each, interleaved video by video set (A B, B A, ...), medians over --rounds rounds:
  ours      the resize job as a `--workers 1` worker runs it (hiera_video.data.preparation.resize.resize_one):
            decode, filter and encode through PyAV, then verify the output with the project's reader and rename it
            into place; FFmpeg's automatic thread counts, as the ffmpeg command uses.
  ffmpeg    the command a user would type for the same output, one process per video (resize.ffmpeg_command):
            ffmpeg -i IN -vf fps=R,scale=W:H -c:v libx264 -preset medium -crf 23 -g GOP -pix_fmt yuv420p -an OUT
Both outputs are compared first: the same x264 settings (read from the encoder's SEI message), size and frame
count, and the mean pixel difference (x264 builds differ between the ffmpeg package and PyAV's wheel).
A third row times the whole tool (`python tools/prepare_data.py resize --workers 1`) once, start-up included.
Target: ours >= 0.9x ffmpeg's videos/s. Videos are written once into --data-dir and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import format_table, interleaved_times, load_note, median
from data_speed import render_scene
from hiera_video.data.preparation import resize
from hiera_video.data.preparation.common import DONE
from hiera_video.data.video_io import open_video, write_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "prepare_data.py")
FPS, WIDTH, HEIGHT = 30, 640, 360
TARGET_RATIO = 0.9


def ensure_sources(folder: str, count: int, seconds: float) -> list[str]:
    """`count` H.264 sources of WIDTHxHEIGHT in `folder` (written unless this set is there already)."""
    params = {"count": count, "seconds": seconds, "fps": FPS, "size": [WIDTH, HEIGHT], "version": 1}
    manifest = os.path.join(folder, "videos.json")
    paths = [os.path.join(folder, f"source_{i:02d}.mp4") for i in range(count)]
    if os.path.exists(manifest):
        with open(manifest) as f:
            if json.load(f) == params:
                return paths
    os.makedirs(folder, exist_ok=True)
    for i, path in enumerate(paths):
        frames = render_scene(np.random.default_rng(i), round(seconds * FPS), HEIGHT, WIDTH)
        write_video(path, frames, fps=FPS, crf=18)
    with open(manifest, "w") as f:
        json.dump(params, f)
    return paths


def x264_settings(path: str) -> list[str]:
    """The option list libx264 writes into its SEI message, e.g. ['cabac=1', 'ref=3', ...]."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    start = data.index(b"options: ") + len(b"options: ")
    return data[start : data.index(b"\0", start)].decode().split()


def compare_outputs(ours: str, theirs: str) -> str:
    """One line on how the two outputs compare; raises if they are not the same encode."""
    if x264_settings(ours) != x264_settings(theirs):
        raise RuntimeError(f"different x264 settings:\n{x264_settings(ours)}\n{x264_settings(theirs)}")
    with open_video(ours) as a, open_video(theirs) as b:
        shape_a, shape_b = (a.num_frames, a.width, a.height), (b.num_frames, b.width, b.height)
        if shape_a != shape_b:
            raise RuntimeError(f"different outputs: {shape_a} vs {shape_b} (frames, width, height)")
        indices = list(range(0, a.num_frames, max(1, a.num_frames // 16)))
        difference = (a.get_frames(indices).float() - b.get_frames(indices).float()).abs().mean().item()
    return (f"outputs: same x264 settings ({len(x264_settings(ours))} options, "
            f"{next(o for o in x264_settings(ours) if o.startswith('keyint='))}), {shape_a[1]}x{shape_a[2]}, "
            f"{shape_a[0]} frames each; mean |pixel difference| {difference:.2f} of 255; sizes "
            f"{os.path.getsize(ours) / 1e3:.0f} / {os.path.getsize(theirs) / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="1 video of 2 s, one round")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "hiera_video_prepare_bench"))
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, smoke 1)")
    parser.add_argument("--short-side", type=int, default=320)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the ffmpeg command is needed for the comparison (e.g. apt-get install ffmpeg)")
    count, seconds, rounds = (1, 2.0, args.rounds or 1) if args.smoke else (6, 10.0, args.rounds or 5)
    sources = ensure_sources(os.path.join(args.data_dir, f"{count}x{seconds:g}s"), count, seconds)
    work = tempfile.mkdtemp(prefix="prepare_speed_")
    options = resize.ResizeOptions(short_side=args.short_side, threads=0)
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{count} videos of {WIDTH}x{HEIGHT}, {seconds:g} s at {FPS} fps -> short side {args.short_side}; "
          f"{version}; {load_note()}", flush=True)

    def ours() -> None:
        for i, source in enumerate(sources):
            output = os.path.join(work, "ours", f"{i:02d}.mp4")
            if os.path.exists(output):
                os.remove(output)
            outcome = resize.resize_one(resize.ResizeTask(source, source, output, options))
            if outcome.status != DONE:
                raise RuntimeError(f"{source}: {outcome.reason}")

    width, height = resize.output_size(WIDTH, HEIGHT, args.short_side)
    commands = [resize.ffmpeg_command(source, os.path.join(work, "ffmpeg", f"{i:02d}.mp4"), width, height,
                                      resize.parse_rate(str(FPS)), options) for i, source in enumerate(sources)]
    os.makedirs(os.path.join(work, "ffmpeg"))

    def ffmpeg() -> None:
        for command in commands:
            subprocess.run(command, check=True)

    ours()
    ffmpeg()
    print(compare_outputs(os.path.join(work, "ours", "00.mp4"), os.path.join(work, "ffmpeg", "00.mp4")), flush=True)
    times = interleaved_times({"ours (resize job)": ours, "ffmpeg command": ffmpeg}, rounds, warmup=0)

    start = time.perf_counter()
    tool = subprocess.run([sys.executable, TOOL, "resize", os.path.dirname(sources[0]), os.path.join(work, "tool"),
                           "--short-side", str(args.short_side), "--workers", "1"], capture_output=True, text=True)
    tool_seconds = time.perf_counter() - start
    if tool.returncode != 0 or f"{count} done" not in tool.stdout:
        raise RuntimeError(f"tools/prepare_data.py failed:\n{tool.stdout}\n{tool.stderr[-2000:]}")
    shutil.rmtree(work)

    rate = {name: count / median(t) for name, t in times.items()}
    ratio = rate["ours (resize job)"] / rate["ffmpeg command"]
    rows = [[name, f"{rate[name]:.3f}", f"{median(t) / count:.2f}", f"{rate[name] / rate['ffmpeg command']:.2f}"]
            for name, t in times.items()]
    rows.append(["whole tool, 1 run (start-up incl.)", f"{count / tool_seconds:.3f}", f"{tool_seconds / count:.2f}",
                 f"{count / tool_seconds / rate['ffmpeg command']:.2f}"])
    print(format_table(["contender", "videos/s", "s/video", "vs ffmpeg"], rows))
    print(load_note())
    print(f"summary: resize {ratio:.2f}x the ffmpeg command's videos/s, one process each "
          f"(target >= {TARGET_RATIO:g}x: {'met' if ratio >= TARGET_RATIO else 'MISSED'})")


if __name__ == "__main__":
    main()
