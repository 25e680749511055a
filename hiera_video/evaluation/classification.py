"""Classification metrics: top-k errors of a batch and multi-view (temporal x spatial) score ensembling per video."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hiera_video.evaluation.per_class import class_accuracy, topk_hits

ENSEMBLE_METHODS = ("sum", "max")


def _hard_labels(labels: torch.Tensor, num_rows: int, num_classes: int) -> torch.Tensor:
    """Class indices [N] from int labels [N] or soft/one-hot labels [N, C] (argmax)."""
    if labels.ndim == 2:
        if labels.shape != (num_rows, num_classes):
            raise ValueError(f"Soft labels have shape {tuple(labels.shape)}, expected ({num_rows}, {num_classes})")
        return labels.argmax(dim=1)
    if labels.shape != (num_rows,):
        raise ValueError(f"Labels have shape {tuple(labels.shape)}, expected ({num_rows},) or ({num_rows}, "
                         f"{num_classes})")
    if labels.is_floating_point():
        raise ValueError(f"1-D labels must be integer class indices, got dtype {labels.dtype}")
    return labels.long()


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of rows whose label is among the k highest scores, for each k (k clipped to the class count)."""
    if scores.ndim != 2:
        raise ValueError(f"Scores must be [N, num_classes], got shape {tuple(scores.shape)}")
    num_rows, num_classes = scores.shape
    labels = _hard_labels(labels, num_rows, num_classes)
    return [int(hits.sum()) for hits in topk_hits(scores, labels, ks)]


def topk_errors(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k error in percent for each k; labels are class indices [B] or soft targets [B, C] (argmax)."""
    return topk_error_rates(logits, labels, ks).tolist()


def topk_error_rates(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """topk_errors as float64 [len(ks)] on the logits' device, computed without reading anything on the host (the
    training step's statistics stay on the device until a log step)."""
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"Logits must be a non-empty [B, num_classes] tensor, got shape {tuple(logits.shape)}")
    num_rows, num_classes = logits.shape
    hits = topk_hits(logits, _hard_labels(labels, num_rows, num_classes), ks)
    return 100.0 * (1.0 - hits.sum(dim=1, dtype=torch.float64) / num_rows)


