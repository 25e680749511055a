"""Frame-mAP@0.5IoU: greedy matching per keyframe and class, VOC all-point AP per class, with the official
operations in the official order so the floats are identical."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hiera_video.evaluation.ava.readers import (
    AvaBoxes,
    read_detections,
    read_exclusions,
    read_groundtruth,
    read_labelmap,
)

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class AvaResult:
    """Frame-mAP and, per label-map id, {"name", "ap" (None when the class has no ground truth), "num_gt"}."""

    map: float
    per_class: dict[int, dict]

    def to_json_dict(self) -> dict:
        """`{"mAP": float or None, "per_class": {"<id>": {"name", "ap", "num_gt"}}}` (None for NaN)."""
        return {
            "mAP": None if np.isnan(self.map) else self.map,
            "per_class": {str(class_id): dict(entry) for class_id, entry in self.per_class.items()},
        }


def _pairwise_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of row-aligned (y1, x1, y2, x2) boxes with the official float64 operations, in the same order."""
    heights = np.maximum(0.0, np.minimum(det[:, 2], gt[:, 2]) - np.maximum(det[:, 0], gt[:, 0]))
    widths = np.maximum(0.0, np.minimum(det[:, 3], gt[:, 3]) - np.maximum(det[:, 1], gt[:, 1]))
    intersection = heights * widths
    det_area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (det_area + gt_area - intersection)


def _true_positives(det_group: np.ndarray, det_boxes: np.ndarray, gt_group: np.ndarray,
                    gt_boxes: np.ndarray) -> np.ndarray:
    """Greedy matching inside each (keyframe, class) group, detections in array order.

    A detection takes the first ground-truth box of its group with the highest IoU; it is a true positive if that
    IoU >= 0.5 and no earlier detection took the box. Groups are int ids; ground truth is in its official order.
    """
    gt_order = np.argsort(gt_group, kind="stable")
    sorted_gt_group = gt_group[gt_order]
    first = np.searchsorted(sorted_gt_group, det_group, side="left")
    count = np.searchsorted(sorted_gt_group, det_group, side="right") - first
    pair_det = np.repeat(np.arange(len(det_group)), count)
    pair_start = np.cumsum(count) - count
    pair_gt = gt_order[first[pair_det] + np.arange(len(pair_det)) - pair_start[pair_det]]
    iou = _pairwise_iou(det_boxes[pair_det], gt_boxes[pair_gt])

    matched = np.flatnonzero(count)
    best = np.maximum.reduceat(iou, pair_start[matched]) if len(matched) else np.empty(0)  # NaN wins, as argmax
    qualified = best >= IOU_THRESHOLD
    matched, best = matched[qualified], best[qualified]
    best_of_pair = np.full(len(det_group), np.nan)
    best_of_pair[matched] = best
    is_best = np.flatnonzero(iou == best_of_pair[pair_det])
    # The first best pair of each detection is its argmax; a box goes to the first detection choosing it.
    first_best = is_best[np.unique(pair_det[is_best], return_index=True)[1]]
    chosen_gt = pair_gt[first_best]
    winners = pair_det[first_best][np.unique(chosen_gt, return_index=True)[1]]
    tp = np.zeros(len(det_group), dtype=bool)
    tp[winners] = True
    return tp


def _voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """The official compute_precision_recall + compute_average_precision (VOC all-point), same operations in the
    same order so the floats are identical (library APs, e.g. scikit-learn's, interpolate differently)."""
    if scores.size == 0:
        return 0.0
    labels = tp.astype(int)[np.argsort(scores)[::-1]]
    cum_tp = np.cumsum(labels)
    cum_fp = np.cumsum(1 - labels)
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the official backwards max loop, vectorised
    indices = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[indices] - recall[indices - 1]) * precision[indices]))


def _check_labels(labels: np.ndarray, names: dict[int, str], what: str) -> None:
    unknown = labels[~np.isin(labels, np.fromiter(names, dtype=np.int64))]
    if len(unknown):
        raise ValueError(f"{what} rows have action ids {np.unique(unknown)[:10].tolist()} that the label map does "
                         "not list; read the CSV with this label map's ids as the class whitelist")


def evaluate_frame_map(groundtruth: AvaBoxes, detections: AvaBoxes, labelmap: Sequence[dict],
                       exclusions: Iterable[str] | None = None) -> AvaResult:
    """Frame-mAP@0.5IoU of `detections` against `groundtruth` for the label-map classes.

    Only keyframes the ground truth names are scored; `exclusions` (keys from read_exclusions) removes keyframes
    from both. Classes without ground truth get ap None and do not count in the mean.
    """
    names = {entry["id"]: entry["name"] for entry in labelmap}
    if not names:
        raise ValueError("The label map is empty")
    num_slots = max(names) + 1
    excluded = set(exclusions or ())

    gt_index = {key: i for i, key in enumerate(groundtruth.keys) if key not in excluded}
    gt_rows = np.flatnonzero(np.isin(groundtruth.keyframe, np.fromiter(gt_index.values(), dtype=np.int64)))
    gt_labels = groundtruth.labels[gt_rows]
    _check_labels(gt_labels, names, "Ground-truth")
    num_gt = np.bincount(gt_labels, minlength=num_slots)
    gt_group = groundtruth.keyframe[gt_rows] * num_slots + gt_labels

    # Detections on keyframes the ground truth does not name are ignored; invalid boxes are dropped.
    det_to_gt = np.array([gt_index.get(key, -1) for key in detections.keys], dtype=np.int64)
    det_gt_keyframe = det_to_gt[detections.keyframe]
    boxes = detections.boxes
    det_rows = np.flatnonzero((det_gt_keyframe >= 0) & (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3]))
    det_labels = detections.labels[det_rows]
    _check_labels(det_labels, names, "Detection")
    det_group = det_gt_keyframe[det_rows] * num_slots + det_labels
    tp = _true_positives(det_group, boxes[det_rows], gt_group, groundtruth.boxes[gt_rows])

    det_scores = detections.scores[det_rows]
    by_class = np.argsort(det_labels, kind="stable")  # per class, the official concatenation order
    class_bounds = np.searchsorted(det_labels[by_class], np.arange(num_slots + 1))
    average_precision = np.full(num_slots - 1, np.nan)  # slot c - 1 holds class c
    for class_id in np.flatnonzero(num_gt):
        rows = by_class[class_bounds[class_id]:class_bounds[class_id + 1]]
        average_precision[class_id - 1] = _voc_average_precision(det_scores[rows], tp[rows], int(num_gt[class_id]))
    with np.errstate(invalid="ignore"):
        mean_ap = float(np.nanmean(average_precision)) if num_gt.any() else float("nan")
    per_class = {
        class_id: {"name": names[class_id],
                   "ap": float(average_precision[class_id - 1]) if num_gt[class_id] else None,
                   "num_gt": int(num_gt[class_id])}
        for class_id in sorted(names)
    }
    return AvaResult(map=mean_ap, per_class=per_class)


def evaluate_files(groundtruth: str, detections: str, labelmap: str, exclusions: str | None = None) -> AvaResult:
    """Read the files and run evaluate_frame_map (what tools/ava_eval.py does)."""
    categories, whitelist = read_labelmap(labelmap)
    return evaluate_frame_map(read_groundtruth(groundtruth, whitelist), read_detections(detections, whitelist),
                              categories, read_exclusions(exclusions) if exclusions else None)
