"""Something-Something v2: the official label json files with `<id>.webm` videos, or PySlowFast frame lists.

Files in DATA.PATH_TO_DATA_DIR:
    something-something-v2-labels.json        {template without brackets: class id (a string or an int)}
    something-something-v2-train.json         [{"id", "label", "template", "placeholders"}, ...]
    something-something-v2-validation.json    the same; used for "val" AND "test" (the test split has no labels)
    train.csv, val.csv                        only for SSV2.LAYOUT "frames": PySlowFast frame lists
A video's class is its template with "[" and "]" removed, looked up in the labels file.

Temporal sampling is TSN-style (DATA.SAMPLING_RATE and DATA.TARGET_FPS are ignored): the video is cut into
DATA.NUM_FRAMES equal segments, one random frame per segment in training, the middle frame for validation, and
TEST.NUM_ENSEMBLE_VIEWS evenly offset frames per segment in testing, each view cut into TEST.NUM_SPATIAL_CROPS crops.

There is never a plain horizontal flip: it would turn "left to right" into "right to left" without the label
following. AUG.SSV2_FLIP_SWAP flips half the training samples and swaps the label of every class whose template
has a mirrored twin in the labels file (left <-> right, e.g. "Pushing something from left to right"). Classes that
mention no direction keep their label; classes that mention left or right but have no twin are never flipped.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr

from hiera_video.config import check_choice, register_choices
from hiera_video.data import sampling
from hiera_video.data.clip_dataset import ClipDataset, ClipTransform, VideoRecord, ViewPlanner
from hiera_video.data.frame_lists import read_frame_list
from hiera_video.data.kinetics import clip_transform
from hiera_video.data.loader import SampleKey
from hiera_video.data.subset import class_balanced_indices, log_subset
from hiera_video.data.video_io import VideoDecodeError, VideoReader, resolve_decoding
from hiera_video.utils.reports import check_bad_fraction

logger = logging.getLogger(__name__)

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json",
               "test": "something-something-v2-validation.json"}
FRAME_LISTS = {"train": "train.csv", "val": "val.csv", "test": "val.csv"}
LAYOUTS = ("videos", "frames")
register_choices("SSV2.LAYOUT", LAYOUTS)
# The flip decision uses its own random stream of the sample seed, so switching AUG.SSV2_FLIP_SWAP on does not
# change which frames or crops a sample gets.
FLIP_STREAM = 1
MAX_IDS_IN_MESSAGE = 5
_DIRECTION_WORD = re.compile(r"\b(left|right)\b", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ annotation files
def _read_json(path: str) -> Any:
    if not g_pathmgr.exists(path):
        raise FileNotFoundError(f"Something-Something v2 file not found: {path}")
    with g_pathmgr.open(path, "r") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_label_map(path: str, num_classes: int) -> dict[str, int]:
    """The labels file `{template: class id}` -> {template: int id}; ids must be distinct and in [0, num_classes)."""
    raw = _read_json(path)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON object {{template: class id}}, got "
                         f"{type(raw).__name__}")
    classes: dict[str, int] = {}
    owner: dict[int, str] = {}
    for template, value in raw.items():
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: class id of {template!r} must be an integer, got {value!r}") from None
        if not 0 <= label < num_classes:
            raise ValueError(f"{path}: class id {label} of {template!r} is outside [0, MODEL.NUM_CLASSES="
                             f"{num_classes})")
        if label in owner:
            raise ValueError(f"{path}: class id {label} is used by both {owner[label]!r} and {template!r}")
        classes[template], owner[label] = label, template
    return classes


def class_names_by_id(classes: dict[str, int]) -> list[str]:
    """The class names of a label map (templates without brackets) in class-id order."""
    return sorted(classes, key=classes.__getitem__)


def template_class_name(template: str) -> str:
    """The labels-file key of an entry's template: "Pushing [something] from left to right" -> without brackets."""
    return template.replace("[", "").replace("]", "")


@dataclass(frozen=True)
class SplitEntry:
    """One video of a split json: its id, and its class (None when its template is not in the labels file)."""

    video_id: str
    template: str
    label: int | None


def read_split(path: str, classes: dict[str, int]) -> list[SplitEntry]:
    """Entries of a train/validation json; the class comes from the template (the "label" field is ignored)."""
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of {{id, label, template, placeholders}} entries, got "
                         f"{type(raw).__name__}")
    entries = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("template"), str) or "id" not in item:
            raise ValueError(f"{path}: entry {position} must be an object with an 'id' and a 'template' string, "
                             f"got {item!r}")
        video_id = str(item["id"])
        entries.append(SplitEntry(video_id, item["template"], classes.get(template_class_name(item["template"]))))
    if not entries:
        raise ValueError(f"{path} lists no videos")
    return entries


