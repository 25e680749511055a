"""`csv`: Kinetics-format video lists (`train.csv`, `val.csv`, `test.csv` of `path label` lines, paths relative to
ROOT, so DATA.PATH_PREFIX=ROOT) and `classes.txt` (class names in label order), from one of three sources:

- split folders   ROOT/<split>/<class>/<video>  (split folder names: train, val|validate|validation, test)
- class folders   ROOT/<class>/<video>, split into train and val per class by a seeded random fraction
- the official Kinetics annotation CSVs (`label,youtube_id,time_start,time_end,split`), the videos anywhere under
  ROOT named `<youtube_id>_<start:06d>_<end:06d>.<ext>`; annotated videos missing on disk go to
  missing_videos.csv.

Class folders may spell a class with spaces, underscores or surrounding quotes ("air drumming", air_drumming): they
are one class. Without a test split, test.csv repeats val.csv (the Kinetics practice: the test phase runs the
multi-view protocol on the validation set).
"""
from __future__ import annotations

import collections
import csv
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from hiera_video.data.class_names import CLASSES_FILE, class_key, display_name, read_class_names
from hiera_video.data.preparation.common import VIDEO_EXTENSIONS, csv_text, find_videos, write_text_atomic

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validate": "val", "validation": "val",
               "test": "test", "testing": "test"}
MISSING_FILE = "missing_videos.csv"
ANNOTATION_COLUMNS = ("youtube_id", "time_start", "time_end", "split")
# Which source extension wins when a video exists in several containers.
EXTENSION_PREFERENCE = {ext: rank for rank, ext in enumerate(VIDEO_EXTENSIONS)}


@dataclass(frozen=True)
class Video:
    split: str
    path: str  # relative to ROOT, "/"-separated
    class_name: str


@dataclass(frozen=True)
class Annotation:
    """One row of an official Kinetics annotation CSV (`label` empty for unlabelled test rows)."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str
    where: str  # file:line, for messages

    @property
    def file_stem(self) -> str:
        """The standard file name without extension, as the official download scripts write it."""
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


@dataclass
class VideoLists:
    """What `make_lists` found: videos per split, the class order, and what could not be listed."""

    classes: list[str]
    videos: dict[str, list[Video]]
    missing: list[Annotation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    from_annotations: bool = False


def _video_files(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(VIDEO_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, n)))


def _subfolders(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))


# ----------------------------------------------------------------------------------------------- folder layouts


def find_split_folders(root: str) -> dict[str, str]:
    """Split -> folder name for the split folders directly under `root` (e.g. {"val": "validate"})."""
    found: dict[str, str] = {}
    for name in _subfolders(root):
        split = SPLIT_NAMES.get(name.lower())
        if split is not None:
            if split in found:
                raise ValueError(f"{root}: both {found[split]}/ and {name}/ look like the {split} split")
            found[split] = name
    return found


def scan_class_folders(root: str, folder: str, split: str, notes: list[str]) -> list[Video]:
    """The videos in the class subfolders of `root/folder` (a loose video file directly in it is noted)."""
    base = os.path.join(root, folder) if folder else root
    videos = []
    for class_folder in _subfolders(base):
        for name in _video_files(os.path.join(base, class_folder)):
            path = "/".join(p for p in (folder, class_folder, name) if p)
            videos.append(Video(split, path, display_name(class_folder)))
    loose = _video_files(base)
    if loose:
        notes.append(f"{len(loose)} video files directly in {base} have no class folder and are not listed "
                     f"(e.g. {loose[0]}); use --annotations for that layout")
    return videos


def stratified_split(videos: Sequence[Video], val_fraction: float, seed: int) -> list[Video]:
    """Each class's videos shuffled with `seed`; round(val_fraction * n) of them (at least one of two or more,
    never all) become "val", the rest "train"."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in [0, 1), got {val_fraction}")
    by_class: dict[str, list[Video]] = collections.defaultdict(list)
    for video in videos:
        by_class[class_key(video.class_name)].append(video)
    rng = random.Random(seed)
    result = []
    for key in sorted(by_class):
        members = sorted(by_class[key], key=lambda v: v.path)
        rng.shuffle(members)
        num_val = round(val_fraction * len(members))
        if val_fraction > 0 and len(members) >= 2:
            num_val = min(max(num_val, 1), len(members) - 1)
        result += [Video("val" if i < num_val else "train", v.path, v.class_name) for i, v in enumerate(members)]
    return result


