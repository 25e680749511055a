"""Deterministic synthetic AVA v2.2 files (ground truth, detections, 60-class label map) for speed benchmarks.

The ground truth looks like AVA val: keyframes 0902..1798 (or any other range of seconds: custom AVA-format
datasets, AVA.KEYFRAME_RANGE) of 11-character video ids, about 2 people per keyframe
with about 2 actions each (4 rows per keyframe), a long-tailed class distribution. Detections score every box
(jittered people first, then random boxes) for the `classes_per_box` best classes, with boxes at 3 decimals and
scores at 4 like PySlowFast writes them; scores are higher on a person's true actions.

    python benchmarks/make_ava_synthetic.py OUT_DIR --keyframes 3200 --boxes 3 --classes-per-box 7 \
        [--first-second 902 --seconds-per-video 897]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

# The 60 classes of ava_action_list_v2.2_for_activitynet_2019.pbtxt.
AVA_EVAL_IDS = (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38,
                41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70,
                72, 73, 74, 76, 77, 78, 79, 80)
FIRST_SECOND, KEYFRAMES_PER_VIDEO = 902, 897  # seconds 0902..1798
_ROWS_PER_WRITE = 1 << 20


def _digits(values: np.ndarray, count: int) -> np.ndarray:
    """ASCII digits [N, count] of non-negative ints, most significant first."""
    powers = 10 ** np.arange(count - 1, -1, -1)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def _fixed_point(values: np.ndarray, decimals: int) -> np.ndarray:
    """ASCII of values in [0, 1] as 'd.ddd' with `decimals` digits after the point, [N, decimals + 2]."""
    scaled = np.rint(values * 10**decimals).astype(np.int64)
    digits = _digits(scaled, decimals + 1)
    return np.concatenate([digits[:, :1], np.full((len(values), 1), ord("."), np.uint8), digits[:, 1:]], axis=1)


def _write_detection_rows(f, prefixes: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                          scores: np.ndarray) -> None:
    """Append `prefix,x1,y1,x2,y2,action_id,score` lines, assembled as bytes with numpy.

    Python string formatting of tens of millions of rows takes minutes; this takes seconds.
    """
    comma = np.full((len(labels), 1), ord(","), np.uint8)
    tens = _digits(labels // 10, 1)
    tens[labels < 10] = 0  # NUL bytes are removed below: no leading zero
    parts = [prefixes]
    for column in range(4):
        parts += [_fixed_point(boxes[:, column], 3), comma]
    parts += [tens, _digits(labels % 10, 1), comma, _fixed_point(scores, 4),
              np.full((len(labels), 1), ord("\n"), np.uint8)]
    table = np.concatenate(parts, axis=1).ravel()
    f.write(table[table != 0].tobytes())


def _labelmap_text() -> str:
    return "".join(f'item {{\n  name: "synthetic action {i}"\n  id: {i}\n}}\n' for i in AVA_EVAL_IDS)


def make_ava_synthetic(out_dir: str, num_keyframes: int, boxes_per_keyframe: int = 10, classes_per_box: int = 60,
                       seed: int = 0, first_second: int = FIRST_SECOND,
                       seconds_per_video: int = KEYFRAMES_PER_VIDEO) -> dict[str, str]:
    """Write groundtruth.csv, detections.csv and labelmap.pbtxt into out_dir; returns their paths by name.

    Each video has keyframes at seconds first_second, first_second + 1, ... (`seconds_per_video` of them)."""
    if not 1 <= classes_per_box <= len(AVA_EVAL_IDS):
        raise ValueError(f"classes_per_box must be in 1..{len(AVA_EVAL_IDS)}, got {classes_per_box}")
    if first_second < 0 or seconds_per_video < 1 or first_second + seconds_per_video > 10000:
        raise ValueError(f"keyframe seconds must lie in 0..9999, got {first_second}.."
                         f"{first_second + seconds_per_video - 1}")
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, file) for name, file in
             (("groundtruth", "groundtruth.csv"), ("detections", "detections.csv"), ("labelmap", "labelmap.pbtxt"))}
    with open(paths["labelmap"], "w") as f:
        f.write(_labelmap_text())

    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8)
    num_videos = -(-num_keyframes // seconds_per_video)
    video_ids = alphabet[rng.integers(0, len(alphabet), (num_videos, 11))]
    keyframe = np.arange(num_keyframes)
    prefixes = np.concatenate([video_ids[keyframe // seconds_per_video], np.full((num_keyframes, 1), 44, np.uint8),
                               _digits(first_second + keyframe % seconds_per_video, 4),
                               np.full((num_keyframes, 1), 44, np.uint8)], axis=1)

    # People: 1-3 per keyframe, 1-3 distinct actions each from a long-tailed distribution (Gumbel top-k).
    people = rng.integers(1, 4, num_keyframes)
    person_keyframe = np.repeat(keyframe, people)
    num_people = len(person_keyframe)
    x1, y1 = rng.uniform(0, 0.7, num_people), rng.uniform(0, 0.5, num_people)
    person_boxes = np.round(np.stack([x1, y1, x1 + rng.uniform(0.1, 0.3, num_people),
                                      y1 + rng.uniform(0.3, 0.5, num_people)], axis=1), 3)
    log_prior = -1.1 * np.log(np.arange(1, len(AVA_EVAL_IDS) + 1))
    ranked = np.argsort(-(log_prior + rng.gumbel(size=(num_people, len(AVA_EVAL_IDS)))), axis=1)
    num_actions = rng.integers(1, 4, num_people)
    true_action = np.zeros((num_people, len(AVA_EVAL_IDS)), dtype=bool)
    for k in range(3):
        has = num_actions > k
        true_action[np.flatnonzero(has), ranked[has, k]] = True
    person_index = np.arange(num_people) - np.repeat(np.cumsum(people) - people, people)
    with open(paths["groundtruth"], "w") as f:
        ids = np.array(AVA_EVAL_IDS)
        for p, c in zip(*np.nonzero(true_action)):
            box = person_boxes[p]
            f.write("%s,%.3f,%.3f,%.3f,%.3f,%d,%d\n" % (prefixes[person_keyframe[p]][:-1].tobytes().decode(),
                                                       *box, ids[c], person_index[p]))

    # Detections: jittered people first, then random boxes; every box scored for its best classes.
    first_person = np.cumsum(people) - people
    with open(paths["detections"], "wb") as f:
        per_write = max(1, _ROWS_PER_WRITE // (boxes_per_keyframe * classes_per_box))
        for start in range(0, num_keyframes, per_write):
            frames = keyframe[start:start + per_write]
            slot = np.tile(np.arange(boxes_per_keyframe), len(frames))
            box_frame = np.repeat(frames, boxes_per_keyframe)
            is_person = slot < people[box_frame]
            person = np.where(is_person, first_person[box_frame] + slot, 0)
            rx, ry = rng.uniform(0, 0.7, len(slot)), rng.uniform(0, 0.5, len(slot))
            random_boxes = np.stack([rx, ry, rx + rng.uniform(0.1, 0.3, len(slot)),
                                     ry + rng.uniform(0.3, 0.5, len(slot))], axis=1)
            jitter = rng.uniform(-0.03, 0.03, (len(slot), 4))
            boxes = np.clip(np.where(is_person[:, None], person_boxes[person] + jitter, random_boxes), 0, 1)
            scores = rng.uniform(0, 0.7, (len(slot), len(AVA_EVAL_IDS))) ** 2
            hit = is_person[:, None] & true_action[person]
            scores[hit] = rng.uniform(0.3, 1.0, hit.sum())
            classes = np.sort(np.argsort(-scores, axis=1)[:, :classes_per_box], axis=1)
            row_box = np.repeat(np.arange(len(slot)), classes_per_box)
            row_class = classes.ravel()
            _write_detection_rows(f, prefixes[box_frame[row_box]], boxes[row_box],
                                  np.array(AVA_EVAL_IDS)[row_class], scores[row_box, row_class])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--keyframes", type=int, default=3200)
    parser.add_argument("--boxes", type=int, default=10, help="detected boxes per keyframe")
    parser.add_argument("--classes-per-box", type=int, default=60, help="rows per box (its best-scored classes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--first-second", type=int, default=FIRST_SECOND, help="first keyframe second of a video")
    parser.add_argument("--seconds-per-video", type=int, default=KEYFRAMES_PER_VIDEO, help="keyframes per video")
    args = parser.parse_args()
    for name, path in make_ava_synthetic(args.out_dir, args.keyframes, args.boxes, args.classes_per_box,
                                         args.seed, args.first_second, args.seconds_per_video).items():
        print(f"{name}: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
