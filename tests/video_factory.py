"""Real video files for the data tests: index-coded clips, frame folders, and broken files.

An index-coded clip shows one flat colour per frame that encodes the frame's index (red = 16 * (i % 16),
green = 16 * (i // 16)), so a test can read back which source frame a decoder returned, through lossy codecs.
"""
from __future__ import annotations

import os

import av
import numpy as np
import torch
from torchvision.io import write_png

from hiera_video.data.video_io import write_video

INDEX_STEP = 16
INDICES_PER_LEVEL = 16


def index_coded_frames(
    num_frames: int, height: int = 48, width: int = 64, noise_seed: int | None = None
) -> np.ndarray:
    """uint8 [num_frames, height, width, 3]; frame i encodes i (up to 255) in its red and green levels.

    With `noise_seed` the blue channel is random noise, which makes every frame cost real bytes in the file.
    """
    if num_frames > INDICES_PER_LEVEL**2:
        raise ValueError(f"at most {INDICES_PER_LEVEL ** 2} frames can be index-coded")
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    if noise_seed is not None:
        frames[..., 2] = np.random.default_rng(noise_seed).integers(0, 256, (num_frames, height, width))
    for i in range(num_frames):
        frames[i, ..., 0] = INDEX_STEP * (i % INDICES_PER_LEVEL)
        frames[i, ..., 1] = INDEX_STEP * (i // INDICES_PER_LEVEL)
    return frames


def decode_frame_ids(frames) -> np.ndarray:
    """Frame indices read back from index-coded frames [T, H, W, 3] (tensor or array)."""
    frames = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    means = frames.reshape(len(frames), -1, 3).astype(float).mean(axis=1)
    low, high = np.round(means[:, 0] / INDEX_STEP), np.round(means[:, 1] / INDEX_STEP)
    return (low + INDICES_PER_LEVEL * high).astype(np.int64)


def make_video(path: str, frames=None, fps: float = 30.0, codec: str = "libx264") -> str:
    """Write `frames` (default: 40 index-coded frames) to `path`; the extension picks the container."""
    write_video(path, index_coded_frames(40) if frames is None else frames, fps=fps, codec=codec)
    return path


def make_truncated_video(path: str, keep_fraction: float = 0.6, index_first: bool = False) -> str:
    """An mp4 cut after `keep_fraction` of its bytes, as after an interrupted download.

    By default the index (moov atom) sits at the end and is lost, so the file cannot be opened at all. With
    `index_first` (ffmpeg's faststart) the index survives: the file opens, but the later frames are gone.
    """
    with av.open(path, "w", options={"movflags": "+faststart"} if index_first else {}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        for frame in index_coded_frames(60, noise_seed=0):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return truncate_file(path, keep_fraction)


def truncate_file(path: str, keep_fraction: float) -> str:
    """Cut `path` after `keep_fraction` of its bytes."""
    with open(path, "r+b") as f:
        f.truncate(int(os.path.getsize(path) * keep_fraction))
    return path


def make_empty_file(path: str) -> str:
    open(path, "wb").close()
    return path


def make_frame_folder(folder: str, num_frames: int, names: str = "img_{}.png") -> list[str]:
    """A folder of index-coded PNG frames named with `names` (unpadded by default); returns the paths in order."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, frame in enumerate(index_coded_frames(num_frames)):
        paths.append(os.path.join(folder, names.format(i)))
        write_png(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), paths[-1])
    return paths


def make_long_video(path: str, sources: list[str], seconds: float, fps: int, scale: int = 1) -> int:
    """A video of `seconds` at `fps` made of the `sources` clips one after another, repeated as needed, each
    frame enlarged `scale` times (nearest). Encoded frame by frame (x264 ultrafast), so a long video costs the
    test little time and memory. Returns the number of frames."""
    from hiera_video.data.video_io import open_video

    clips = []
    for source in sources:
        with open_video(source) as reader:
            clips.append(reader.get_frames(list(range(reader.num_frames))).numpy())
    frames = np.concatenate(clips)
    total = int(round(seconds * fps))
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2] * scale, frames.shape[1] * scale
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(total):
            frame = frames[i % len(frames)].repeat(scale, axis=0).repeat(scale, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return total