# ----------------------------------------------------------------------------------------------- annotations


def read_annotations(path: str) -> tuple[list[Annotation], int]:
    """The rows of an official Kinetics annotation CSV (the csv module handles quoted class names), and the
    count of unlabelled rows left out. Errors name the file and line."""
    rows: list[Annotation] = []
    unlabelled = 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        absent = [c for c in ANNOTATION_COLUMNS if c not in columns]
        if absent:
            raise ValueError(f"{path}:1: expected a Kinetics annotation header with label,youtube_id,time_start,"
                             f"time_end,split; missing {', '.join(absent)} in {','.join(columns)!r}")
        reader.fieldnames = columns
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            split = SPLIT_NAMES.get((row.get("split") or "").strip().lower())
            if split is None:
                raise ValueError(f"{where}: unknown split {row.get('split')!r}; expected one of "
                                 f"{', '.join(sorted(SPLIT_NAMES))}")
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise ValueError(f"{where}: time_start and time_end must be numbers, got {row['time_start']!r}, "
                                 f"{row['time_end']!r}") from None
            label = (row.get("label") or "").strip()
            if not label:
                unlabelled += 1
                continue
            rows.append(Annotation(label, row["youtube_id"].strip(), start, end, split, where))
    return rows, unlabelled


def index_by_stem(root: str) -> dict[str, str]:
    """File name without extension -> path relative to ROOT ("/"-separated) of every video under `root`; when a
    name exists with several extensions, the one earliest in VIDEO_EXTENSIONS (mp4 first) is taken."""
    index: dict[str, str] = {}
    for relative in find_videos(root):
        stem, ext = os.path.splitext(os.path.basename(relative))
        path = relative.replace(os.sep, "/")
        current = index.get(stem)
        if current is None or EXTENSION_PREFERENCE.get(ext.lower(), 99) < \
                EXTENSION_PREFERENCE.get(os.path.splitext(current)[1].lower(), 99):
            index[stem] = path
    return index


def videos_from_annotations(root: str, annotation_files: Sequence[str],
                            notes: list[str]) -> tuple[list[Video], list[Annotation], list[str]]:
    """(videos found, annotations whose video is missing, every annotated class name)."""
    rows: list[Annotation] = []
    for path in annotation_files:
        file_rows, unlabelled = read_annotations(path)
        rows += file_rows
        if unlabelled:
            notes.append(f"{unlabelled} rows of {path} have no label and are not listed")
    index = index_by_stem(root)
    videos, missing = [], []
    for row in rows:
        # The standard name first; some download tools name files by the YouTube id alone.
        path = index.get(row.file_stem) or index.get(row.youtube_id)
        if path is None:
            missing.append(row)
        else:
            videos.append(Video(row.split, path, row.label))
    return videos, missing, sorted({row.label for row in rows})


# ----------------------------------------------------------------------------------------------- classes


def class_order(names: Sequence[str], fixed: Sequence[str] | None = None, fixed_source: str = "") -> list[str]:
    """The label order: `fixed` (a classes file) if given, which must cover every name, else the names sorted
    (one spelling per class: the first in sorted order)."""
    if fixed is not None:
        known = {class_key(n) for n in fixed}
        unknown = sorted({n for n in names if class_key(n) not in known})
        if unknown:
            raise ValueError(f"{fixed_source}: {len(unknown)} classes found on disk are not listed, e.g. "
                             f"{', '.join(repr(n) for n in unknown[:5])}")
        return list(fixed)
    spelling: dict[str, str] = {}
    for name in sorted(names):
        spelling.setdefault(class_key(name), name)
    return sorted(spelling.values())


