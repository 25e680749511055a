"""The official reader's keep and order rules: at most `capacity` rows per keyframe (the min-heap of
`(score, action_id, y1, x1, y2, x2)`), by descending score, stably over heap order; ties that make that order
observable are replayed through the heap itself."""
from __future__ import annotations

import heapq

import numpy as np

from hiera_video.evaluation.ava.csv_rows import Rows


def _replay_heap(rows: list[tuple], capacity: int) -> list[tuple]:
    """The official per-keyframe reader step on (score, action_id, y1, x1, y2, x2) tuples in file order."""
    heap: list[tuple] = []
    for row in rows:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, row)
        elif row[0] > heap[0][0]:
            heapq.heapreplace(heap, row)
    return sorted(heap, key=lambda row: -row[0])


def _replay(rows: Rows, keyframes: np.ndarray, capacity: int) -> tuple[Rows, np.ndarray]:
    """Replay the official heap for the (ascending) keyframes: their kept rows in that order, and their counts."""
    selected = np.flatnonzero(np.isin(rows.keyframe, keyframes))
    selected = selected[np.argsort(rows.keyframe[selected], kind="stable")]  # grouped, file order inside
    tuples = list(zip(rows.scores[selected].tolist(), rows.labels[selected].tolist(),
                      *rows.boxes[selected].T.tolist()))
    bounds = np.searchsorted(rows.keyframe[selected], keyframes).tolist() + [len(selected)]
    kept = [_replay_heap(tuples[start:stop], capacity) for start, stop in zip(bounds[:-1], bounds[1:])]
    counts = np.array([len(group) for group in kept], dtype=np.int64)
    table = np.array([row for group in kept for row in group], dtype=np.float64).reshape(-1, 6)
    return Rows(np.repeat(keyframes, counts), table[:, 2:6], table[:, 1].astype(np.int64),
                 table[:, 0].copy()), counts


def _groups_with_ordered_ties(group: np.ndarray, scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                              candidate: np.ndarray) -> np.ndarray:
    """Groups where two candidate rows share class and score but not the box, so their order is observable.

    Rows are sorted by (group, descending score), so equal (group, score) rows are adjacent.
    """
    rows = np.flatnonzero(candidate)
    same_as_next = (group[rows[1:]] == group[rows[:-1]]) & (scores[rows[1:]] == scores[rows[:-1]])
    in_tie = np.zeros(len(rows), dtype=bool)
    in_tie[1:] |= same_as_next
    in_tie[:-1] |= same_as_next
    rows = rows[in_tie]
    if len(rows) < 2:
        return np.empty(0, dtype=np.int64)
    tie_run = np.cumsum(np.append(True, (group[rows[1:]] != group[rows[:-1]]) |
                                  (scores[rows[1:]] != scores[rows[:-1]])))
    box = boxes[rows]
    order = np.lexsort((box[:, 3], box[:, 2], box[:, 1], box[:, 0], labels[rows], tie_run))
    rows, tie_run, box = rows[order], tie_run[order], box[order]
    conflict = (tie_run[1:] == tie_run[:-1]) & (labels[rows[1:]] == labels[rows[:-1]]) & \
        (box[1:] != box[:-1]).any(axis=1)
    return np.unique(group[rows[1:][conflict]])


def keep_like_official(rows: Rows, capacity: int, drops_invalid: bool) -> Rows:
    """The rows the official reader keeps (at most `capacity` per keyframe, all if capacity < 1), grouped by
    keyframe in order of first appearance and in the official order inside a keyframe."""
    n = len(rows)
    if n == 0:
        return rows
    # Sort by (keyframe, descending score) through int64 composites (keyframe, score rank): several times faster
    # than np.lexsort. The order inside equal scores does not matter here.
    by_score = np.argsort(rows.scores)[::-1]
    rank = np.empty(n, dtype=np.int64)
    rank[by_score] = np.arange(n)
    composite = rows.keyframe * n + rank
    composite.sort()
    order = by_score[composite % n]
    group_start = np.flatnonzero(np.append(True, composite[1:] // n != composite[:-1] // n))
    group_size = np.diff(np.append(group_start, n))
    num_kept = group_size if capacity < 1 else np.minimum(group_size, capacity)
    kept_group = np.repeat(np.arange(len(group_start)), num_kept)
    kept = order[np.arange(len(kept_group)) + np.repeat(group_start - np.cumsum(num_kept) + num_kept, num_kept)]
    kept_rows = rows.take(kept)

    # Where ties make the heap's choice or order observable, replay the heap on the keyframe's rows.
    replay = np.zeros(len(group_start), dtype=bool)
    if capacity > 0:
        full = np.flatnonzero(group_size > capacity)
        replay[full] = rows.scores[order[group_start[full] + capacity]] == \
            rows.scores[order[group_start[full] + capacity - 1]]
    boxes = kept_rows.boxes
    valid = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3]) if drops_invalid else np.ones(len(kept), bool)
    replay[_groups_with_ordered_ties(kept_group, kept_rows.scores, kept_rows.labels, boxes,
                                     valid & ~replay[kept_group])] = True

    # Keyframes in order of first appearance (the official dict order).
    visit_rank = np.argsort(np.argsort(np.minimum.reduceat(order, group_start)))
    direct = ~replay[kept_group]
    parts, part_rank = [kept_rows.take(direct)], [visit_rank[kept_group[direct]]]
    replayed_groups = np.flatnonzero(replay)
    if len(replayed_groups):
        replayed, counts = _replay(rows, rows.keyframe[order[group_start[replayed_groups]]], capacity)
        parts.append(replayed)
        part_rank.append(np.repeat(visit_rank[replayed_groups], counts))
    result = Rows.concatenate(parts)
    return result.take(np.argsort(np.concatenate(part_rank), kind="stable"))
