"""A dataset of labelled videos that turns each video into one or more clips, skipping files that fail to decode.

Datasets (Kinetics, SSv2) differ in how they list videos and pick frame indices; decoding, the decode-once rule
for several views, per-sample seeding and the bad-file policy live here once.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from hiera_video.data.loader import SampleKey
from hiera_video.data.sampling import union_indices
from hiera_video.data.video_io import VideoDecodeError, VideoReader, open_video

logger = logging.getLogger(__name__)

# Draws of a replacement sample before giving up on a batch slot: far more than any healthy split needs.
MAX_REPLACEMENT_DRAWS = 50


T = TypeVar("T")
Failure = TypeVar("Failure")


def load_with_replacement(key: SampleKey | int, load: Callable[[int, np.random.Generator], T],
                          failure: Callable[[int, Exception], Failure],
                          next_index: Callable[[int, np.random.Generator], int | None],
                          name: str) -> tuple[T | None, int, list[Failure]]:
    """Loads sample `key.index` with all randomness seeded by `key.seed`; a video that fails to decode is reported
    as `failure(index, error)` and `next_index` chooses a replacement (None: give up and return None).

    Returns (sample or None, the index actually loaded, the failures). Raises after MAX_REPLACEMENT_DRAWS failures.
    """
    if not isinstance(key, SampleKey):
        key = SampleKey(int(key), 0)
    rng = np.random.default_rng(key.seed)
    bad_files: list[Failure] = []
    index: int = key.index
    for _ in range(MAX_REPLACEMENT_DRAWS):
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(key.seed)
                return load(index, rng), index, bad_files
        except (VideoDecodeError, OSError) as exc:
            bad_files.append(failure(index, exc))
            replacement = next_index(index, rng)
            if replacement is None:
                return None, index, bad_files
            index = replacement
    raise RuntimeError(f"{name}: {MAX_REPLACEMENT_DRAWS} videos in a row failed to decode; last ones: "
                       + "; ".join(map(str, bad_files[-3:])))


@dataclass(frozen=True)
class VideoRecord:
    """One labelled video: where it is (a file, a frame folder or a list of frame files) and its class."""

    source: str | tuple[str, ...]
    label: int
    video_id: str


# Picks the frame indices of every view of a video: (reader, rng) -> one index array per temporal view.
ViewPlanner = Callable[[VideoReader, np.random.Generator], Sequence[np.ndarray]]
# Turns the decoded frames of one temporal view (uint8 [T,H,W,3]) into clips [K,C,T,H,W] (K spatial crops).
ClipTransform = Callable[[torch.Tensor], torch.Tensor]


def decode_clips(reader: VideoReader, plan_views: ViewPlanner, transform: ClipTransform,
                 rng: np.random.Generator) -> torch.Tensor:
    """The clips [V,C,T,H,W] of one video: every planned view's frames decoded in one pass (a frame shared by views
    is decoded once), each temporal view transformed into its spatial crops, in view order.

    The test loop (ClipDataset) and hiera_video.inference both make their clips here, so a prediction sees exactly
    the clips the evaluation saw.
    """
    views = plan_views(reader, rng)
    unique, positions = union_indices(views)
    frames = reader.get_frames(unique.tolist())
    # A view using every decoded frame in order (a training clip, mostly) is transformed without a gathering copy,
    # and a single view's clips are returned as they are: both copies cost ~10% of a training sample.
    clips = [transform(frames if np.array_equal(pos, np.arange(len(frames))) else frames[torch.as_tensor(pos)])
             for pos in positions]
    return clips[0] if len(clips) == 1 else torch.cat(clips)


class ClipDataset(Dataset):
    """Labelled videos -> dict(video [V,C,T,H,W], label, index, view [V], bad_files).

    Each video is decoded once for all its views, by the file `backend` on `device` (resolved from the config
    with video_io.resolve_decoding). A video that fails to decode is reported in `bad_files` and replaced by
    another randomly drawn one (`replace_randomly=True`, training), or by the next healthy one (evaluation: the
    replacement keeps its own index, so per-video aggregation never counts it twice).
    """

    def __init__(self, records: Sequence[VideoRecord], plan_views: ViewPlanner, transform: ClipTransform,
                 backend: str, replace_randomly: bool, name: str, device: str = "cpu") -> None:
        if not records:
            raise ValueError(f"{name}: the split lists no videos")
        self.records = list(records)
        self.plan_views = plan_views
        self.transform = transform
        self.backend = backend
        self.device = device
        self.replace_randomly = replace_randomly
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        record = self.records[index]
        with open_video(record.source, backend=self.backend, device=self.device) as reader:
            return decode_clips(reader, self.plan_views, self.transform, rng)

    def __getitem__(self, key: SampleKey | int) -> dict:
        def next_index(index: int, rng: np.random.Generator) -> int:
            return int(rng.integers(len(self))) if self.replace_randomly else (index + 1) % len(self)

        clips, index, bad_files = load_with_replacement(
            key, self._load, lambda i, error: f"{self.records[i].video_id}: {error}",  # not a frame list's paths
            next_index, self.name)
        return {
            "video": clips,
            "view": torch.arange(clips.shape[0]),
            "label": self.records[index].label,
            "index": index,
            "bad_files": bad_files,
        }
