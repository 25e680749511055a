"""AVA v2.2 spatio-temporal action detection: keyframes, person boxes with multi-hot actions, clips around them.

Layout (paths in the AVA config group, names relative to AVA.ANNOTATION_DIR):
- videos, one of two layouts:
  frames  AVA.FRAME_DIR/<video>/<video>_%06d.jpg, listed by AVA.FRAME_LIST_DIR/{train,val}.csv (PySlowFast format:
          a header, then `original_video_id video_idx frame_idx path labels`, path relative to FRAME_DIR);
  videos  AVA.VIDEO_DIR/<video>.<ext>: one file per video id, decoded around each keyframe directly.
- box lists: `video,second,x1,y1,x2,y2,action,person_id` ground truth (AVA.TRAIN_GT_BOX_LISTS) and
  `video,second,x1,y1,x2,y2,action or empty,score` detected persons (AVA.{TRAIN,TEST}_PREDICT_BOX_LISTS, kept
  when score >= AVA.DETECTION_SCORE_THRESH; an empty action marks a person doing nothing annotated). Coordinates
  are normalised to [0, 1]; actions are 1..MODEL.NUM_CLASSES (80), or the classes of AVA.CLASS_SUBSET.

Classes (ActionClasses): the model has one output per class, in order: actions 1..MODEL.NUM_CLASSES, or, with
AVA.CLASS_SUBSET (a label map in the AVA pbtxt format), the subset's ids in increasing order, MODEL.NUM_CLASSES
being their number. Rows of other actions are left out, counted and reported; their boxes stay, as persons doing
none of the subset's actions (negatives, which evaluation also scores).

Bad input: a malformed row stops with an error naming file and line. A box with a coordinate outside [0, 1] by more
than BOX_TOLERANCE, or with x2 <= x1 or y2 <= y1, is dropped and reported (one warning per file and problem with
the count and the first file:line locations), and so are rows whose second lies outside AVA.KEYFRAME_RANGE. A
keyframe whose frames cannot be read (a missing or broken file or JPEG, a gap in the frame list, a keyframe outside
its video, a video missing from the layout in evaluation) is skipped and counted as a bad video: training draws
another keyframe, evaluation keeps it without boxes.

Time: AVA timestamps are seconds of the original movie (keyframes AVA.KEYFRAME_RANGE: 902..1798 in AVA v2.x, one
per second; custom AVA-format datasets choose theirs). Frame 0 of a video
or frame folder is shown at AVA.FIRST_SECOND (900 for the standard 15-minute cuts, 0 for uncut movies), so the
keyframe of second s is frame round((s - FIRST_SECOND) * fps). A clip is DATA.NUM_FRAMES frames DATA.SAMPLING_RATE
apart at DATA.TARGET_FPS, centred on the keyframe as PySlowFast does (frames c - L/2, ..., c + L/2 - rate for a
span L), clamped to the video.

Splits: "train" uses the ground truth (+ detected boxes if listed), one random augmented clip per keyframe;
"val" and "test" use the detected boxes of AVA.TEST_PREDICT_BOX_LISTS, "val" only every 4th second unless
AVA.FULL_TEST_ON_VAL. Training: short-side jitter + random crop (or random-resized crop) and a flip, boxes
following the pixels (torchvision.transforms.v2 BoundingBoxes); boxes left empty by the crop are dropped.
Validation / test: the short side resized to DATA.TEST_CROP_SIZE and the centre square (Hiera takes a fixed input
size); boxes are clamped to it and every box is kept, with its original normalised coordinates for the output.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from hiera_video.data.clip_dataset import load_with_replacement
from hiera_video.data.frame_lists import read_frame_list
from hiera_video.data.loader import SampleKey
from hiera_video.data.transforms import eval_geometry, to_normalized_float, train_geometry, video_to_clip
from hiera_video.data.video_io import VideoDecodeError, open_video, resolve_decoding
from hiera_video.utils.labelmap import read_labelmap
from hiera_video.utils.reports import BadRowReport

logger = logging.getLogger(__name__)

# First and last keyframe second of AVA v2.x (PySlowFast AVA_VALID_FRAMES), the default AVA.KEYFRAME_RANGE.
KEYFRAME_RANGE = (902, 1798)
# Validation without AVA.FULL_TEST_ON_VAL scores keyframes whose second is a multiple of this (PySlowFast).
VAL_SECOND_STEP = 4
# Boxes narrower or lower than this many pixels after a training crop are dropped.
MIN_BOX_PIXELS = 1.0
# Training crops drawn before accepting one that keeps no box.
MAX_CROP_DRAWS = 10
# Box coordinates this little outside [0, 1] are rounding (box lists have 3 decimals) and are clamped; boxes
# farther out are dropped.
BOX_TOLERANCE = 1e-3
_OUTSIDE = f"boxes with a coordinate outside [0, 1] (by more than {BOX_TOLERANCE:g}) are dropped"
_EMPTY = "boxes with x2 <= x1 or y2 <= y1 are dropped"


# ----------------------------------------------------------------------------------------------- box lists


class KeyframeFailure(NamedTuple):
    """A keyframe whose clip could not be read, and why."""

    video_id: str
    second: int
    error: str

    def __str__(self) -> str:
        return f"{self.video_id} at {self.second} s: {self.error}"


@dataclass(frozen=True)
class ActionClasses:
    """The action ids the model predicts, output j predicting ids[j], and what defines them (for messages).

    All classes: ids 1..MODEL.NUM_CLASSES, and an action outside them is an error in the data. A subset (a label
    map): its ids, and actions outside it are left out of training and evaluation (counted and reported)."""

    ids: tuple[int, ...]
    source: str
    subset: bool

    @classmethod
    def first(cls, num_classes: int) -> ActionClasses:
        return cls(tuple(range(1, num_classes + 1)), f"1..MODEL.NUM_CLASSES={num_classes}", subset=False)

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> ActionClasses:
        """AVA.CLASS_SUBSET's classes when it is set (MODEL.NUM_CLASSES must be their number), else the first
        MODEL.NUM_CLASSES."""
        num_classes = cfg.MODEL.NUM_CLASSES
        if not cfg.AVA.CLASS_SUBSET:
            return cls.first(num_classes)
        path = os.path.join(cfg.AVA.ANNOTATION_DIR, cfg.AVA.CLASS_SUBSET)
        if not g_pathmgr.isfile(path):
            raise FileNotFoundError(f"AVA.CLASS_SUBSET: label map not found: {path}")
        ids = [entry["id"] for entry in read_labelmap(path)]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"AVA.CLASS_SUBSET {path} lists class ids {repeated} more than once")
        if len(ids) != num_classes:
            raise ValueError(f"AVA.CLASS_SUBSET {path} lists {len(ids)} classes but MODEL.NUM_CLASSES is "
                             f"{num_classes}: the model needs one output per class, set MODEL.NUM_CLASSES {len(ids)}")
        return cls(tuple(sorted(ids)), f"AVA.CLASS_SUBSET {path}", subset=True)

    def columns(self, class_ids: Sequence[int], what: str) -> list[int]:
        """The model outputs of `class_ids`; ValueError naming `what` asks for a class the model does not have."""
        column = {class_id: j for j, class_id in enumerate(self.ids)}
        missing = sorted(c for c in class_ids if c not in column)
        if missing:
            raise ValueError(f"{what}: class ids {missing} are not among the model's classes ({self.source})")
        return [column[c] for c in class_ids]


def keyframe_range(cfg: CfgNode) -> tuple[int, int]:
    """AVA.KEYFRAME_RANGE as (first, last) seconds, checked."""
    value = list(cfg.AVA.KEYFRAME_RANGE)
    if len(value) != 2 or not all(isinstance(v, int) for v in value) or value[0] > value[1]:
        raise ValueError(f"AVA.KEYFRAME_RANGE must be [first, last] whole seconds with first <= last, got {value}")
    return value[0], value[1]


def evaluated_labelmap(cfg: CfgNode) -> str:
    """The label map whose classes evaluation scores and tools name: AVA.CLASS_SUBSET when set, else
    AVA.LABEL_MAP_FILE (a path under AVA.ANNOTATION_DIR)."""
    return os.path.join(cfg.AVA.ANNOTATION_DIR, cfg.AVA.CLASS_SUBSET or cfg.AVA.LABEL_MAP_FILE)


@dataclass(frozen=True)
class AvaKeyframe:
    """One keyframe with its person boxes: normalised (x1, y1, x2, y2) and multi-hot actions (one column per model
    output, ActionClasses).

    An all-zero label row is a person without an annotated action (a negative in training).
    """

    video_id: str
    second: int
    boxes: np.ndarray  # float32 [K, 4]
    labels: np.ndarray  # uint8 [K, num_classes]


def _parse_box_row(row: list[str], where: str, has_score: bool) -> tuple[str, int, tuple[float, ...], int, float]:
    if len(row) < (8 if has_score else 7):
        raise ValueError(f"{where}: expected video,second,x1,y1,x2,y2,action{',score' if has_score else ''}, "
                         f"got {len(row)} columns: {','.join(row)!r}")
    try:
        second = int(row[1])
        box = tuple(float(v) for v in row[2:6])
        action = int(row[6]) if row[6].strip() else -1
        score = float(row[7]) if has_score else 1.0
    except ValueError:
        raise ValueError(f"{where}: second, coordinates, action and score must be numbers, got "
                         f"{','.join(row)!r}") from None
    return row[0], second, box, action, score


def _usable_box(box: tuple[float, ...]) -> tuple[tuple[float, ...] | None, str]:
    """(the box clamped to [0, 1], "") if it is usable, else (None, the problem)."""
    if not all(-BOX_TOLERANCE <= v <= 1.0 + BOX_TOLERANCE for v in box):  # NaN too
        return None, _OUTSIDE
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
    if x2 <= x1 or y2 <= y1:
        return None, _EMPTY
    return (x1, y1, x2, y2), ""


def read_box_lists(groundtruth: Sequence[str], detected: Sequence[str], score_thresh: float, classes: ActionClasses,
                   second_step: int = 1, seconds: tuple[int, int] = KEYFRAME_RANGE) -> list[AvaKeyframe]:
    """Keyframes of the listed box files: boxes merged by coordinates, their actions made multi-hot over `classes`.

    Rows whose second lies outside `seconds` (AVA.KEYFRAME_RANGE, first and last included) are left out, and so
    are actions outside a class subset (their boxes stay, as persons doing none of its actions); both are counted
    in one warning per file with the first file:line locations. Detected boxes scoring below `score_thresh` and
    keyframes whose second is not a multiple of `second_step` are left out (by design, unreported). Boxes within
    BOX_TOLERANCE of [0, 1] are clamped to it; others outside it, or with x2 <= x1 or y2 <= y1, are dropped with
    one warning per file and problem. A warning is logged once per process (validation and test read the same
    detected boxes). Malformed rows, and actions outside 1..MODEL.NUM_CLASSES without a subset,
    raise ValueError naming file and line. Keyframes come sorted by (video, second).
    """
    column = {class_id: j for j, class_id in enumerate(classes.ids)}
    first, last = seconds
    outside_range = f"rows outside AVA.KEYFRAME_RANGE [{first}, {last}] are left out"
    outside_subset = (f"actions outside {classes.source} are left out (their boxes stay, as persons doing none of "
                      "its actions)")
    by_keyframe: dict[tuple[str, int], dict[tuple[float, ...], set[int]]] = {}
    for path, is_groundtruth in [(p, True) for p in groundtruth] + [(p, False) for p in detected]:
        if not g_pathmgr.isfile(path):
            raise FileNotFoundError(f"AVA box list not found: {path}")
        report = BadRowReport(path)
        with g_pathmgr.open(path, "r") as f:
            for line_number, row in enumerate(csv.reader(f), start=1):
                if not row:
                    continue
                video_id, second, raw_box, action, score = _parse_box_row(row, f"{path}:{line_number}",
                                                                          has_score=not is_groundtruth)
                if not first <= second <= last:
                    report.add(outside_range, 1, [(line_number, f"second {second}")])
                    continue
                if action != -1 and action not in column:
                    if not classes.subset:
                        raise ValueError(f"{path}:{line_number}: action {action} is outside {classes.source}")
                    report.add(outside_subset, 1, [(line_number, f"action {action}")])
                    action = -1
                if (not is_groundtruth and score < score_thresh) or second % second_step:
                    continue
                box, problem = _usable_box(raw_box)
                if box is None:
                    report.add(problem, 1, [(line_number, "x1,y1,x2,y2 = " + ",".join(row[2:6]))])
                    continue
                actions = by_keyframe.setdefault((video_id, second), {}).setdefault(box, set())
                if action > 0:
                    actions.add(column[action])
        report.log(logger, once=True)  # the detected boxes are read for validation and again for the test
    keyframes = []
    for (video_id, second), boxes in sorted(by_keyframe.items()):
        labels = np.zeros((len(boxes), len(classes.ids)), dtype=np.uint8)
        for row, columns in enumerate(boxes.values()):
            labels[row, list(columns)] = 1
        keyframes.append(AvaKeyframe(video_id, second, np.array(list(boxes), dtype=np.float32).reshape(-1, 4),
                                     labels))
    return keyframes


# ----------------------------------------------------------------------------------------------- video sources


def keyframe_clip_indices(second: float, first_second: float, fps: float, video_len: int, num_frames: int,
                          sampling_rate: int, target_fps: float) -> np.ndarray:
    """Frame indices of the clip centred on the keyframe of `second` (see the module docstring).

    `sampling_rate` counts frames at `target_fps`; the video's own `fps` converts them to its frames. Indices are
    clamped to [0, video_len); a keyframe outside the video raises ValueError.
    """
    centre_time = second - first_second
    centre = int(np.floor(centre_time * fps + 0.5))
    if not 0 <= centre < video_len:
        raise ValueError(f"the keyframe of second {second} is frame {centre}, outside the video's {video_len} "
                         f"frames at {fps:g} fps (check AVA.FIRST_SECOND={first_second:g})")
    span = num_frames * sampling_rate
    offsets = (np.arange(num_frames) * sampling_rate - span // 2) / target_fps
    indices = np.floor((centre_time + offsets) * fps + 0.5).astype(np.int64)
    return np.clip(indices, 0, video_len - 1)


def read_frame_lists(paths: Sequence[str]) -> dict[str, np.ndarray]:
    """Video id -> frame paths (relative to AVA.FRAME_DIR, as bytes, ordered by frame index) from PySlowFast frame
    lists. Bytes arrays keep the millions of paths of a split compact and shareable with data workers.

    Frames missing from a list (gaps in its frame indices) are empty paths, reported in one warning; clips that
    need them fail to read (AvaVideos.read_clip), so only their keyframes are skipped."""
    frames: dict[str, dict[int, str]] = {}
    for path in paths:
        for row in read_frame_list(path):
            frames.setdefault(row.video_id, {})[row.frame_index] = row.path
    lists, gaps = {}, []
    for video_id, by_index in frames.items():
        num_frames = max(by_index) + 1
        if len(by_index) < num_frames:
            gaps.append(f"{video_id} ({num_frames - len(by_index)} of frames 0..{num_frames - 1})")
        lists[video_id] = np.array([by_index.get(i, "").encode() for i in range(num_frames)])
    if gaps:
        logger.warning("AVA frame lists %s: %d videos miss frames: %s%s; keyframes whose clips need them are skipped "
                       "as bad videos", ", ".join(paths), len(gaps), ", ".join(gaps[:5]),
                       " ..." if len(gaps) > 5 else "")
    return lists


def find_video_files(video_dir: str) -> dict[str, str]:
    """Video id (file name without extension) -> path, for every file in `video_dir`."""
    if not g_pathmgr.isdir(video_dir):
        raise FileNotFoundError(f"AVA.VIDEO_DIR is not a folder: {video_dir}")
    files: dict[str, str] = {}
    for name in sorted(g_pathmgr.ls(video_dir)):
        video_id, ext = os.path.splitext(name)
        if name.startswith(".") or not ext:
            continue
        if video_id in files:
            raise ValueError(f"{video_dir}: two files for video {video_id}: {os.path.basename(files[video_id])}, "
                             f"{name}")
        files[video_id] = os.path.join(video_dir, name)
    return files


class AvaVideos:
    """Where each AVA video is (a file or a frame folder) and how to read the frames around a keyframe."""

    def __init__(self, files: dict[str, str] | None = None, frame_lists: dict[str, np.ndarray] | None = None,
                 frame_dir: str = "", first_second: float = 900.0, frame_rate: float = 30.0,
                 backend: str = "auto", device: str = "cpu") -> None:
        if (files is None) == (frame_lists is None):
            raise ValueError("AvaVideos needs either video files or frame lists")
        self.files = files
        self.frame_lists = frame_lists
        self.frame_dir = frame_dir
        self.first_second = first_second
        self.frame_rate = frame_rate
        self.backend = backend
        self.device = device

    @classmethod
    def from_cfg(cls, cfg: CfgNode, split: str) -> AvaVideos:
        """The layout the AVA config names: AVA.VIDEO_DIR, or AVA.FRAME_DIR with the split's frame lists."""
        ava = cfg.AVA
        if bool(ava.VIDEO_DIR) == bool(ava.FRAME_DIR):
            raise ValueError("Set exactly one of AVA.VIDEO_DIR (one video file per id) and AVA.FRAME_DIR (frame "
                             f"folders); got VIDEO_DIR={ava.VIDEO_DIR!r}, FRAME_DIR={ava.FRAME_DIR!r}")
        common: dict[str, Any] = dict(first_second=ava.FIRST_SECOND, frame_rate=ava.FRAME_RATE)
        if ava.VIDEO_DIR:
            backend, device = resolve_decoding(cfg.DATA.DECODING_BACKEND, cfg.DATA.DECODE_DEVICE)
            common.update(backend=backend, device=device)
            return cls(files=find_video_files(ava.VIDEO_DIR), **common)
        lists = ava.TRAIN_LISTS if split == "train" else ava.TEST_LISTS
        frame_lists = read_frame_lists([os.path.join(ava.FRAME_LIST_DIR, name) for name in lists])
        return cls(frame_lists=frame_lists, frame_dir=ava.FRAME_DIR, **common)

    def video_ids(self) -> set[str]:
        return set(self.files if self.files is not None else self.frame_lists)

    def source(self, video_id: str) -> str:
        """The file or frame folder of `video_id`, for messages."""
        if self.files is not None:
            return self.files[video_id]
        first_frame = next(name for name in self.frame_lists[video_id] if name)
        return os.path.join(self.frame_dir, os.path.dirname(first_frame.decode()))

    def read_clip(self, video_id: str, second: float, num_frames: int, sampling_rate: int,
                  target_fps: float) -> torch.Tensor:
        """uint8 frames [num_frames, H, W, 3] of the clip centred on the keyframe of `second`.

        Raises VideoDecodeError naming the file (or folder) when it cannot be read, a frame it needs is missing or
        the keyframe lies outside it (or naming the video when the layout does not have it).
        """
        if video_id not in (self.files if self.files is not None else self.frame_lists):
            raise VideoDecodeError(video_id, "no file for this video in AVA.VIDEO_DIR" if self.files is not None
                                   else "the frame lists do not list this video")

        def indices_for(fps: float, video_len: int) -> np.ndarray:
            try:
                return keyframe_clip_indices(second, self.first_second, fps, video_len, num_frames, sampling_rate,
                                             target_fps)
            except ValueError as error:
                raise VideoDecodeError(self.source(video_id), str(error)) from None

        if self.files is not None:
            with open_video(self.files[video_id], backend=self.backend, device=self.device) as reader:
                return reader.get_frames(indices_for(reader.fps, reader.num_frames).tolist())
        names = self.frame_lists[video_id]
        unique, inverse = np.unique(indices_for(self.frame_rate, len(names)), return_inverse=True)
        missing = unique[names[unique] == b""]
        if len(missing):
            raise VideoDecodeError(self.source(video_id), f"frames {missing.tolist()} of the clip around second "
                                   f"{second:g} are missing from the frame list")
        paths = [os.path.join(self.frame_dir, names[i].decode()) for i in unique]
        with open_video(paths, frames_fps=self.frame_rate) as reader:
            return reader.get_frames(np.arange(len(paths)).tolist())[torch.from_numpy(inverse.reshape(-1))]

    def read_keyframe(self, video_id: str, second: float) -> torch.Tensor:
        """uint8 [H, W, 3]: the frame shown at `second`."""
        return self.read_clip(video_id, second, num_frames=1, sampling_rate=1, target_fps=1.0)[0]


