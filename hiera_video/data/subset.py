"""A seeded, class-balanced fraction of a training list (DATA.TRAIN_FRACTION): low-label fine-tuning runs."""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def class_balanced_indices(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Indices (in list order) of `fraction` of each class's entries, at least one per class, drawn with `seed`.

    The same (labels, fraction, seed) always gives the same indices; a smaller fraction with the same seed picks a
    subset of a larger one's. Unlabelled entries (label < 0) are never picked.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"DATA.TRAIN_FRACTION must lie in (0, 1], got {fraction}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        if label >= 0:
            by_class[label].append(index)
    chosen: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = np.random.default_rng((seed, label)).permutation(len(members))
        keep = max(1, round(fraction * len(members)))
        chosen.extend(members[i] for i in order[:keep])
    return sorted(chosen)


def log_subset(name: str, total: int, kept: int, fraction: float, seed: int) -> None:
    """One line saying which part of the list trains."""
    logger.info("%s: DATA.TRAIN_FRACTION %g keeps %d of %d videos (class-balanced, seed %d)", name, fraction, kept,
                total, seed)

