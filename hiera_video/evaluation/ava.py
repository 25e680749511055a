"""AVA frame-mAP@0.5IoU with the same numbers as the official ActivityNet evaluator, vectorised with numpy.

Mirrors activitynet/ActivityNet `Evaluation/get_ava_performance.py` (HEAD) and the PASCAL code under
`Evaluation/ava/` step by step:

- CSV rows are `video_id,timestamp,x1,y1,x2,y2,action_id[,score]` or `video_id,timestamp` (a keyframe with no
  boxes). A keyframe's key is `"%s,%.6f" % (video_id, Decimal(timestamp))`, so `0902` and `902.0` are one key.
  Rows of classes outside the label map are dropped (their keys still count as evaluated keyframes).
- Per keyframe the reader keeps what the official min-heap of `(score, action_id, y1, x1, y2, x2)` keeps (at most
  50 detections, a newcomer replaces the minimum only with a strictly higher score), sorted by descending score
  stably over heap order. Where ties make that order observable, the heap is replayed exactly.
- Only keyframes named in the ground truth are scored; detections on one without boxes are false positives.
  Optional exclusions (a `video_id,timestamp` list, as in older versions) drop keyframes from both sides.
  Invalid detection boxes (y1 >= y2 or x1 >= x2) are dropped after the cap.
- Per keyframe and class, detections in that order take their highest-IoU box (first on ties): a true positive
  if IoU >= 0.5 and the box is still free, otherwise a false positive (no second choice).
- Per class, VOC all-point AP over the detections in `np.argsort(scores)[::-1]` order (the same call, so tied
  scores come out the same); the mAP is the NaN-mean over class slots 1..max(id), i.e. over classes with ground
  truth (AP 0 without detections).

Bad boxes never stop an evaluation; each kind is logged as one warning per file with the count and the first
`file:line` locations (BadRowReport). Ground-truth boxes with x2 < x1 or y2 < y1, a NaN or a coordinate outside
[0, 1] are dropped: the result is the official one on the file without those rows (their keyframe stays evaluated,
as for a row of a class outside the label map). Everything else keeps the official semantics, so the result
equals the official one: empty ground-truth boxes (x2 == x1 or y2 == y1) count as instances no detection can
match; detection boxes with x2 <= x1 or y2 <= y1 are dropped after the cap (they still take cap slots) and ones
outside [0, 1] are scored as they are.

Reading is the expensive part (pandas is not a dependency): well-formed chunks go through numpy's C `loadtxt`;
anything else (2-column rows, quotes, bad values) is re-read with the `csv` module, which also names the file and
line of an error. When each keyframe's rows are contiguous (as evaluators write them) only the kept rows are held,
chunk by chunk; otherwise every row is held until the end.
"""
from __future__ import annotations

import csv
import decimal
import heapq
import io
import json
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from iopath.common.file_io import g_pathmgr

from hiera_video.utils.atomic import atomic_open
from hiera_video.utils.reports import LOCATIONS_SHOWN, BadRowReport

__all__ = [
    "AvaBoxes",
    "AvaFormatError",
    "AvaResult",
    "DETECTIONS_PER_KEYFRAME",
    "IOU_THRESHOLD",
    "evaluate_files",
    "evaluate_frame_map",
    "read_detections",
    "read_exclusions",
    "read_groundtruth",
    "read_labelmap",
    "save_result_json",
    "write_detections_csv",
]

IOU_THRESHOLD = 0.5
DETECTIONS_PER_KEYFRAME = 50  # the official cap, across classes
_CHUNK_CHARS = 1 << 22  # text parsed at once (~80k rows); larger pieces spend more time in page faults

logger = logging.getLogger(__name__)


class AvaFormatError(ValueError):
    """A malformed AVA file; the message names the file and, where there is one, the line."""


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


# ----------------------------------------------------------------------------------------------- label map