class MultiViewAggregator:
    """Ensembles per-view scores into per-video scores, counting every (video, view) pair once.

    A pair seen again (DistributedSampler padding, a repeated batch) is ignored, so no view is double-counted.
    `num_views` (views expected per video) lets `finalize` report videos that got fewer.
    """

    def __init__(self, num_videos: int, num_classes: int, ensemble: str = "sum",
                 num_views: int | None = None) -> None:
        if ensemble not in ENSEMBLE_METHODS:
            raise ValueError(f"Unknown ensemble method '{ensemble}': expected one of {ENSEMBLE_METHODS}")
        if num_videos < 1 or num_classes < 1 or (num_views is not None and num_views < 1):
            raise ValueError(f"num_videos, num_classes and num_views must be >= 1, got {num_videos}, "
                             f"{num_classes}, {num_views}")
        self.num_videos = num_videos
        self.num_classes = num_classes
        self.ensemble = ensemble
        self.num_views = num_views
        fill = 0.0 if ensemble == "sum" else float("-inf")
        self.scores = torch.full((num_videos, num_classes), fill)
        self.labels = torch.full((num_videos,), -1, dtype=torch.long)  # -1: no label seen yet
        self.view_counts = torch.zeros(num_videos, dtype=torch.long)
        self._seen: set[tuple[int, int]] = set()

    def _check_indices(self, video_idx: torch.Tensor, view_idx: torch.Tensor, num_rows: int) -> None:
        for name, idx in (("video_idx", video_idx), ("view_idx", view_idx)):
            if idx.shape != (num_rows,) or idx.is_floating_point():
                raise ValueError(f"{name} must be an integer tensor of shape ({num_rows},), got "
                                 f"{idx.dtype} {tuple(idx.shape)}")
        bad_videos = video_idx[(video_idx < 0) | (video_idx >= self.num_videos)]
        if len(bad_videos):
            raise IndexError(f"video_idx {bad_videos[0].item()} out of range [0, {self.num_videos})")
        max_views = self.num_views if self.num_views is not None else math.inf
        bad_views = view_idx[(view_idx < 0) | (view_idx >= max_views)]
        if len(bad_views):
            raise IndexError(f"view_idx {bad_views[0].item()} out of range [0, {max_views})")

    def _set_labels(self, videos: torch.Tensor, labels: torch.Tensor) -> None:
        """Record labels (-1 = unknown), refusing a video whose rows disagree with each other or with before."""
        known = labels >= 0
        videos, labels = videos[known], labels[known]
        updated = self.labels.clone()
        updated[videos] = labels  # with repeated videos, one of their labels wins
        current = self.labels[videos]
        other = torch.where(current >= 0, current, updated[videos])
        conflict = other != labels
        if conflict.any():
            i = int(conflict.nonzero()[0])
            raise ValueError(f"Video {videos[i].item()} has label {labels[i].item()}, but other views say "
                             f"{other[i].item()}")
        self.labels = updated

    def _accumulate(self, videos: torch.Tensor, scores: torch.Tensor) -> None:
        if self.ensemble == "sum":
            self.scores.index_add_(0, videos, scores)
        else:
            index = videos[:, None].expand(-1, self.num_classes)
            self.scores.scatter_reduce_(0, index, scores, reduce="amax")
        self.view_counts += torch.bincount(videos, minlength=self.num_videos)

    def update(self, scores: torch.Tensor, video_idx: torch.Tensor, view_idx: torch.Tensor,
               labels: torch.Tensor | None = None) -> int:
        """Add per-view scores [N, C] (softmax probabilities) of videos `video_idx` [N], views `view_idx` [N];
        `labels` [N] (class index, -1 unknown) or [N, C] soft. Returns how many rows were new."""
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f"Scores must be [N, {self.num_classes}], got shape {tuple(scores.shape)}")
        num_rows = scores.shape[0]
        video_idx, view_idx = video_idx.detach().cpu(), view_idx.detach().cpu()
        self._check_indices(video_idx, view_idx, num_rows)
        if labels is not None:
            self._set_labels(video_idx, _hard_labels(labels.detach().cpu(), num_rows, self.num_classes))
        new_rows = []
        for row, pair in enumerate(zip(video_idx.tolist(), view_idx.tolist())):
            if pair not in self._seen:
                self._seen.add(pair)
                new_rows.append(row)
        if new_rows:
            rows = torch.tensor(new_rows)
            self._accumulate(video_idx[rows], scores.detach().float().cpu()[rows])
        return len(new_rows)

    def _scored(self) -> torch.Tensor:
        return self.view_counts > 0

    def video_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The videos with at least one view (indices [V], ascending) and their scores [V, C]: the mean probability
        over the views for "sum", the maximum for "max". `finalize` and `per_video_predictions` use these numbers."""
        videos = self._scored().nonzero().flatten()
        scores = self.scores[videos]
        if self.ensemble == "sum":
            scores = scores / self.view_counts[videos, None]
        return videos, scores

    def finalize(self) -> dict[str, Any]:
        """Top-1/top-5 accuracy (%) over the labelled videos that got at least one view, their number, the mean
        over classes of the per-class top-1 accuracy (%), and how many videos got fewer views than `num_views`
        (or none, when `num_views` is unknown)."""
        expected = self.num_views if self.num_views is not None else 1
        videos, scores = self.video_scores()
        labels = self.labels[videos]
        evaluated = labels >= 0
        if not evaluated.any():
            raise ValueError("No labelled video has any view: nothing to evaluate")
        top1, top5 = topk_correct(scores[evaluated], labels[evaluated], ks=(1, 5))
        num = int(evaluated.sum())
        return {
            "top1_acc": 100.0 * top1 / num,
            "top5_acc": 100.0 * top5 / num,
            "mean_class_acc": class_accuracy(scores, labels, ks=(1,)).mean_accuracy(1),
            "num_videos": num,
            "videos_with_missing_views": int((self.view_counts < expected).sum()),
        }

    def per_video_predictions(self) -> list[dict[str, Any]]:
        """One row per video with views (as `video_scores`): `video` index, `label` (-1 unknown), `num_views`
        seen, the `top5` classes and their `scores`."""
        videos, scores = self.video_scores()
        top = scores.topk(min(5, self.num_classes), dim=1)
        return [{"video": video, "label": int(self.labels[video]), "num_views": int(self.view_counts[video]),
                 "top5": indices, "scores": values}
                for video, indices, values in zip(videos.tolist(), top.indices.tolist(), top.values.tolist())]

    def state(self) -> dict[str, Any]:
        """Tensors describing everything aggregated so far (for gathering across ranks, or a checkpoint)."""
        pairs = torch.tensor(sorted(self._seen), dtype=torch.long).reshape(-1, 2)
        return {"num_videos": self.num_videos, "num_classes": self.num_classes, "ensemble": self.ensemble,
                "num_views": self.num_views, "scores": self.scores.clone(), "labels": self.labels.clone(),
                "view_counts": self.view_counts.clone(), "seen_pairs": pairs}

    def merge(self, other: MultiViewAggregator | Mapping[str, Any]) -> None:
        """Add another aggregator's results (e.g. another rank's `state()`).

        With "max" a pair seen on both sides is harmless. With "sum" a pair seen on both sides cannot be taken
        out of an already summed video, so it raises: gather raw scores and call `update` instead, or shard the
        test set without padding.
        """
        other = other.state() if isinstance(other, MultiViewAggregator) else other
        for key in ("num_videos", "num_classes", "ensemble"):
            if other[key] != getattr(self, key):
                raise ValueError(f"Cannot merge aggregators with different {key}: {getattr(self, key)} vs "
                                 f"{other[key]}")
        other_pairs = {tuple(pair) for pair in other["seen_pairs"].tolist()}
        shared = self._seen & other_pairs
        if shared and self.ensemble == "sum":
            video, view = min(shared)
            raise ValueError(f"{len(shared)} (video, view) pairs were summed on both sides, e.g. video {video} "
                             f"view {view}; a sum ensemble cannot drop them after the fact")
        self._set_labels(torch.arange(self.num_videos), other["labels"])
        if self.ensemble == "sum":
            self.scores += other["scores"]
        else:
            self.scores = torch.maximum(self.scores, other["scores"])
        self._seen |= other_pairs
        self.view_counts = torch.zeros_like(self.view_counts)
        if self._seen:
            videos = torch.tensor([video for video, _ in self._seen])
            self.view_counts = torch.bincount(videos, minlength=self.num_videos)
