"""Sliding windows over long videos, streamed: each window is a short video of its own, read through a frame cache
that keeps only the frames later windows still need, so memory stays bounded however long the video is.

A window is treated exactly like a whole test video: the dataset's test views are planned inside it and decoded
with clip_dataset.decode_clips, the function the test loop uses. Read through video_io's PyAV reader, which decodes
on from where the previous read stopped, consecutive windows decode each frame of the video once.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from hiera_video.data.clip_dataset import ClipTransform, ViewPlanner, decode_clips
from hiera_video.data.video_io import VideoReader


@dataclass(frozen=True)
class Window:
    """Seconds [start, end) of a video, and its frames [first_frame, stop_frame)."""

    start: float
    end: float
    first_frame: int
    stop_frame: int


def sliding_windows(num_frames: int, fps: float, window: float, stride: float) -> list[Window]:
    """Windows of `window` seconds every `stride` seconds from the start, until one reaches the end of the video
    (that last one may be shorter; a video shorter than `window` is one window)."""
    if not (window > 0 and stride > 0):
        raise ValueError(f"window and stride must be positive seconds, got window={window}, stride={stride}")
    if num_frames < 1 or not fps > 0:
        raise ValueError(f"a video needs frames and a positive frame rate, got {num_frames} frames at {fps} fps")
    duration = num_frames / fps
    windows = []
    # The tolerance keeps float rounding (a window ending at 8.000000001 s of an 8 s video) from adding a sliver.
    for k in range(max(1, math.ceil((duration - window) / stride - 1e-9) + 1)):
        start = k * stride
        end = min(start + window, duration)
        first = min(int(round(start * fps)), num_frames - 1)
        windows.append(Window(start, end, first, max(first + 1, min(int(round(end * fps)), num_frames))))
    return windows


class FrameCache:
    """Frames of `reader` read forward in time: each is decoded once, kept while a window may still need it, and
    dropped by `release_before`."""

    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader
        self.frames: dict[int, torch.Tensor] = {}

    def get(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 frames [len(indices), H, W, 3] at sorted, distinct `indices`."""
        missing = [int(i) for i in indices if int(i) not in self.frames]
        if missing:
            # Views into the decoded batch: it is freed once all of its frames are released (copying each frame
            # out instead fragments the heap into hundreds of MB on long videos).
            for index, frame in zip(missing, self.reader.get_frames(missing)):
                self.frames[index] = frame
        return torch.stack([self.frames[int(i)] for i in indices])

    def release_before(self, index: int) -> None:
        """Forget the frames before `index`."""
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]


class VideoSegment(VideoReader):
    """Frames [first, stop) of a cached video, as a video of their own (frame 0 = `first`)."""

    def __init__(self, cache: FrameCache, first: int, stop: int) -> None:
        reader = cache.reader
        if not 0 <= first < stop <= reader.num_frames:
            raise ValueError(f"{reader.path}: segment [{first}, {stop}) is outside its {reader.num_frames} frames")
        self.cache = cache
        self.first = first
        self.path = f"{reader.path} [frames {first}-{stop - 1}]"
        self.num_frames = stop - first
        self.fps = reader.fps
        self.height, self.width = reader.height, reader.width

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        return self.cache.get(indices + self.first)


def window_clips(reader: VideoReader, windows: list[Window], plan_views: ViewPlanner, transform: ClipTransform,
                 rng: np.random.Generator) -> Iterator[tuple[Window, torch.Tensor]]:
    """Each window (in order) with its clips [V,C,T,H,W], planned and transformed as the test views of a whole
    video would be. Frames shared by overlapping windows are decoded once; frames before the next window's start
    are released as soon as a window is done."""
    cache = FrameCache(reader)
    for k, window in enumerate(windows):
        clips = decode_clips(VideoSegment(cache, window.first_frame, window.stop_frame), plan_views, transform, rng)
        cache.release_before(windows[k + 1].first_frame if k + 1 < len(windows) else reader.num_frames)
        yield window, clips