def read_labelmap(path: str) -> tuple[list[dict], set[int]]:
    """Label map pbtxt -> ([{"id", "name"}, ...], set of ids), parsed line by line like the official reader.

    A line starting with two spaces and `name:` sets the name; one starting with `  id:` or `  label_id:` emits
    an entry. Both `item { name / id }` (the 60-class list) and `label { name / label_id / label_type }` (the full
    80-class list) work.
    """
    labelmap: list[dict] = []
    name = ""
    with g_pathmgr.open(path, "r", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.startswith("  name:"):
                parts = line.split('"')
                if len(parts) < 3:
                    raise AvaFormatError(f"{path}:{line_number}: name is not in double quotes: {line.strip()!r}")
                name = parts[1]
            elif line.startswith("  id:") or line.startswith("  label_id:"):
                try:
                    class_id = int(line.strip().split(" ")[-1])
                except ValueError:
                    raise AvaFormatError(f"{path}:{line_number}: class id is not an integer: {line.strip()!r}") \
                        from None
                if class_id < 1:
                    raise AvaFormatError(f"{path}:{line_number}: class ids must be >= 1, got {class_id}")
                labelmap.append({"id": class_id, "name": name})
    if not labelmap:
        raise AvaFormatError(f"{path}: no class ids found (expected lines like '  id: 1' or '  label_id: 1' "
                             "indented by exactly two spaces)")
    return labelmap, {entry["id"] for entry in labelmap}


# ----------------------------------------------------------------------------------------------- CSV rows


def _keyframe_key(video_id: str, timestamp: str) -> str:
    return "%s,%.6f" % (video_id, decimal.Decimal(timestamp))


class _KeyframeIndex:
    """Numbers keyframe keys in order of first appearance; caches the raw (video_id, timestamp) strings."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index_of_key: dict[str, int] = {}
        self._index_of_raw: dict[tuple[str, str], int] = {}

    def index(self, video_id: str, timestamp: str) -> int:
        """Index of the keyframe; raises ValueError for a timestamp that is not a decimal number."""
        raw = (video_id, timestamp)
        found = self._index_of_raw.get(raw)
        if found is None:
            try:
                key = _keyframe_key(video_id, timestamp)
            except decimal.InvalidOperation:
                raise ValueError(f"timestamp {timestamp!r} is not a number") from None
            found = self._index_of_key.setdefault(key, len(self.keys))
            if found == len(self.keys):
                self.keys.append(key)
            self._index_of_raw[raw] = found
        return found


@dataclass
class _Rows:
    """Rows of label-map classes in file order: keyframe index, boxes (y1, x1, y2, x2), labels, scores."""

    keyframe: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, rows: np.ndarray | slice) -> "_Rows":
        return _Rows(self.keyframe[rows], self.boxes[rows], self.labels[rows], self.scores[rows])

    @staticmethod
    def concatenate(parts: Sequence["_Rows"]) -> "_Rows":
        if not parts:
            return _Rows(np.empty(0, np.int64), np.empty((0, 4)), np.empty(0, np.int64), np.empty(0))
        return _Rows(*(np.concatenate([getattr(p, name) for p in parts])
                       for name in ("keyframe", "boxes", "labels", "scores")))


def _text_chunks(path: str) -> Iterator[tuple[int, str]]:
    """(number of the first line, text of whole lines) pieces of a text file, newlines normalised to \\n."""
    line_number, carry = 1, ""
    with g_pathmgr.open(path, "r", encoding="utf-8", newline=None) as f:
        while True:
            try:
                block = f.read(_CHUNK_CHARS)
            except UnicodeDecodeError as error:
                raise AvaFormatError(f"{path}: not UTF-8 text ({error.reason}) in the lines from {line_number} "
                                     "on") from None
            if not block:
                break
            text = carry + block
            cut = text.rfind("\n") + 1
            carry = text[cut:]
            if cut:
                yield line_number, text[:cut]
                line_number += text.count("\n", 0, cut)
    if carry:
        yield line_number, carry


# numpy's text reader converts numbers like Python's float()/int() (rejecting what they reject, and more) and is
# several times faster than the csv module. Keys are read as fixed-width bytes (a Python string per row is slow);
# a chunk with a longer video id or timestamp goes to the csv module.
_KEY_FIELDS = [("video_id", "S32"), ("timestamp", "S16")]  # 48 bytes: 6 uint64 words


def _fast_dtype(num_columns: int) -> np.dtype:
    fields = _KEY_FIELDS + [("box", np.float64, (4,)), ("action_id", np.int64), ("score", np.float64)]
    return np.dtype(fields if num_columns == 8 else fields[:-1])


def _parse_fast(text: str, first_line: int, whitelist: np.ndarray, groundtruth: bool, index: _KeyframeIndex,
                report: BadRowReport) -> _Rows | None:
    """Parse a chunk of uniform 7- or 8-column rows with numpy's reader; None if it needs the csv module."""
    start = 0
    while text.startswith("\n", start):
        start += 1
    num_columns = text.count(",", start, text.find("\n", start)) + 1
    if num_columns not in (7, 8) or '"' in text:
        return None
    try:
        rows = np.loadtxt(io.StringIO(text), delimiter=",", comments=None, quotechar=None, ndmin=1,
                          dtype=_fast_dtype(num_columns))
    except ValueError:
        return None
    raw = rows.view(np.uint8).reshape(len(rows), -1)
    if raw[:, [31, 47]].any():
        return None  # a video_id or timestamp filling its field may have been cut off
    labels = rows["action_id"]
    keep = np.isin(labels, whitelist)
    scores = rows["score"][keep] if num_columns == 8 else np.ones(int(keep.sum()))
    boxes = rows["box"][keep][:, [1, 0, 3, 2]]  # x1, y1, x2, y2 -> y1, x1, y2, x2
    if np.isnan(scores).any():
        return None  # the csv module path names the line
    new_run = np.ones(len(rows), dtype=bool)  # consecutive rows of one keyframe are looked up once
    key_words = raw[:, :48].view(np.uint64)  # video_id and timestamp bytes
    new_run[1:] = (key_words[1:] != key_words[:-1]).any(axis=1)
    run_starts = np.flatnonzero(new_run)
    try:
        run_keyframes = [index.index(video.decode("latin-1"), timestamp.decode("latin-1"))  # as numpy encoded
                         for video, timestamp in zip(rows["video_id"][run_starts].tolist(),
                                                     rows["timestamp"][run_starts].tolist())]
    except ValueError:
        return None
    keyframe = np.repeat(np.array(run_keyframes, dtype=np.int64), np.diff(np.append(run_starts, len(rows))))

    def line_numbers(kept_rows: np.ndarray) -> list[int]:
        # numpy's reader skips empty lines (and refuses blank ones): row i is the i-th non-empty line.
        non_empty = [number for number, line in enumerate(text.split("\n"), start=first_line) if line]
        return [non_empty[row] for row in np.flatnonzero(keep)[kept_rows].tolist()]

    return _screen_boxes(_Rows(keyframe[keep], boxes, labels[keep], scores), groundtruth, report, line_numbers)


def _parse_slow(path: str, text: str, first_line: int, whitelist: set[int], groundtruth: bool,
                index: _KeyframeIndex, report: BadRowReport) -> _Rows:
    """Parse a chunk with the csv module like the official reader, raising AvaFormatError at the first bad line."""
    score_name = "person_id" if groundtruth else "score"
    out: list[tuple] = []
    out_lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        line_number = first_line + reader.line_num - 1
        where = f"{path}:{line_number}"
        if not row:
            continue  # blank line (the official reader would stop with an assertion error)
        if len(row) not in (2, 7, 8):
            raise AvaFormatError(f"{where}: expected 2, 7 or 8 comma-separated columns (video_id,timestamp"
                                 f"[,x1,y1,x2,y2,action_id[,{score_name}]]), got {len(row)}: {row!r}")
        try:
            keyframe = index.index(row[0], row[1])
        except ValueError as error:
            raise AvaFormatError(f"{where}: {error}") from None
        if len(row) == 2:
            continue
        try:
            x1, y1, x2, y2 = (float(value) for value in row[2:6])
        except ValueError:
            raise AvaFormatError(f"{where}: box coordinates x1,y1,x2,y2 must be numbers, got {row[2:6]!r}") \
                from None
        try:
            label = int(row[6])
        except ValueError:
            raise AvaFormatError(f"{where}: action_id must be an integer, got {row[6]!r}") from None
        if label not in whitelist:
            continue
        try:
            score = float(row[7]) if len(row) == 8 else 1.0
        except ValueError:
            raise AvaFormatError(f"{where}: {score_name} must be a number, got {row[7]!r}") from None
        if score != score:
            raise AvaFormatError(f"{where}: {score_name} is NaN")
        out.append((keyframe, y1, x1, y2, x2, label, score))
        out_lines.append(line_number)
    if not out:
        return _Rows.concatenate([])
    table = np.array(out, dtype=np.float64)
    rows = _Rows(np.array([row[0] for row in out], dtype=np.int64), table[:, 1:5],
                 np.array([row[5] for row in out], dtype=np.int64), table[:, 6].copy())
    return _screen_boxes(rows, groundtruth, report, lambda kept_rows: [out_lines[i] for i in kept_rows.tolist()])


_GT_INVERTED = "ground-truth boxes with x2 < x1 or y2 < y1 (or a NaN) are dropped"
_GT_OUTSIDE = "ground-truth boxes with a coordinate outside [0, 1] are dropped"
# Kept: the official evaluator counts them (as instances no detection can match), so published AVA results do too.
_GT_EMPTY = ("ground-truth boxes with x2 == x1 or y2 == y1 are kept as instances no detection can match, as the "
             "official evaluator counts them")
_DET_INVALID = ("detection boxes with x2 <= x1 or y2 <= y1 (or a NaN) are dropped after the per-keyframe cap, as the "
                "official evaluator does (they still take cap slots)")
# Not dropped: the official evaluator scores them on their raw values, and the result must equal its result.
_DET_OUTSIDE = "detection boxes with a coordinate outside [0, 1] are scored as they are, as the official evaluator does"


def _screen_boxes(rows: _Rows, groundtruth: bool, report: BadRowReport,
                  line_numbers: Callable[[np.ndarray], list[int]]) -> _Rows:
    """Report rows whose box is inverted, empty, NaN or leaves [0, 1]; return the rows without the inverted, NaN
    and outside ones for ground truth, all rows for detections (see the module docstring).

    `line_numbers(rows)` gives the file lines of some of the rows (only called for the warnings' locations).
    """
    y1, x1, y2, x2 = rows.boxes.T
    outside = ~((rows.boxes >= 0.0) & (rows.boxes <= 1.0)).all(axis=1)
    if groundtruth:
        inverted = ~((y1 <= y2) & (x1 <= x2))
        outside &= ~inverted
        empty = ((y1 == y2) | (x1 == x2)) & ~outside
        problems = [(_GT_INVERTED, inverted), (_GT_OUTSIDE, outside), (_GT_EMPTY, empty)]
        dropped = inverted | outside
    else:
        invalid = ~((y1 < y2) & (x1 < x2))
        problems = [(_DET_INVALID, invalid), (_DET_OUTSIDE, outside & ~invalid)]
        dropped = None
    for problem, bad in problems:
        bad_rows = np.flatnonzero(bad)
        if not len(bad_rows):
            continue
        locations = []
        if report.needs_locations(problem):
            first = bad_rows[:LOCATIONS_SHOWN]
            details = ["x1,y1,x2,y2 = " + ",".join(f"{v:g}" for v in rows.boxes[row, [1, 0, 3, 2]].tolist())
                       for row in first.tolist()]
            locations = list(zip(line_numbers(first), details))
        report.add(problem, len(bad_rows), locations)
    return rows.take(~dropped) if dropped is not None and dropped.any() else rows


def _parsed_chunks(path: str, class_whitelist: Iterable[int], groundtruth: bool, index: _KeyframeIndex,
                   report: BadRowReport) -> Iterator[_Rows]:
    whitelist = set(class_whitelist)
    whitelist_array = np.array(sorted(whitelist), dtype=np.int64)
    for first_line, text in _text_chunks(path):
        if not text.isspace():
            rows = _parse_fast(text, first_line, whitelist_array, groundtruth, index, report)
            yield rows if rows is not None else _parse_slow(path, text, first_line, whitelist, groundtruth, index,
                                                            report)


# ------------------------------------------------------------------------------------ official keep & order


def _replay_heap(rows: list[tuple], capacity: int) -> list[tuple]:
    """The official per-keyframe reader step on (score, action_id, y1, x1, y2, x2) tuples in file order."""
    heap: list[tuple] = []
    for row in rows:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, row)
        elif row[0] > heap[0][0]:
            heapq.heapreplace(heap, row)
    return sorted(heap, key=lambda row: -row[0])