def frames_by_video(path: str, path_prefix: str) -> dict[str, tuple[str, ...]]:
    """A PySlowFast frame list -> {video id: frame paths in file order, joined to `path_prefix`}."""
    frames: dict[str, list[str]] = {}
    for row in read_frame_list(path, require_header=True):
        frames.setdefault(row.video_id, []).append(os.path.join(path_prefix, row.path))
    return {video_id: tuple(paths) for video_id, paths in frames.items()}


# ------------------------------------------------------------------------------------------------ flip with swap
def _mirror_template(template: str) -> str:
    def swap(match: re.Match) -> str:
        word = match.group(0)
        mirrored = "right" if word.lower() == "left" else "left"
        return mirrored.capitalize() if word[0].isupper() else mirrored

    return _DIRECTION_WORD.sub(swap, template)


@dataclass(frozen=True)
class MirrorLabels:
    """What a horizontal flip does to each class: `twin` maps a class to its mirrored class (both ways);
    `unflippable` holds the classes that name left or right but have no twin. Other classes keep their label."""

    twin: dict[int, int]
    unflippable: frozenset[int]

    def flipped_label(self, label: int) -> int | None:
        """The label of the flipped sample, or None when the sample must not be flipped."""
        if label in self.unflippable:
            return None
        return self.twin.get(label, label)


def mirror_labels(classes: dict[str, int]) -> MirrorLabels:
    """Pairs the templates that differ only by left <-> right, found by swapping those words and looking the
    result up in `classes` (the labels file)."""
    twin: dict[int, int] = {}
    unflippable = set()
    for template, label in classes.items():
        if not _DIRECTION_WORD.search(template):
            continue
        mirrored = classes.get(_mirror_template(template))
        if mirrored is None:
            unflippable.add(label)
        else:
            twin[label] = mirrored
    return MirrorLabels(twin, frozenset(unflippable))


# ------------------------------------------------------------------------------------------------ dataset
def segment_planner(num_segments: int, split: str, num_train_clips: int, num_test_views: int) -> ViewPlanner:
    """Frame indices per view: `num_train_clips` random-per-segment clips (train), the segment middles (val), or
    `num_test_views` evenly offset views (test)."""

    def plan(reader: VideoReader, rng: np.random.Generator) -> list[np.ndarray]:
        if split == "train":
            return [sampling.segment_indices(reader.num_frames, num_segments, train=True, rng=rng)
                    for _ in range(num_train_clips)]
        if split == "val":
            return [sampling.segment_indices(reader.num_frames, num_segments, train=False)]
        return sampling.jittered_segment_views(reader.num_frames, num_segments, num_test_views)

    return plan


def ssv2_views(cfg: CfgNode, split: str) -> tuple[ViewPlanner, ClipTransform]:
    """How the `split` turns one video into its clips: TSN segment views, transformed without flipping (a flip
    turns left into right)."""
    planner = segment_planner(cfg.DATA.NUM_FRAMES, split, cfg.AUG.NUM_SAMPLE if split == "train" else 1,
                              cfg.TEST.NUM_ENSEMBLE_VIEWS)
    return planner, clip_transform(cfg, split, allow_flip=False)


class SSv2Dataset(ClipDataset):
    """ClipDataset with two SSv2 additions.

    `entry_problems` {record index: reason} marks entries that cannot be used (a template without a class, a video
    missing from the frame list); loading one fails like a video that does not decode, so it is skipped, named
    with its id in `bad_files`, and counted against DATA.MAX_BAD_FRACTION. With `mirror` (training with
    AUG.SSV2_FLIP_SWAP) each sample is flipped horizontally with probability 1/2, decided from its SampleKey
    seed, and its label replaced by the mirrored class.
    """

    def __init__(self, records: Sequence[VideoRecord], plan_views: ViewPlanner, transform: ClipTransform, backend: str,
                 replace_randomly: bool, name: str, entry_problems: dict[int, str],
                 mirror: MirrorLabels | None = None, device: str = "cpu") -> None:
        super().__init__(records, plan_views, transform, backend, replace_randomly, name, device)
        self.entry_problems = dict(entry_problems)
        self.mirror = mirror

    def _load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        problem = self.entry_problems.get(index)
        if problem is not None:
            raise VideoDecodeError(f"entry {self.records[index].video_id} of {self.name}", problem)
        return super()._load(index, rng)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0)
        sample = super().__getitem__(key)
        if self.mirror is not None and np.random.default_rng((key.seed, FLIP_STREAM)).random() < 0.5:
            flipped = self.mirror.flipped_label(sample["label"])
            if flipped is not None:
                sample["video"] = sample["video"].flip(-1)
                sample["label"] = flipped
        return sample


