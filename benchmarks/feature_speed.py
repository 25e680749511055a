"""Clips per second of feature extraction (the pipeline of tools/extract_features.py) against the bare model forward
on the same clips.

    python benchmarks/feature_speed.py --threads 1   # hiera_base_16x224, 8 videos, 3 rounds (about 4 min)
    python benchmarks/feature_speed.py --smoke       # the demo's tiny Hiera on 2 small videos, 1 round (seconds)

Videos: 320x240, 3 s at 30 fps (benchmarks/data_speed.py writes them). Each gives one clip: the centre 16x4 view
at 224x224 (TEST.NUM_ENSEMBLE_VIEWS 1, TEST.NUM_SPATIAL_CROPS 1 of configs/Kinetics/HIERA_B_16x224.yaml).
  extraction   hiera_video.inference.features.FeatureExtractor over all the videos: --workers data-loader processes
               (DATA_LOADER.NUM_WORKERS) decode and transform, this process batches --batch clips per forward pass,
               pools the last stage and writes one .npy per video (into a fresh folder every round)
  model only   clip_features (the same function) on the same clips, decoded beforehand, in the same batches
  decode only  the extraction's data loader alone, for reference: how fast the workers supply clips
Contenders run interleaved, medians reported. Target: extraction >= 80% of the model-only clips/s with one worker
and one torch thread, i.e. the pipeline on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import numpy as np
import torch
from torch.utils.data import DataLoader

from common import format_table, interleaved_times, load_note, median
from data_speed import ensure_videos
from hiera_video.config import load_config
from hiera_video.data.build import video_views
from hiera_video.data.clip_dataset import decode_clips
from hiera_video.data.video_io import open_video
from hiera_video.inference.features import FeatureExtractor, Job, WindowChunks, clip_features, output_file
from hiera_video.inference.inputs import VideoInput
from hiera_video.models.build import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the demo's tiny model on 2 small videos, 1 round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    parser.add_argument("--workers", type=int, default=1, help="data-loader processes (DATA_LOADER.NUM_WORKERS)")
    parser.add_argument("--batch", type=int, default=4, help="clips per forward pass (TEST.BATCH_SIZE)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, smoke 1)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "hiera_video_data_bench"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    count, seconds, rounds = (2, 2.5, args.rounds or 1) if args.smoke else (8, 3.0, args.rounds or 3)
    folder = ensure_videos(os.path.join(args.data_dir, f"{count}x{seconds:g}s"), count, seconds)
    config = os.path.join(REPO, "configs", "Demo" if args.smoke else "Kinetics",
                          "HIERA_DEMO.yaml" if args.smoke else "HIERA_B_16x224.yaml")
    cfg = load_config(config, ["NUM_GPUS", "0", "TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1",
                               "TEST.BATCH_SIZE", str(args.batch), "DATA_LOADER.NUM_WORKERS", str(args.workers)])
    model = build_model(cfg).eval()
    names = sorted(name for name in os.listdir(folder) if name.endswith(".mp4"))
    jobs = [Job(i, VideoInput(os.path.join(folder, name), name), output_file(name)) for i, name in enumerate(names)]
    print(f"{cfg.MODEL.ARCH} ({os.path.relpath(config, REPO)}) on {count} videos of 320x240, {seconds:g} s: one "
          f"{cfg.DATA.NUM_FRAMES}x{cfg.DATA.TEST_CROP_SIZE}² clip each; {torch.get_num_threads()} torch thread(s), "
          f"{args.workers} worker(s), batch {args.batch}; {load_note()}", flush=True)

    plan_views, transform = video_views(cfg)
    clips = []
    for job in jobs:
        with open_video(job.video.path) as reader:
            clips.append(decode_clips(reader, plan_views, transform, np.random.default_rng(0)))
    batches = list(torch.cat(clips).split(args.batch))
    extractor = FeatureExtractor(cfg, model, torch.device("cpu"), stage=-1, pool="mean", window=None, stride=None,
                                 batch_clips=args.batch)
    work = tempfile.mkdtemp(prefix="feature_speed_")

    def extraction() -> None:
        out = tempfile.mkdtemp(dir=work)
        summary = extractor.run(jobs, out, rank=0, num_workers=args.workers, progress=False)
        if summary.extracted != len(jobs):
            raise RuntimeError(f"extracted {summary.extracted} of {len(jobs)} videos: {summary.failed}")
        shutil.rmtree(out)

    def model_only() -> None:
        with torch.no_grad():
            for batch in batches:
                clip_features(model, batch, stage=-1, pool="mean")

    def decode_only() -> None:
        dataset = WindowChunks(cfg, jobs, None, None, chunk_clips=args.batch)
        for _ in DataLoader(dataset, batch_size=None, num_workers=args.workers, collate_fn=lambda chunk: chunk):
            pass

    try:
        times = interleaved_times({"extraction": extraction, "model only": model_only, "decode only": decode_only},
                                  repeats=rounds, warmup=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_second = {name: len(jobs) / median(values) for name, values in times.items()}
    ratio = per_second["extraction"] / per_second["model only"]
    rows = [[name, f"{per_second[name]:.3f}", f"{median(times[name]):.2f}",
             f"{per_second[name] / per_second['model only']:.2f}" if name != "decode only" else "-"]
            for name in times]
    print(format_table(["contender", "clips/s", f"median s / {len(jobs)} clips", "vs model only"], rows))
    print(load_note())
    print(f"summary: extraction {per_second['extraction']:.3f} clips/s = {100 * ratio:.0f}% of the bare model's "
          f"{per_second['model only']:.3f} (target >= {100 * TARGET:.0f}%: {'met' if ratio >= TARGET else 'MISSED'});"
          f" the workers alone supply {per_second['decode only']:.2f} clips/s")


if __name__ == "__main__":
    main()