def _replay(rows: _Rows, keyframes: np.ndarray, capacity: int) -> tuple[_Rows, np.ndarray]:
    """Replay the official heap for the (ascending) keyframes: their kept rows in that order, and their counts."""
    selected = np.flatnonzero(np.isin(rows.keyframe, keyframes))
    selected = selected[np.argsort(rows.keyframe[selected], kind="stable")]  # grouped, file order inside
    tuples = list(zip(rows.scores[selected].tolist(), rows.labels[selected].tolist(),
                      *rows.boxes[selected].T.tolist()))
    bounds = np.searchsorted(rows.keyframe[selected], keyframes).tolist() + [len(selected)]
    kept = [_replay_heap(tuples[start:stop], capacity) for start, stop in zip(bounds[:-1], bounds[1:])]
    counts = np.array([len(group) for group in kept], dtype=np.int64)
    table = np.array([row for group in kept for row in group], dtype=np.float64).reshape(-1, 6)
    return _Rows(np.repeat(keyframes, counts), table[:, 2:6], table[:, 1].astype(np.int64),
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


def _keep_like_official(rows: _Rows, capacity: int, drops_invalid: bool) -> _Rows:
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
    result = _Rows.concatenate(parts)
    return result.take(np.argsort(np.concatenate(part_rank), kind="stable"))


class _NotGrouped(Exception):
    """A keyframe's rows are not contiguous in the file."""


def _read_kept_streaming(path: str, class_whitelist: Iterable[int], capacity: int, groundtruth: bool,
                         report: BadRowReport) -> tuple[list[str], _Rows]:
    """Keep rows chunk by chunk, holding back the keyframe that may continue in the next chunk.

    Needs each keyframe's rows to be contiguous (how evaluators write them); raises _NotGrouped otherwise.
    """
    index = _KeyframeIndex()
    finished = np.zeros(0, dtype=bool)  # by keyframe index
    kept: list[_Rows] = []
    pending = _Rows.concatenate([])
    for chunk in _parsed_chunks(path, class_whitelist, groundtruth, index, report):
        finished = np.append(finished, np.zeros(len(index.keys) - len(finished), dtype=bool))
        if not len(chunk):
            continue
        if finished[chunk.keyframe].any():
            raise _NotGrouped
        rows = _Rows.concatenate([pending, chunk])
        last = rows.keyframe[-1]
        others = np.flatnonzero(rows.keyframe != last)
        tail_start = others[-1] + 1 if len(others) else 0
        if len(others) != tail_start:  # the last keyframe also appears before other keyframes
            raise _NotGrouped
        kept.append(_keep_like_official(rows.take(slice(0, tail_start)), capacity, drops_invalid=not groundtruth))
        finished[rows.keyframe[:tail_start]] = True
        pending = rows.take(slice(tail_start, None))
    kept.append(_keep_like_official(pending, capacity, drops_invalid=not groundtruth))
    return index.keys, _Rows.concatenate(kept)


def _read_kept(path: str, class_whitelist: Iterable[int], capacity: int, groundtruth: bool) -> AvaBoxes:
    report = BadRowReport(path)
    try:
        keys, kept = _read_kept_streaming(path, class_whitelist, capacity, groundtruth, report)
    except _NotGrouped:  # keyframes interleaved: hold every row, then keep
        index, report = _KeyframeIndex(), BadRowReport(path)
        rows = _Rows.concatenate(list(_parsed_chunks(path, class_whitelist, groundtruth, index, report)))
        keys, kept = index.keys, _keep_like_official(rows, capacity, drops_invalid=not groundtruth)
    report.log(logger)
    return AvaBoxes(keys, kept.keyframe, kept.boxes, kept.labels, kept.scores)


# ----------------------------------------------------------------------------------------------- readers


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
    index = _KeyframeIndex()
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


# ----------------------------------------------------------------------------------------------- evaluation


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


# ----------------------------------------------------------------------------------------------- writing


def write_detections_csv(path: str, rows: Iterable[Sequence]) -> None:
    """Write (video_id, timestamp, x1, y1, x2, y2, action_id, score) rows in the official format
    (`%04d` integer seconds, boxes with 3 decimals, scores with 4), atomically."""
    with atomic_open(path, "w") as f:  # streamed: the full val set is tens of millions of rows
        for video_id, timestamp, x1, y1, x2, y2, action_id, score in rows:
            second = "%04d" % timestamp if float(timestamp).is_integer() else "%.6f" % timestamp
            f.write("%s,%s,%.3f,%.3f,%.3f,%.3f,%d,%.4f\n" % (video_id, second, x1, y1, x2, y2, action_id, score))


def save_result_json(path: str, result: AvaResult) -> None:
    """Write AvaResult.to_json_dict() as JSON, atomically."""
    with atomic_open(path, "w") as f:
        f.write(json.dumps(result.to_json_dict(), indent=2) + "\n")
