"""Temporal sampling: which frame indices of a video make up a clip (PySlowFast semantics).

A clip of `num_frames` frames `sampling_rate` apart at `target_fps` spans
num_frames * sampling_rate * video_fps / target_fps source frames; its indices are
linspace(start, start + span - 1, num_frames), rounded and clamped to the video, so videos shorter than a clip
repeat their last frame. All functions are pure; the random ones take a numpy Generator.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def clip_span(num_frames: int, sampling_rate: int, video_fps: float, target_fps: float) -> float:
    """Number of source frames covered by one clip."""
    if num_frames < 1 or sampling_rate < 1:
        raise ValueError(f"num_frames and sampling_rate must be >= 1, got {num_frames} and {sampling_rate}")
    if not (video_fps > 0 and target_fps > 0):
        raise ValueError(f"frame rates must be positive, got video_fps={video_fps} and target_fps={target_fps}")
    return num_frames * sampling_rate * video_fps / target_fps


def _clip_at(start: float, span: float, video_len: int, num_frames: int) -> np.ndarray:
    if video_len < 1:
        raise ValueError(f"video_len must be >= 1, got {video_len}")
    positions = np.linspace(start, start + span - 1, num_frames)
    return np.clip(np.round(positions), 0, video_len - 1).astype(np.int64)


def _slack(video_len: int, span: float) -> float:
    """How far a clip's start can move while the clip stays inside the video."""
    return max(video_len - span, 0.0)


def random_clip_indices(
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    video_fps: float,
    target_fps: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of one clip with a uniformly random start (training)."""
    span = clip_span(num_frames, sampling_rate, video_fps, target_fps)
    start = rng.uniform(0.0, _slack(video_len, span))
    return _clip_at(start, span, video_len, num_frames)


def center_clip_indices(
    video_len: int, num_frames: int, sampling_rate: int, video_fps: float, target_fps: float
) -> np.ndarray:
    """Indices of the clip centred in the video (deterministic validation view)."""
    span = clip_span(num_frames, sampling_rate, video_fps, target_fps)
    return _clip_at(_slack(video_len, span) / 2, span, video_len, num_frames)


def uniform_view_indices(
    video_len: int,
    num_frames: int,
    sampling_rate: int,
    video_fps: float,
    target_fps: float,
    num_views: int,
) -> list[np.ndarray]:
    """`num_views` test clips evenly spaced from the first possible start to the last (centre clip for one view)."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if num_views == 1:
        return [center_clip_indices(video_len, num_frames, sampling_rate, video_fps, target_fps)]
    span = clip_span(num_frames, sampling_rate, video_fps, target_fps)
    slack = _slack(video_len, span)
    return [_clip_at(slack * k / (num_views - 1), span, video_len, num_frames) for k in range(num_views)]


def _segment_bounds(video_len: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame (inclusive) of each of `num_segments` equal segments (PySlowFast SSv2 rounding)."""
    if video_len < 1 or num_segments < 1:
        raise ValueError(f"video_len and num_segments must be >= 1, got {video_len} and {num_segments}")
    size = (video_len - 1) / num_segments
    edges = np.round(size * np.arange(num_segments + 1)).astype(np.int64)
    return edges[:-1], edges[1:]


def segment_indices(
    video_len: int, num_segments: int, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """TSN-style indices (SSv2): one frame per equal segment, random in training, the middle one otherwise."""
    starts, ends = _segment_bounds(video_len, num_segments)
    if not train:
        return (starts + ends) // 2
    if rng is None:
        raise ValueError("segment_indices(train=True) needs an rng")
    return rng.integers(starts, ends, endpoint=True).astype(np.int64)


def jittered_segment_views(video_len: int, num_segments: int, num_views: int) -> list[np.ndarray]:
    """`num_views` deterministic TSN views: view k takes the frame at fraction (k + 1/2) / num_views of each
    segment, so one view equals segment_indices(train=False)."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    starts, ends = _segment_bounds(video_len, num_segments)
    return [starts + (ends - starts) * (2 * k + 1) // (2 * num_views) for k in range(num_views)]


def union_indices(views: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct sorted indices of all `views`, and for each view the positions of its indices in that union.

    Decode `unique` once, then `frames[positions[k]]` is view k.
    """
    if not views:
        raise ValueError("union_indices needs at least one view")
    arrays = [np.asarray(view, dtype=np.int64) for view in views]
    unique, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    bounds = np.cumsum([0] + [len(a) for a in arrays])
    inverse = inverse.reshape(-1)
    return unique, [inverse[bounds[k] : bounds[k + 1]] for k in range(len(arrays))]