# ----------------------------------------------------------------------------------------------- transforms


def _box_extras(sample: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The per-box tensors SanitizeBoundingBoxes filters with the boxes (a named function: workers pickle it)."""
    return sample["extras"]


class BoxClipTransform:
    """uint8 frames [T, H, W, 3] with pixel boxes -> normalised clip [3, T, S, S] with boxes in clip pixels.

    `geometry` is a v2 transform moving the video and its BoundingBoxes together. With `drop_empty`, boxes left
    smaller than MIN_BOX_PIXELS are dropped (with their `extras` rows) and up to MAX_CROP_DRAWS geometries are
    drawn until one keeps a box; otherwise every box is kept, clamped to the clip.
    """

    def __init__(self, geometry: v2.Transform, mean: Sequence[float], std: Sequence[float], drop_empty: bool):
        self.geometry = geometry
        self.normalize = v2.Compose(to_normalized_float(mean, std))
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=MIN_BOX_PIXELS, labels_getter=_box_extras) \
            if drop_empty else None

    def __call__(self, frames: torch.Tensor, boxes: torch.Tensor, extras: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns (clip [3, T, S, S], boxes [K', 4], extras with the kept rows)."""
        sample = {
            "video": tv_tensors.Video(frames.permute(0, 3, 1, 2)),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(frames.shape[1:3])),
            "extras": extras,
        }
        for _ in range(MAX_CROP_DRAWS if self.sanitize is not None else 1):
            out = self.geometry(sample)
            if self.sanitize is not None:
                out = self.sanitize(out)
            if len(out["boxes"]) or not len(boxes):
                break
        clip = video_to_clip(self.normalize(out["video"]))
        return clip, out["boxes"].as_subclass(torch.Tensor).float(), tuple(out["extras"])


