"""Per-class analysis of per-video class scores: top-k hits, accuracy per class, mean class accuracy, the confusion
matrix, the most frequent confusions, and confusions between mirrored twin classes (left <-> right).

Scores are [videos, classes] (any monotonic per-video score: summed or mean probabilities, logits); labels are class
indices, -1 for a video without a label, which every function here leaves out. Top-k uses torch.topk, as the
top-k errors of the test do, so per-class counts add up exactly to the overall ones (ties included).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch


def topk_hits(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
              ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """bool [len(ks), N] on the scores' device: whether each row's label is among its k highest scores (k clipped to
    the class count)."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels).long()
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"Expected scores [N, C] and labels [N], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if any(k < 1 for k in ks):
        raise ValueError(f"Every k must be >= 1, got {tuple(ks)}")
    num_classes = scores.shape[1]
    top = scores.topk(min(max(ks), num_classes), dim=1).indices
    hits = top == labels.to(top.device)[:, None]
    return torch.stack([hits[:, :min(k, num_classes)].any(dim=1) for k in ks])


def top1_predictions(scores: np.ndarray) -> np.ndarray:
    """int64 [N]: each row's highest-scoring class, chosen as topk_hits chooses it."""
    return torch.as_tensor(scores).topk(1, dim=1).indices[:, 0].numpy()


@dataclass(frozen=True)
class ClassAccuracy:
    """Labelled videos per class (`support`, int [C]) and, for each k, how many of them had their class in the top k
    (`correct[k]`, int [C])."""

    support: np.ndarray
    correct: Mapping[int, np.ndarray]

    def accuracy(self, k: int) -> np.ndarray:
        """Top-k accuracy in % per class; NaN for a class without videos."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.support > 0, 100.0 * self.correct[k] / self.support, np.nan)

    def mean_accuracy(self, k: int) -> float:
        """Mean over the classes with videos of their top-k accuracy (%): every class counts the same."""
        if not (self.support > 0).any():
            raise ValueError("No class has a labelled video: no mean class accuracy")
        return float(np.nanmean(self.accuracy(k)))


def class_accuracy(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, ks: Sequence[int] = (1, 5)
                   ) -> ClassAccuracy:
    """Per-class top-k counts of per-video `scores` [N, C] against `labels` [N] (-1 rows left out)."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels).long()
    num_classes = scores.shape[1]
    known = labels >= 0
    hits = topk_hits(scores[known], labels[known], ks).cpu()
    counted = labels[known].cpu()
    support = torch.bincount(counted, minlength=num_classes)
    correct = {k: torch.bincount(counted[hit], minlength=num_classes).numpy() for k, hit in zip(ks, hits)}
    return ClassAccuracy(support.numpy(), correct)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C]: videos of class i (row, the label) predicted as class j (column); -1 labels left out."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    known = labels >= 0
    pairs = labels[known] * num_classes + predicted[known]
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusions(matrix: np.ndarray) -> list[tuple[int, int, int]]:
    """(true class, predicted class, videos) for every off-diagonal cell with videos, most frequent first (ties in
    class order)."""
    off_diagonal = matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    true, predicted = np.nonzero(off_diagonal)
    order = sorted(zip(-off_diagonal[true, predicted], true, predicted))
    return [(int(t), int(p), int(-negative)) for negative, t, p in order]


def most_confused_classes(matrix: np.ndarray, count: int) -> np.ndarray:
    """The `count` classes with the most errors (their videos predicted as another class plus other videos predicted
    as them), in class order; all classes when there are no more than `count`."""
    if count >= len(matrix):
        return np.arange(len(matrix))
    errors = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)
    chosen = np.argsort(-errors, kind="stable")[:count]
    return np.sort(chosen)


@dataclass(frozen=True)
class TwinConfusion:
    """A pair of mirrored classes (a < b): each one's videos, and how many of them were predicted as the other."""

    class_a: int
    class_b: int
    support_a: int
    a_as_b: int
    support_b: int
    b_as_a: int


def twin_confusions(matrix: np.ndarray, twins: Mapping[int, int]) -> list[TwinConfusion]:
    """One row per pair of `twins` (class -> its mirrored class, both ways), in class order."""
    support = matrix.sum(1)
    pairs = sorted({(min(a, b), max(a, b)) for a, b in twins.items() if a != b})
    return [TwinConfusion(a, b, int(support[a]), int(matrix[a, b]), int(support[b]), int(matrix[b, a]))
            for a, b in pairs]
