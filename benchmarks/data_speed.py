"""Decoded, augmented clips per second: our Kinetics loader against PyTorchVideo's, on the same mp4 files.

    python benchmarks/data_speed.py            # 24 videos of 320x240, 3 s at 30 fps; 48 clips per loader (~1 min)
    python benchmarks/data_speed.py --smoke    # 4 short videos, 4 clips per loader (seconds)

Training clips: 16 frames, one every 4 (a 2.1 s window at a random start), short side jittered in [256, 320],
a random 224x224 crop, horizontal flip, normalised float [3, 16, 224, 224]. Loaders:
  ours (torchcodec|decord|pyav)
                               hiera_video.data.kinetics.build_kinetics, the config's short-side jitter recipe;
                               "auto" (the default DATA.DECODING_BACKEND) is the first of them that works here
  PyTorchVideo (pyav|decord)   pytorchvideo.data.Kinetics with a random clip sampler and the transform of its
                               Kinetics tutorial (UniformTemporalSubsample, /255, Normalize, RandomShortSideScale,
                               RandomCrop, RandomHorizontalFlip), rebuilt here from torch ops because
                               pytorchvideo.transforms does not import with current torchvision.
Test loading: 5 temporal x 3 spatial views of one video, decoded once (our test split, with torchcodec and with
decord) against decoding each temporal view on its own. Every loader runs in this process with one torch thread
(as a data-loader worker does), one clip at a time, interleaved; medians reported. Target: the default loader
>= 3.5x the faster PyTorchVideo loader. Without torchcodec (or FFmpeg's libraries) its rows are left out.
The videos are written once into --data-dir (default: a folder under the system temp dir) and reused.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from common import format_table, interleaved_times, load_note, median
from hiera_video.config import get_cfg
from hiera_video.data.clip_dataset import ClipDataset
from hiera_video.data.demo import render_moving_texture
from hiera_video.data.kinetics import build_kinetics
from hiera_video.data.loader import SampleKey
from hiera_video.data.video_io import backend_problem, open_video, resolve_decoding, write_video

NUM_FRAMES, SAMPLING_RATE, FPS = 16, 4, 30
JITTER, CROP = (256, 320), 224
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
TEMPORAL_VIEWS, SPATIAL_CROPS = 5, 3
TARGET_SPEEDUP = 3.5
NUM_CLASSES = 4


# ----------------------------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------------------------


def render_scene(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a textured background panning one way and a textured disc crossing it another way,
    under a slowly changing light, so that every frame has new detail and motion for the codec to encode."""
    max_speed = 3
    side = max(height, width) + max_speed * num_frames
    layers = [render_moving_texture(rng, (1, 0), 1, side)[0] for _ in range(2)]  # two still textures to pan over
    pans = rng.integers(-max_speed, max_speed + 1, size=(2, 2))  # pixels per frame, (x, y) per layer
    start, velocity = rng.uniform(0.2, 0.8, 2) * (width, height), rng.uniform(-2.0, 2.0, 2)
    radius = rng.uniform(0.15, 0.3) * height
    ys, xs = np.mgrid[:height, :width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        views = []
        for layer, (vx, vy) in zip(layers, pans):
            x0, y0 = (vx * t) % (side - width), (vy * t) % (side - height)
            views.append(layer[y0 : y0 + height, x0 : x0 + width])
        cx, cy = start + velocity * t
        inside = ((xs - cx % width) ** 2 + (ys - cy % height) ** 2 < radius**2)[..., None]
        light = 0.85 + 0.15 * np.sin(2 * np.pi * t / num_frames)
        frames[t] = np.clip(np.where(inside, views[1], views[0]) * light, 0, 255)
    return frames


def ensure_videos(folder: str, count: int, seconds: float) -> str:
    """Write `count` 320x240 mp4 files and a Kinetics-format train.csv/test.csv into `folder`, unless it already
    holds exactly that set. Returns the CSV folder."""
    params = {"count": count, "seconds": seconds, "fps": FPS, "size": [320, 240], "version": 2}
    manifest = os.path.join(folder, "videos.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            if json.load(f) == params:
                return folder
    os.makedirs(folder, exist_ok=True)
    lines = []
    for i in range(count):
        name = f"video_{i:03d}.mp4"
        frames = render_scene(np.random.default_rng(i), round(seconds * FPS), 240, 320)
        write_video(os.path.join(folder, name), frames, fps=FPS)
        lines.append(f"{name} {i % NUM_CLASSES}\n")
    for split in ("train", "test"):
        with open(os.path.join(folder, f"{split}.csv"), "w") as f:
            f.writelines(lines)
    with open(manifest, "w") as f:
        json.dump(params, f)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------


def our_dataset(folder: str, split: str, backend: str) -> ClipDataset:
    """Our Kinetics `split` of the videos in `folder`, configured like the PyTorchVideo side (see module doc)."""
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = folder
    cfg.DATA.PATH_PREFIX = folder
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE, cfg.DATA.TARGET_FPS = NUM_FRAMES, SAMPLING_RATE, FPS
    cfg.DATA.TRAIN_JITTER_SCALES = list(JITTER)
    cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE = []  # short-side jitter + random crop, the PyTorchVideo recipe
    cfg.DATA.TRAIN_CROP_SIZE = cfg.DATA.TEST_CROP_SIZE = CROP
    cfg.DATA.DECODING_BACKEND = backend
    cfg.MODEL.NUM_CLASSES = NUM_CLASSES
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = TEMPORAL_VIEWS, SPATIAL_CROPS
    return build_kinetics(cfg, split)


def our_clips(folder: str, backend: str) -> Callable[[], torch.Tensor]:
    """Next-clip function over our training split (random videos, per-sample seeds as the sampler gives)."""
    dataset = our_dataset(folder, "train", backend)
    rng = np.random.default_rng(0)

    def next_clip() -> torch.Tensor:
        return dataset[SampleKey(int(rng.integers(len(dataset))), int(rng.integers(2**62)))]["video"][0]

    return next_clip


def pytorchvideo_transform() -> Callable[[dict], dict]:
    """PyTorchVideo's Kinetics training transform on a {"video": float [C, T, H, W] in 0..255} dict."""

    def transform(sample: dict) -> dict:
        video = sample["video"]
        # UniformTemporalSubsample
        index = torch.linspace(0, video.shape[1] - 1, NUM_FRAMES).clamp(0, video.shape[1] - 1).long()
        video = torch.index_select(video, 1, index) / 255.0
        mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
        video = (video - mean) / std
        # RandomShortSideScale: bilinear interpolation of the [C, T, H, W] clip, short side to a random size
        size = int(torch.randint(JITTER[0], JITTER[1] + 1, (1,)))
        height, width = video.shape[-2:]
        new = (size, int(width * size / height)) if height < width else (int(height * size / width), size)
        video = F.interpolate(video, size=new, mode="bilinear", align_corners=False)
        # RandomCrop, RandomHorizontalFlip
        top = int(torch.randint(0, video.shape[-2] - CROP + 1, (1,)))
        left = int(torch.randint(0, video.shape[-1] - CROP + 1, (1,)))
        video = video[..., top : top + CROP, left : left + CROP]
        if torch.rand(1) < 0.5:
            video = video.flip(-1)
        return {**sample, "video": video}

    return transform


def pytorchvideo_clips(folder: str, decoder: str) -> Callable[[], torch.Tensor]:
    from pytorchvideo.data import Kinetics, make_clip_sampler

    dataset = Kinetics(
        data_path=os.path.join(folder, "train.csv"),
        video_path_prefix=folder,
        clip_sampler=make_clip_sampler("random", NUM_FRAMES * SAMPLING_RATE / FPS),
        transform=pytorchvideo_transform(),
        decode_audio=False,
        decoder=decoder,
    )
    samples = iter(dataset)

    def next_clip() -> torch.Tensor:
        nonlocal samples
        try:
            return next(samples)["video"]
        except StopIteration:  # one pass over the videos is one epoch
            samples = iter(dataset)
            return next(samples)["video"]

    return next_clip


def view_loaders(folder: str, backends: list[str]) -> dict[str, Callable[[], torch.Tensor]]:
    """All views of one video: our test split (one decode) with each of `backends`, and the same views decoded one
    temporal view at a time with decord (what a loader that treats every view as its own sample does)."""
    rng = np.random.default_rng(1)

    def decode_once(backend: str) -> Callable[[], torch.Tensor]:
        dataset = our_dataset(folder, "test", backend)
        return lambda: dataset[SampleKey(int(rng.integers(len(dataset))), 0)]["video"]

    dataset = our_dataset(folder, "test", "decord")

    def decode_each_view() -> torch.Tensor:
        record = dataset.records[int(rng.integers(len(dataset)))]
        clips = []
        with open_video(record.source, backend="decord") as reader:
            views = dataset.plan_views(reader, np.random.default_rng(0))
        for view in views:
            with open_video(record.source, backend="decord") as reader:
                clips.append(dataset.transform(reader.get_frames(view.tolist())))
        return torch.cat(clips)

    loaders = {f"decode once (ours, {backend})": decode_once(backend) for backend in backends}
    return {**loaders, "decode each view (decord)": decode_each_view}


def check_clip(name: str, clip: torch.Tensor, shape: list[int]) -> None:
    if list(clip.shape) != shape or clip.dtype != torch.float32:
        raise RuntimeError(f"{name} returned {clip.dtype} {list(clip.shape)}, expected float32 {shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="4 short videos, 4 clips per loader")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "hiera_video_data_bench"))
    parser.add_argument("--clips", type=int, default=None, help="clips per loader (default 48, smoke 4)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)  # a data-loader worker's setting (hiera_video.data.loader)
    count, seconds, clips = (4, 2.5, args.clips or 4) if args.smoke else (24, 3.0, args.clips or 48)
    folder = ensure_videos(os.path.join(args.data_dir, f"{count}x{seconds:g}s"), count, seconds)
    print(f"{count} videos of 320x240, {seconds:g} s at {FPS} fps in {folder}; {load_note()}", flush=True)

    backends = [b for b in ("torchcodec", "decord", "pyav") if backend_problem(b) is None]
    default = resolve_decoding("auto")[0]
    for missing in sorted({"torchcodec", "decord"} - set(backends)):
        print(f"{missing} rows left out: {backend_problem(missing)}")
    train = {f"ours ({backend})": our_clips(folder, backend) for backend in backends}
    train.update({"PyTorchVideo (pyav)": pytorchvideo_clips(folder, "pyav"),
                  "PyTorchVideo (decord)": pytorchvideo_clips(folder, "decord")})
    for name, loader in train.items():
        check_clip(name, loader(), [3, NUM_FRAMES, CROP, CROP])
    train_times = interleaved_times(train, clips, warmup=0)
    views = view_loaders(folder, [b for b in backends if b != "pyav"])
    for name, loader in views.items():
        check_clip(name, loader(), [TEMPORAL_VIEWS * SPATIAL_CROPS, 3, NUM_FRAMES, CROP, CROP])
    view_times = interleaved_times(views, max(2, clips // 4), warmup=0)

    per_second = {name: 1.0 / median(t) for name, t in {**train_times, **view_times}.items()}
    best_ptv = max(per_second["PyTorchVideo (pyav)"], per_second["PyTorchVideo (decord)"])
    rows = []
    for name in train:
        ours = name.startswith("ours")
        rows.append([name, "train clip", f"{per_second[name]:.2f}", f"{1000 * median(train_times[name]):.0f}",
                     f"{per_second[name] / per_second['ours (decord)']:.2f}" if ours else "-",
                     f"{per_second[name] / best_ptv:.2f}" if ours else "-"])
    once_decord = per_second["decode once (ours, decord)"]
    for name in views:
        rows.append([name, f"{TEMPORAL_VIEWS}x{SPATIAL_CROPS} views", f"{per_second[name]:.2f}",
                     f"{1000 * median(view_times[name]):.0f}", f"{per_second[name] / once_decord:.2f}", "-"])
    print(format_table(["loader", "sample", "samples/s", "median ms", "vs ours (decord)", "vs best PTV"], rows))
    ours = per_second[f"ours ({default})"]
    verdict = "met" if ours / best_ptv >= TARGET_SPEEDUP else "MISSED"
    multi = once_decord / per_second["decode each view (decord)"]
    versus_decord = "".join(f"; ours ({b}) {per_second[f'ours ({b})'] / per_second['ours (decord)']:.2f}x ours (decord)"
                            for b in backends if b != "decord")
    print(f"{load_note()}")
    print(f"summary: the default loader, ours ({default}), {ours:.1f} clips/s = {ours / best_ptv:.2f}x the faster "
          f"PyTorchVideo loader (target >= {TARGET_SPEEDUP:g}x: {verdict}){versus_decord}; "
          f"{TEMPORAL_VIEWS}x{SPATIAL_CROPS} test views decoded once {multi:.2f}x faster than per view")


if __name__ == "__main__":
    main()
