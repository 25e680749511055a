"""Reading the AVA files as the official evaluator does: label map, ground truth, detections, exclusions.

When each keyframe's rows are contiguous (as evaluators write them) only the kept rows are held, chunk by chunk;
otherwise every row is held until the end.
"""
from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from iopath.common.file_io import g_pathmgr

from hiera_video.evaluation.ava.csv_rows import AvaFormatError, KeyframeIndex, Rows, parsed_chunks
from hiera_video.evaluation.ava.keep import keep_like_official
from hiera_video.utils import labelmap as labelmap_file
from hiera_video.utils.reports import BadRowReport

DETECTIONS_PER_KEYFRAME = 50  # the official cap, across classes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AvaBoxes:
    """One AVA CSV as the official reader leaves it.

    `keys` lists every keyframe key the file mentions, including keyframes that only have 2-column rows or rows of
    classes outside the label map (the ground truth's "evaluated keyframes"). The other fields hold the kept rows,
    grouped by keyframe in order of first appearance and, inside a keyframe, in the official order.
    """

    keys: list[str]
    keyframe: np.ndarray  # int64 [N], index into keys
    boxes: np.ndarray  # float64 [N, 4] as (y1, x1, y2, x2)
    labels: np.ndarray  # int64 [N] action ids
    scores: np.ndarray  # float64 [N] (person_id for ground truth; 1.0 for 7-column rows)


def read_labelmap(path: str) -> tuple[list[dict], set[int]]:
    """Label map pbtxt -> ([{"id", "name"}, ...], set of ids), as hiera_video.utils.labelmap reads it; a malformed
    file raises AvaFormatError (naming the file and line) like the other AVA files."""
    try:
        labelmap = labelmap_file.read_labelmap(path)
    except ValueError as error:
        raise AvaFormatError(str(error)) from None
    return labelmap, {entry["id"] for entry in labelmap}


class _NotGrouped(Exception):
    """A keyframe's rows are not contiguous in the file."""


def _read_kept_streaming(path: str, class_whitelist: Iterable[int], capacity: int, groundtruth: bool,
                         report: BadRowReport) -> tuple[list[str], Rows]:
    """Keep rows chunk by chunk, holding back the keyframe that may continue in the next chunk.

    Needs each keyframe's rows to be contiguous (how evaluators write them); raises _NotGrouped otherwise.
    """
    index = KeyframeIndex()
    finished = np.zeros(0, dtype=bool)  # by keyframe index
    kept: list[Rows] = []
    pending = Rows.concatenate([])
    for chunk in parsed_chunks(path, class_whitelist, groundtruth, index, report):
        finished = np.append(finished, np.zeros(len(index.keys) - len(finished), dtype=bool))
        if not len(chunk):
            continue
        if finished[chunk.keyframe].any():
            raise _NotGrouped
        rows = Rows.concatenate([pending, chunk])
        last = rows.keyframe[-1]
        others = np.flatnonzero(rows.keyframe != last)
        tail_start = others[-1] + 1 if len(others) else 0
        if len(others) != tail_start:  # the last keyframe also appears before other keyframes
            raise _NotGrouped
        kept.append(keep_like_official(rows.take(slice(0, tail_start)), capacity, drops_invalid=not groundtruth))
        finished[rows.keyframe[:tail_start]] = True
        pending = rows.take(slice(tail_start, None))
    kept.append(keep_like_official(pending, capacity, drops_invalid=not groundtruth))
    return index.keys, Rows.concatenate(kept)


def _read_kept(path: str, class_whitelist: Iterable[int], capacity: int, groundtruth: bool) -> AvaBoxes:
    report = BadRowReport(path)
    try:
        keys, kept = _read_kept_streaming(path, class_whitelist, capacity, groundtruth, report)
    except _NotGrouped:  # keyframes interleaved: hold every row, then keep
        index, report = KeyframeIndex(), BadRowReport(path)
        rows = Rows.concatenate(list(parsed_chunks(path, class_whitelist, groundtruth, index, report)))
        keys, kept = index.keys, keep_like_official(rows, capacity, drops_invalid=not groundtruth)
    report.log(logger)
    return AvaBoxes(keys, kept.keyframe, kept.boxes, kept.labels, kept.scores)


def read_groundtruth(path: str, class_whitelist: Iterable[int]) -> AvaBoxes:
    """Ground-truth CSV (`video_id,timestamp,x1,y1,x2,y2,action_id,person_id`, or `video_id,timestamp` for a
    keyframe without boxes). One row is one instance of its class. Blank lines are skipped. Rows whose box has
    x2 < x1, y2 < y1, a NaN or a coordinate outside [0, 1] are dropped with a warning (their keyframe stays
    listed); empty boxes (x2 == x1 or y2 == y1) are kept, as the official reader keeps them, with a warning."""
    return _read_kept(path, class_whitelist, capacity=0, groundtruth=True)


def read_detections(path: str, class_whitelist: Iterable[int],
                    capacity: int = DETECTIONS_PER_KEYFRAME) -> AvaBoxes:
    """Detection CSV (`video_id,timestamp,x1,y1,x2,y2,action_id,score`; 7 columns mean score 1.0), keeping the
    `capacity` best rows per keyframe across classes exactly as the official reader (capacity < 1: all).

    Boxes with x2 <= x1 or y2 <= y1 (evaluate_frame_map drops them after this cap) or outside [0, 1] (scored as
    they are) are kept, as the official reader keeps them, and reported in a warning."""
    return _read_kept(path, class_whitelist, capacity=capacity, groundtruth=False)


def read_exclusions(path: str) -> set[str]:
    """Keyframe keys of a `video_id,timestamp` CSV (older official versions' excluded timestamps)."""
    index = KeyframeIndex()
    with g_pathmgr.open(path, "r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise AvaFormatError(f"{path}:{reader.line_num}: expected 2 columns (video_id,timestamp), "
                                     f"got {len(row)}: {row!r}")
            try:
                index.index(row[0], row[1])
            except ValueError as error:
                raise AvaFormatError(f"{path}:{reader.line_num}: {error}") from None
    return set(index.keys)
