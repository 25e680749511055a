"""A tiny but complete AVA-format dataset for the tests: real mp4 files or JPEG frame folders, ground truth,
detected boxes, label map, exclusions. Each person is a flat coloured rectangle whose colour says its action (red:
1 "stand", blue: 3 "sit"), so a detector can learn it.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torchvision.io import encode_jpeg

from hiera_video.data.video_io import write_video

FIRST_SECOND = 901  # the tiny videos start 1 s before the first keyframe (real AVA cuts start at 900 s)
SECONDS = (902, 903, 904)
NUM_VIDEO_FRAMES = 120  # 4 s at 30 fps: 901..905
WIDTH, HEIGHT = 96, 64
ACTION_COLOURS = {1: (230, 30, 30), 3: (30, 30, 230)}
LABELMAP = 'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "sit"\n  id: 3\n}\n'
SIT_ONLY = "labelmap_sit.pbtxt"  # a one-class subset (AVA.CLASS_SUBSET) of LABELMAP, also in the annotation folder


def _people(rng):
    """Two people per video: (normalised box, action) with random placement, one of each action."""
    people = []
    for slot, action in enumerate(rng.permutation([1, 3])):
        x1 = 0.05 + 0.5 * slot + rng.uniform(0, 0.1)
        y1 = rng.uniform(0.05, 0.3)
        people.append(((round(x1, 3), round(y1, 3), round(x1 + 0.35, 3), round(y1 + 0.6, 3)), int(action)))
    return people


def _render(people, rng):
    frames = np.full((NUM_VIDEO_FRAMES, HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    for (x1, y1, x2, y2), action in people:
        frames[:, round(y1 * HEIGHT):round(y2 * HEIGHT), round(x1 * WIDTH):round(x2 * WIDTH)] = \
            ACTION_COLOURS[action]
    return frames


def write_frames(frame_dir, video_id, frames):
    folder = os.path.join(frame_dir, video_id)
    os.makedirs(folder)
    names = []
    for i, frame in enumerate(frames):
        names.append(f"{video_id}/{video_id}_{i + 1:06d}.jpg")
        data = encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), quality=95)
        with open(os.path.join(frame_dir, names[-1]), "wb") as f:
            f.write(data.numpy().tobytes())
    return names


def write_ava_dataset(root, layout, num_train=4, num_val=2, seed=0, seconds=SECONDS, first_second=FIRST_SECOND):
    """A tiny AVA dataset under `root` in `layout` "videos" or "frames"; returns config overrides for it.

    Keyframes are at `seconds` of videos whose frame 0 is shown at `first_second` (4 s long: seconds must lie in
    first_second + [0, 4)); AVA.KEYFRAME_RANGE is left at its default, which fits the default seconds."""
    rng = np.random.default_rng(seed)
    annotations = os.path.join(root, "annotations")
    os.makedirs(annotations)
    lines = {"train": [], "val": []}
    detected, frame_lists = [], {"train": ["original_vido_id video_id frame_id path labels"],
                                 "val": ["original_vido_id video_id frame_id path labels"]}
    for split, count in (("train", num_train), ("val", num_val)):
        for v in range(count):
            video_id = f"{split}_{v}"
            people = _people(rng)
            frames = _render(people, rng)
            if layout == "videos":
                os.makedirs(os.path.join(root, "videos"), exist_ok=True)
                write_video(os.path.join(root, "videos", f"{video_id}.mp4"), frames)
            else:
                names = write_frames(os.path.join(root, "frames"), video_id, frames)
                frame_lists[split] += [f'{video_id} {v} {i} {name} ""' for i, name in enumerate(names)]
            for second in seconds:
                for person, (box, action) in enumerate(people):
                    coords = ",".join(f"{c:.3f}" for c in box)
                    lines[split].append(f"{video_id},{second},{coords},{action},{person}")
                    if split == "val":
                        detected.append(f"{video_id},{second},{coords},,0.95")
                if split == "val":  # a low-confidence detection the score threshold removes
                    detected.append(f"{video_id},{second},0.400,0.400,0.600,0.900,,0.300")
            if split == "train":  # a ground-truth action outside the label map
                lines[split].append(f"{video_id},{seconds[0]},0.450,0.100,0.550,0.400,5,9")
    files = {"ava_train_v2.2.csv": lines["train"], "ava_val_v2.2.csv": lines["val"],
             "ava_val_predicted_boxes.csv": detected,
             "ava_val_excluded_timestamps_v2.2.csv": [f"val_1,{seconds[1]:04d}"]}
    for name, rows in files.items():
        with open(os.path.join(annotations, name), "w") as f:
            f.write("\n".join(rows) + "\n")
    with open(os.path.join(annotations, "labelmap.pbtxt"), "w") as f:
        f.write(LABELMAP)
    with open(os.path.join(annotations, SIT_ONLY), "w") as f:
        f.write(LABELMAP[LABELMAP.index("item", 1):])
    opts = ["TRAIN.DATASET", "ava", "TEST.DATASET", "ava", "MODEL.NUM_CLASSES", "80",
            "AVA.ANNOTATION_DIR", annotations, "AVA.FIRST_SECOND", str(first_second),
            "AVA.TRAIN_GT_BOX_LISTS", "['ava_train_v2.2.csv']",
            "AVA.TEST_PREDICT_BOX_LISTS", "['ava_val_predicted_boxes.csv']", "AVA.DETECTION_SCORE_THRESH", "0.8",
            "AVA.LABEL_MAP_FILE", "labelmap.pbtxt", "AVA.GROUNDTRUTH_FILE", "ava_val_v2.2.csv",
            "AVA.EXCLUSION_FILE", "ava_val_excluded_timestamps_v2.2.csv"]
    if layout == "videos":
        return opts + ["AVA.VIDEO_DIR", os.path.join(root, "videos")]
    lists = os.path.join(root, "frame_lists")
    os.makedirs(lists)
    for split, rows in frame_lists.items():
        with open(os.path.join(lists, f"{split}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return opts + ["AVA.FRAME_DIR", os.path.join(root, "frames"), "AVA.FRAME_LIST_DIR", lists]
