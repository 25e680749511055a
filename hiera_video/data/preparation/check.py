"""`check`: open every video of Kinetics-format lists (`<split>.csv` of `path label` lines) with the project's
reader, as training will, and write the bad ones to `bad_videos.csv` (path, reason) and cleaned lists without
them to `<split>.clean.csv` next to the originals (or, with `replace`, to `<split>.csv`, the original kept as
`<split>.orig.csv`).

Decode modes: "header" opens each video (container, stream, first frame); "full" also decodes clips of
CLIP_FRAMES frames at its start, middle and end, which finds truncated and corrupt files that still open.
A video listed in several lists (test.csv repeating val.csv) is checked once. Checking writes nothing per video,
so a rerun checks everything again.
"""
from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from dataclasses import dataclass

from hiera_video.data.preparation.common import DONE, FAILED, Outcome, csv_text, run_jobs, write_text_atomic
from hiera_video.data.video_io import VideoDecodeError, open_video, resolve_decoding

DECODE_MODES = ("header", "full")
BAD_FILE = "bad_videos.csv"
CLEAN_SUFFIX = ".clean.csv"
ORIGINAL_SUFFIX = ".orig.csv"
CLIP_FRAMES = 8


@dataclass(frozen=True)
class CheckTask:
    name: str  # the path as listed
    source: str
    decode: str
    backend: str


@dataclass(frozen=True)
class ListLine:
    number: int
    text: str
    path: str | None  # None for a malformed line


@dataclass
class CheckReport:
    outcomes: list[Outcome]  # one per distinct listed video, plus one per malformed line
    lists: dict[str, list[ListLine]]  # list file -> its lines
    written: dict[str, str]  # list file -> cleaned list written


def parse_list(path: str, separator: str = " ") -> list[ListLine]:
    """The non-blank lines of a `path<separator>label` list; lines without an integer label have no path."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.strip()
            if not text:
                continue
            # The same split as hiera_video.data.kinetics.read_video_list: the label is after the last separator.
            parts = text.rsplit(separator, 1) if separator.strip() else text.rsplit(None, 1)
            valid = len(parts) == 2 and parts[1].strip().lstrip("-").isdigit() and parts[0].strip()
            lines.append(ListLine(number, text, parts[0].strip() if valid else None))
    return lines


def _kind(error: VideoDecodeError, opened: bool) -> str:
    if error.reason == "file not found":
        return "missing"
    if error.reason == "file is empty":
        return "empty"
    return "frames do not decode" if opened else "cannot open"


def clip_starts(num_frames: int) -> list[int]:
    """First frames of the start, middle and end clips (fewer for short videos)."""
    last = max(0, num_frames - CLIP_FRAMES)
    return sorted({0, min(last, max(0, num_frames // 2 - CLIP_FRAMES // 2)), last})


def check_one(task: CheckTask) -> Outcome:
    """Open (and in "full" mode decode clips of) one video; FAILED with the reader's reason if it cannot."""
    opened = False
    try:
        with open_video(task.source, backend=task.backend) as reader:
            opened = True
            if task.decode == "full":
                for start in clip_starts(reader.num_frames):
                    reader.get_frames(list(range(start, min(reader.num_frames, start + CLIP_FRAMES))))
    except VideoDecodeError as error:
        return Outcome(task.name, FAILED, _kind(error, opened), error.reason)
    return Outcome(task.name, DONE)


def find_lists(folder: str, splits: Sequence[str]) -> list[str]:
    """The `<split>.csv` files of `folder` that exist; an error if there are none."""
    paths = [os.path.join(folder, f"{split}.csv") for split in splits]
    found = [p for p in paths if os.path.isfile(p)]
    if not found:
        raise FileNotFoundError(f"check: none of {', '.join(os.path.basename(p) for p in paths)} in {folder}")
    return found


def clean_list_path(list_path: str, replace: bool) -> str:
    return list_path if replace else list_path[: -len(".csv")] + CLEAN_SUFFIX


def write_clean_list(list_path: str, lines: Sequence[ListLine], bad: set[str], replace: bool) -> str:
    """Write the list without malformed lines and bad videos; returns the file written."""
    text = "".join(line.text + "\n" for line in lines if line.path is not None and line.path not in bad)
    target = clean_list_path(list_path, replace)
    if replace:
        original = list_path[: -len(".csv")] + ORIGINAL_SUFFIX
        if not os.path.exists(original):  # the first run's list is the original; later ones are cleaned already
            with open(list_path, encoding="utf-8") as f:
                write_text_atomic(original, f.read())
    write_text_atomic(target, text)
    return target


def check_lists(folder: str, splits: Sequence[str] = ("train", "val", "test"), path_prefix: str | None = None,
                decode: str = "header", workers: int = 1, separator: str = " ", backend: str = "auto",
                replace: bool = False) -> CheckReport:
    """Check every video of the lists in `folder` (paths relative to `path_prefix`, default `folder`) and write
    bad_videos.csv and the cleaned lists there. `backend` is a DATA.DECODING_BACKEND value ("auto" is resolved
    once, here, and logged)."""
    if decode not in DECODE_MODES:
        raise ValueError(f"--decode must be one of {', '.join(DECODE_MODES)}, got {decode!r}")
    backend, _ = resolve_decoding(backend)
    prefix = folder if path_prefix is None else path_prefix
    lists = {path: parse_list(path, separator) for path in find_lists(folder, splits)}
    malformed = [Outcome(f"{os.path.basename(p)}:{line.number}", FAILED, "malformed line",
                         f"expected 'path{separator}label' with an integer label, got {line.text!r}")
                 for p, lines in lists.items() for line in lines if line.path is None]
    paths = sorted({line.path for lines in lists.values() for line in lines if line.path is not None})
    tasks = [CheckTask(p, os.path.join(prefix, p), decode, backend) for p in paths]
    outcomes = run_jobs(check_one, tasks, workers, f"check ({decode})") + malformed
    bad = {o.name for o in outcomes if o.status == FAILED}
    write_text_atomic(os.path.join(folder, BAD_FILE),
                      csv_text(["path", "reason"], [(o.name, o.reason) for o in outcomes if o.status == FAILED]))
    written = {p: write_clean_list(p, lines, bad, replace) for p, lines in lists.items()}
    return CheckReport(outcomes, lists, written)


def summary(report: CheckReport, folder: str) -> str:
    """Counts of good and bad videos, the bad ones by reason, and the lists written."""
    counts = collections.Counter(o.status for o in report.outcomes)
    kinds = collections.Counter(o.kind for o in report.outcomes if o.status == FAILED)
    lines = [f"check: {counts[DONE]} videos good, {counts[FAILED]} bad (listed in {os.path.join(folder, BAD_FILE)})"]
    lines += [f"  {count:6d} {kind}" for kind, count in kinds.most_common()]
    for original, written in report.written.items():
        with open(written, encoding="utf-8") as f:
            kept = sum(1 for _ in f)
        total = len(report.lists[original])
        lines.append(f"check: {os.path.basename(original)}: {kept} of {total} lines kept -> {written}")
    return "\n".join(lines)
