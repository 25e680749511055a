"""`test_scores.npz`: the per-video class scores of a classification test, as its metrics computed them.

Arrays (NumPy .npz, no pickles):
    video_ids     str [V]      the dataset's video ids (Kinetics: the CSV path; SSv2: the video id)
    paths         str [V]      where each video was read (a file, or the folder of its frames)
    labels        int64 [V]    the class index, -1 for a video without a label
    scores        float32 [V, C]  mean softmax probability over the views ("sum" ensemble) or their maximum ("max")
    num_views     int64 [V]    views that reached the scores
    class_names   str [C]      the class names in label order (the indices as text when the config has none)
    dataset       str []       TEST.DATASET
    ensemble      str []       TEST.ENSEMBLE_METHOD
Rows are the tested videos that got at least one view, in dataset order (the rows of test_predictions.csv).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass

import numpy as np

from hiera_video.utils.atomic import atomic_open

SCORES_FILE = "test_scores.npz"
_ARRAYS = ("video_ids", "paths", "labels", "scores", "num_views", "class_names")
_TEXTS = ("dataset", "ensemble")


@dataclass(frozen=True)
class VideoScores:
    """The contents of a test_scores.npz (see the module docstring)."""

    video_ids: np.ndarray
    paths: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    num_views: np.ndarray
    class_names: np.ndarray
    dataset: str
    ensemble: str

    def __post_init__(self) -> None:
        num_videos, num_classes = self.scores.shape
        for name in ("video_ids", "paths", "labels", "num_views"):
            if getattr(self, name).shape != (num_videos,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}; scores have {num_videos} rows")
        if self.class_names.shape != (num_classes,):
            raise ValueError(f"class_names has shape {self.class_names.shape}; scores have {num_classes} columns")


def save_test_scores(path: str, scores: VideoScores) -> None:
    """Writes `scores` to `path` atomically (the complete file or none)."""
    arrays = {name: np.asarray(getattr(scores, name)) for name in _ARRAYS + _TEXTS}
    arrays["scores"] = arrays["scores"].astype(np.float32)
    for name in ("labels", "num_views"):
        arrays[name] = arrays[name].astype(np.int64)
    for name in ("video_ids", "paths", "class_names"):
        arrays[name] = arrays[name].astype(str)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_test_scores(path: str) -> VideoScores:
    """The contents of a test_scores.npz; errors name the file and what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"Score file not found: {path} (a classification test run writes "
                                f"OUTPUT_DIR/{SCORES_FILE})") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from None
    missing = [name for name in _ARRAYS + _TEXTS if name not in arrays]
    if missing:
        raise ValueError(f"{path} is not a test_scores.npz: it lacks {', '.join(missing)}")
    if arrays["scores"].ndim != 2:
        raise ValueError(f"{path}: scores must be [videos, classes], got shape {arrays['scores'].shape}")
    try:
        return VideoScores(**{name: arrays[name] for name in _ARRAYS}, **{name: str(arrays[name]) for name in _TEXTS})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