# ----------------------------------------------------------------------------------------------- the job


def collect(root: str, splits: Sequence[str] = SPLITS, val_fraction: float = 0.1, seed: int = 0,
            annotations: Sequence[str] = (), classes_file: str | None = None) -> VideoLists:
    """Find the labelled videos of `root` (see the module docstring) for the wanted `splits`."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"csv: the dataset folder {root} does not exist")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"--splits: unknown split {unknown[0]!r}; expected some of {', '.join(SPLITS)}")
    notes: list[str] = []
    missing: list[Annotation] = []
    if annotations:
        videos, missing, names = videos_from_annotations(root, annotations, notes)
    else:
        folders = find_split_folders(root)
        if folders:
            videos = [v for split, name in folders.items() for v in scan_class_folders(root, name, split, notes)]
        else:
            videos = stratified_split(scan_class_folders(root, "", "train", notes), val_fraction, seed)
            notes.append(f"no split folders in {root}: classes split into train and val with --val-fraction "
                         f"{val_fraction:g} --seed {seed}")
        names = [v.class_name for v in videos]
    fixed = read_class_names(classes_file) if classes_file else None
    classes = class_order(names, fixed, classes_file or "")
    by_split = {s: sorted((v for v in videos if v.split == s), key=lambda v: v.path) for s in splits}
    missing = [m for m in missing if m.split in splits]
    if "test" in splits and not by_split["test"] and by_split.get("val"):
        by_split["test"] = by_split["val"]
        notes.append("no test videos: test.csv repeats val.csv")
    return VideoLists(classes, by_split, missing, notes, from_annotations=bool(annotations))


def list_text(videos: Sequence[Video], classes: Sequence[str]) -> str:
    """`path label` lines (the format hiera_video.data.kinetics.read_video_list reads)."""
    label = {class_key(name): index for index, name in enumerate(classes)}
    return "".join(f"{v.path} {label[class_key(v.class_name)]}\n" for v in videos)


def write_lists(lists: VideoLists, out: str) -> None:
    """Write <split>.csv, classes.txt (and missing_videos.csv) into `out`, each atomically."""
    for split, videos in lists.videos.items():
        write_text_atomic(os.path.join(out, f"{split}.csv"), list_text(videos, lists.classes))
    write_text_atomic(os.path.join(out, CLASSES_FILE), "".join(f"{name}\n" for name in lists.classes))
    if lists.from_annotations:
        rows = [(m.split, m.label, m.youtube_id, m.time_start, m.time_end, m.file_stem) for m in lists.missing]
        write_text_atomic(os.path.join(out, MISSING_FILE),
                          csv_text(["split", "label", "youtube_id", "time_start", "time_end", "file_stem"], rows))


def make_lists(root: str, out: str, splits: Sequence[str] = SPLITS, val_fraction: float = 0.1, seed: int = 0,
               annotations: Sequence[str] = (), classes_file: str | None = None) -> VideoLists:
    """Collect the videos of `root` and write the lists into `out`; returns what was written."""
    lists = collect(root, splits, val_fraction, seed, annotations, classes_file)
    write_lists(lists, out)
    return lists


def summary(lists: VideoLists, out: str) -> str:
    counts = ", ".join(f"{split} {len(videos)}" for split, videos in lists.videos.items())
    lines = [f"csv: {len(lists.classes)} classes; videos per split: {counts} -> {out}"]
    if lists.from_annotations:
        lines.append(f"csv: {len(lists.missing)} annotated videos are missing on disk (listed in "
                     f"{os.path.join(out, MISSING_FILE)})")
    return "\n".join(lines + [f"csv: note: {note}" for note in lists.notes])
