"""AVA CSV files parsed into rows: numpy's C reader for well-formed chunks, the csv module (which names the file
and line of an error) for the rest; boxes that cannot be scored are screened and reported."""
from __future__ import annotations

import csv
import decimal
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
from iopath.common.file_io import g_pathmgr

from hiera_video.utils.reports import LOCATIONS_SHOWN, BadRowReport

CHUNK_CHARS = 1 << 22  # text parsed at once (~80k rows); larger pieces spend more time in page faults


class AvaFormatError(ValueError):
    """A malformed AVA file; the message names the file and, where there is one, the line."""


def _keyframe_key(video_id: str, timestamp: str) -> str:
    return "%s,%.6f" % (video_id, decimal.Decimal(timestamp))


class KeyframeIndex:
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
class Rows:
    """Rows of label-map classes in file order: keyframe index, boxes (y1, x1, y2, x2), labels, scores."""

    keyframe: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, rows: np.ndarray | slice) -> Rows:
        return Rows(self.keyframe[rows], self.boxes[rows], self.labels[rows], self.scores[rows])

    @staticmethod
    def concatenate(parts: Sequence[Rows]) -> Rows:
        if not parts:
            return Rows(np.empty(0, np.int64), np.empty((0, 4)), np.empty(0, np.int64), np.empty(0))
        return Rows(*(np.concatenate([getattr(p, name) for p in parts])
                       for name in ("keyframe", "boxes", "labels", "scores")))


def _text_chunks(path: str) -> Iterator[tuple[int, str]]:
    """(number of the first line, text of whole lines) pieces of a text file, newlines normalised to \\n."""
    line_number, carry = 1, ""
    with g_pathmgr.open(path, "r", encoding="utf-8", newline=None) as f:
        while True:
            try:
                block = f.read(CHUNK_CHARS)
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


def parse_fast(text: str, first_line: int, whitelist: np.ndarray, groundtruth: bool, index: KeyframeIndex,
                report: BadRowReport) -> Rows | None:
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

    return _screen_boxes(Rows(keyframe[keep], boxes, labels[keep], scores), groundtruth, report, line_numbers)


def parse_slow(path: str, text: str, first_line: int, whitelist: set[int], groundtruth: bool,
                index: KeyframeIndex, report: BadRowReport) -> Rows:
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
        return Rows.concatenate([])
    table = np.array(out, dtype=np.float64)
    rows = Rows(np.array([row[0] for row in out], dtype=np.int64), table[:, 1:5],
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


def _screen_boxes(rows: Rows, groundtruth: bool, report: BadRowReport,
                  line_numbers: Callable[[np.ndarray], list[int]]) -> Rows:
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


def parsed_chunks(path: str, class_whitelist: Iterable[int], groundtruth: bool, index: KeyframeIndex,
                   report: BadRowReport) -> Iterator[Rows]:
    whitelist = set(class_whitelist)
    whitelist_array = np.array(sorted(whitelist), dtype=np.int64)
    for first_line, text in _text_chunks(path):
        if not text.isspace():
            rows = parse_fast(text, first_line, whitelist_array, groundtruth, index, report)
            yield rows if rows is not None else parse_slow(path, text, first_line, whitelist, groundtruth, index,
                                                            report)