def build_box_transform(cfg: CfgNode, train: bool) -> BoxClipTransform:
    """Training: random-resized crop (DATA.TRAIN_JITTER_SCALES_RELATIVE) or short-side jitter + random crop, and a
    flip (DATA.RANDOM_FLIP). Evaluation: short side to DATA.TEST_CROP_SIZE and the centre square."""
    data = cfg.DATA
    if not train:
        geometry = eval_geometry(data.TEST_CROP_SIZE, data.TEST_CROP_SIZE)
        return BoxClipTransform(v2.Compose(geometry), data.MEAN, data.STD, drop_empty=False)
    relative = list(data.TRAIN_JITTER_SCALES_RELATIVE)
    geometry = train_geometry(data.TRAIN_CROP_SIZE, scale=tuple(relative) if relative else None,
                              aspect=tuple(data.TRAIN_JITTER_ASPECT_RELATIVE),
                              jitter_scales=None if relative else tuple(data.TRAIN_JITTER_SCALES),
                              flip=data.RANDOM_FLIP)
    return BoxClipTransform(v2.Compose(geometry), data.MEAN, data.STD, drop_empty=True)


def jitter_boxes(boxes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Each edge of each normalised box moved by up to `fraction` of the box's width / height, then kept in
    [0, 1] with x1 <= x2 and y1 <= y2."""
    if fraction <= 0 or not len(boxes):
        return boxes
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    moved = np.clip(boxes + rng.uniform(-fraction, fraction, boxes.shape) * size, 0.0, 1.0)
    low, high = np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])
    return np.concatenate([low, high], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------------------------- dataset


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips and concatenate boxes: video [B,3,T,S,S], boxes [N,4] (clip pixels), box_batch_idx [N],
    labels [N,C], source_boxes [N,4] (normalised, as in the box file), index [B], metadata [(video, second)] * B,
    bad_files."""
    counts = torch.tensor([len(s["boxes"]) for s in samples])
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "boxes": torch.cat([s["boxes"] for s in samples]),
        "box_batch_idx": torch.repeat_interleave(torch.arange(len(samples)), counts),
        "labels": torch.cat([s["labels"] for s in samples]),
        "source_boxes": torch.cat([s["source_boxes"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "metadata": [s["metadata"] for s in samples],
        "bad_files": [entry for s in samples for entry in s["bad_files"]],
    }


class AvaDataset(Dataset):
    """Keyframes -> dict(video [3,T,S,S], boxes [K,4] in clip pixels, labels [K,C], source_boxes [K,4], index,
    metadata (video, second), bad_files); batch with `collate` (collate_detection).

    A keyframe whose video cannot be read is reported in `bad_files`: in training another random keyframe replaces
    it; in evaluation it comes back with no boxes (it gets no detections, and so cannot be counted twice).
    """

    collate = staticmethod(collate_detection)

    def __init__(self, keyframes: Sequence[AvaKeyframe], videos: AvaVideos, transform: BoxClipTransform,
                 train: bool, num_frames: int, sampling_rate: int, target_fps: float, crop_size: int,
                 box_jitter: float = 0.0, name: str = "ava") -> None:
        if not keyframes:
            raise ValueError(f"{name}: no keyframe with boxes")
        self.keyframes = list(keyframes)
        self.videos = videos
        self.transform = transform
        self.train = train
        self.clip_args = dict(num_frames=num_frames, sampling_rate=sampling_rate, target_fps=target_fps)
        self.crop_size = crop_size
        self.box_jitter = box_jitter
        self.name = name

    def __len__(self) -> int:
        return len(self.keyframes)

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        keyframe = self.keyframes[index]
        frames = self.videos.read_clip(keyframe.video_id, keyframe.second, **self.clip_args)
        boxes = jitter_boxes(keyframe.boxes, self.box_jitter, rng) if self.train else keyframe.boxes
        height, width = frames.shape[1:3]
        pixels = torch.from_numpy(boxes) * torch.tensor([width, height, width, height], dtype=torch.float32)
        clip, pixels, (labels, source) = self.transform(
            frames, pixels, (torch.from_numpy(keyframe.labels).float(), torch.from_numpy(keyframe.boxes)))
        return {"video": clip, "boxes": pixels, "labels": labels, "source_boxes": source, "index": index,
                "metadata": (keyframe.video_id, keyframe.second)}

    def _unreadable(self, index: int) -> dict[str, Any]:
        keyframe = self.keyframes[index]
        size = self.crop_size
        return {"video": torch.zeros(3, self.clip_args["num_frames"], size, size), "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, keyframe.labels.shape[1]), "source_boxes": torch.zeros(0, 4),
                "index": index, "metadata": (keyframe.video_id, keyframe.second)}

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        def failure(index: int, error: Exception) -> KeyframeFailure:
            keyframe = self.keyframes[index]
            return KeyframeFailure(keyframe.video_id, keyframe.second, str(error))

        def next_index(index: int, rng: np.random.Generator) -> int | None:
            # Training draws another keyframe; evaluation keeps the keyframe, without boxes, so it is counted.
            return int(rng.integers(len(self))) if self.train else None

        sample, index, bad_files = load_with_replacement(key, self._load, failure, next_index, self.name)
        if sample is None:
            sample = self._unreadable(index)
        sample["bad_files"] = bad_files
        return sample


def build_ava(cfg: CfgNode, split: str) -> AvaDataset:
    """The `split` of AVA: "train" (ground-truth boxes), "val" (detected boxes, every 4th second unless
    AVA.FULL_TEST_ON_VAL) or "test" (detected boxes, every keyframe); videos from the configured layout."""
    ava = cfg.AVA
    annotation = lambda name: os.path.join(ava.ANNOTATION_DIR, name)  # noqa: E731
    train = split == "train"
    step = VAL_SECOND_STEP if split == "val" and not ava.FULL_TEST_ON_VAL else 1
    keyframes = read_box_lists(
        groundtruth=[annotation(n) for n in (ava.TRAIN_GT_BOX_LISTS if train else [])],
        detected=[annotation(n) for n in (ava.TRAIN_PREDICT_BOX_LISTS if train else ava.TEST_PREDICT_BOX_LISTS)],
        score_thresh=ava.DETECTION_SCORE_THRESH, classes=ActionClasses.from_cfg(cfg), second_step=step,
        seconds=keyframe_range(cfg))
    videos = AvaVideos.from_cfg(cfg, split)
    available = videos.video_ids()
    missing = sorted({k.video_id for k in keyframes} - available)
    if missing:
        # Training on the videos one has is legitimate: their keyframes are left out, and not counted against
        # DATA.MAX_BAD_FRACTION. Evaluation keeps them, so each is counted as a bad video (and gets no detections).
        logger.warning("AVA %s: %d videos of the box lists (%d keyframes) have no %s and are %s: %s%s", split,
                       len(missing), sum(k.video_id not in available for k in keyframes),
                       "file in AVA.VIDEO_DIR" if ava.VIDEO_DIR else "frames in the frame lists",
                       "left out" if train else "counted as bad videos", ", ".join(missing[:5]),
                       " ..." if len(missing) > 5 else "")
        if train:
            keyframes = [k for k in keyframes if k.video_id in available]
    return AvaDataset(keyframes, videos, build_box_transform(cfg, train), train=train,
                      num_frames=cfg.DATA.NUM_FRAMES, sampling_rate=cfg.DATA.SAMPLING_RATE,
                      target_fps=cfg.DATA.TARGET_FPS, crop_size=cfg.DATA.TRAIN_CROP_SIZE if train else
                      cfg.DATA.TEST_CROP_SIZE, box_jitter=ava.BOX_JITTER if train else 0.0, name=f"AVA {split}")