def _report_unusable(problems: dict[int, str], records: list[VideoRecord], split_file: str,
                     max_fraction: float) -> None:
    """One warning for the entries known to be unusable; an error when they are too many."""
    if not problems:
        return
    ids = [records[i].video_id for i in sorted(problems)]
    shown = ", ".join(ids[:MAX_IDS_IN_MESSAGE]) + (", ..." if len(ids) > MAX_IDS_IN_MESSAGE else "")
    description = f"entries of {split_file} cannot be used (ids {shown}): e.g. {problems[min(problems)]}"
    check_bad_fraction(len(ids), len(records), max_fraction, description)
    logger.warning("%d of %d %s; they are skipped like videos that fail to decode", len(ids), len(records),
                   description)


def build_ssv2(cfg: CfgNode, split: str) -> SSv2Dataset:
    """The `split` ("train", "val" or "test"; val and test read the validation json) of Something-Something v2."""
    if split not in SPLIT_FILES:
        raise ValueError(f"Something-Something v2 has splits {', '.join(SPLIT_FILES)}; got {split!r}")
    layout = cfg.SSV2.LAYOUT
    check_choice("SSV2.LAYOUT", layout)
    data_dir, prefix = cfg.DATA.PATH_TO_DATA_DIR, cfg.DATA.PATH_PREFIX
    if prefix and not g_pathmgr.isdir(prefix):
        content = "the extracted frames" if layout == "frames" else f"the <id>{cfg.SSV2.VIDEO_EXTENSION} videos"
        raise FileNotFoundError(f"DATA.PATH_PREFIX {prefix!r} is not a folder; it should hold {content}")
    labels_file = os.path.join(data_dir, LABELS_FILE)
    classes = read_label_map(labels_file, cfg.MODEL.NUM_CLASSES)
    split_file = os.path.join(data_dir, SPLIT_FILES[split])
    entries = read_split(split_file, classes)
    frame_list_file = os.path.join(data_dir, FRAME_LISTS[split])
    frame_lists = frames_by_video(frame_list_file, prefix) if layout == "frames" else {}

    records: list[VideoRecord] = []
    problems: dict[int, str] = {}
    for entry in entries:
        reasons = []
        if entry.label is None:
            reasons.append(f"its template {entry.template!r} is not a class of {labels_file}")
        if layout == "frames":
            source: str | tuple[str, ...] = frame_lists.get(entry.video_id, ())
            if not source:
                reasons.append(f"it has no frames in the frame list {frame_list_file}")
        else:
            source = os.path.join(prefix, entry.video_id + cfg.SSV2.VIDEO_EXTENSION)
        if reasons:
            problems[len(records)] = "; ".join(reasons)
        records.append(VideoRecord(source, -1 if entry.label is None else entry.label, entry.video_id))
    _report_unusable(problems, records, split_file, cfg.DATA.MAX_BAD_FRACTION)

    train = split == "train"
    if train and cfg.DATA.TRAIN_FRACTION < 1.0:  # from the usable entries only
        usable_labels = [-1 if i in problems else record.label for i, record in enumerate(records)]
        kept = class_balanced_indices(usable_labels, cfg.DATA.TRAIN_FRACTION, cfg.RNG_SEED)
        log_subset(split_file, len(records), len(kept), cfg.DATA.TRAIN_FRACTION, cfg.RNG_SEED)
        records, problems = [records[i] for i in kept], {}
    if train and cfg.DATA.RANDOM_FLIP:
        logger.warning("DATA.RANDOM_FLIP is ignored for Something-Something v2: a plain flip would swap left and "
                       "right without the label; use AUG.SSV2_FLIP_SWAP to flip and swap mirrored classes")
    mirror = mirror_labels(classes) if train and cfg.AUG.SSV2_FLIP_SWAP else None
    backend, device = resolve_decoding(cfg.DATA.DECODING_BACKEND, cfg.DATA.DECODE_DEVICE)
    return SSv2Dataset(records, *ssv2_views(cfg, split), backend=backend, replace_randomly=train, name=split_file,
                       entry_problems=problems, mirror=mirror, device=device)
