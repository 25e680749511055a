"""Speed of tools/ava_eval.py end to end (Python start-up, imports, reading, evaluation) on synthetic AVA sets.

    python benchmarks/ava_eval_speed.py            # 3,200 keyframes (67k rows) and AVA-val size (51,200 keyframes,
                                                   # 10 boxes x 60 classes = 30.7M rows, a 1.6 GB CSV)
    python benchmarks/ava_eval_speed.py --small    # smoke run in seconds (the large set shrinks to 800 keyframes)

Sets are generated once (deterministic seed) under --workdir and reused. Targets: 1.2 s for the 3,200-keyframe set,
30 s for the AVA-val-sized one. For scale, the official evaluator takes about 36 s and 12 min 10 s on them.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from make_ava_synthetic import make_ava_synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "tools", "ava_eval.py")


def ensure_set(workdir: str, name: str, keyframes: int, boxes: int, classes_per_box: int) -> dict[str, str]:
    """Generate a synthetic set into workdir/name unless a complete one with these settings is there."""
    folder = os.path.join(workdir, f"{name}_{keyframes}kf_{boxes}x{classes_per_box}")
    done = os.path.join(folder, "complete")
    paths = {n: os.path.join(folder, f) for n, f in (("groundtruth", "groundtruth.csv"),
                                                       ("detections", "detections.csv"),
                                                       ("labelmap", "labelmap.pbtxt"))}
    if not os.path.exists(done):
        start = time.perf_counter()
        make_ava_synthetic(folder, keyframes, boxes, classes_per_box, seed=0)
        open(done, "w").close()
        print(f"generated {folder} in {time.perf_counter() - start:.1f} s", flush=True)
    return paths


def time_cli(paths: dict[str, str], repeats: int) -> tuple[list[float], float]:
    """Wall seconds of each CLI run, and the mAP it printed."""
    times, mean_ap = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, CLI, "--groundtruth", paths["groundtruth"], "--detections",
                               paths["detections"], "--labelmap", paths["labelmap"]],
                              capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        mean_ap = float(done.stdout.strip().splitlines()[-1].split()[1])
    return times, mean_ap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="smoke run: shrink the large set to 800 keyframes")
    parser.add_argument("--workdir", default=os.path.join("/tmp", "hiera_video_ava_bench"))
    parser.add_argument("--repeats", type=int, default=3, help="CLI runs of the small set (best is reported)")
    args = parser.parse_args()

    large = 800 if args.small else 51200
    cases = [("3,200 keyframes, 3 boxes x 7 classes", 3200, 3, 7, args.repeats, 1.2),
             (f"{large:,} keyframes, 10 boxes x 60 classes", large, 10, 60, 1, 30.0)]
    sets = [ensure_set(args.workdir, "ava", keyframes, boxes, classes_per_box)
            for _, keyframes, boxes, classes_per_box, _, _ in cases]
    print(f"{'set':<42} {'det rows':>11} {'CSV MB':>7} {'best s':>7} {'runs s':>16} {'target s':>8} {'mAP':>7}")
    summary = []
    for (name, keyframes, _, _, repeats, target), paths in zip(cases, sets):
        with open(paths["detections"], "rb") as f:
            rows = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
        times, mean_ap = time_cli(paths, repeats)
        size_mb = os.path.getsize(paths["detections"]) / 1e6
        runs = " ".join(f"{t:.2f}" for t in times)
        print(f"{name:<42} {rows:>11,} {size_mb:>7.1f} {min(times):>7.2f} {runs:>16} {target:>8.1f} {mean_ap:>7.4f}",
              flush=True)
        summary.append(f"{keyframes:,} keyframes ({rows:,} rows) {min(times):.2f} s "
                       f"({'under' if min(times) < target else 'OVER'} the {target:g} s target)")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"summary: tools/ava_eval.py end to end: {'; '.join(summary)}; peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
