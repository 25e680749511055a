"""AVA data: box lists, keyframe timing in both layouts, box-aware augmentation, batches, bad input (on the tiny
datasets of ava_factory.py)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from ava_factory import HEIGHT, SECONDS, SIT_ONLY, WIDTH, write_ava_dataset, write_frames
from hiera_video.config import load_config
from hiera_video.data.ava import (
    ActionClasses,
    AvaVideos,
    KeyframeFailure,
    build_ava,
    collate_detection,
    jitter_boxes,
    keyframe_clip_indices,
    read_box_lists,
    read_frame_lists,
)
from hiera_video.data.build import build_dataset
from hiera_video.data.loader import SampleKey
from hiera_video.data.video_io import write_video
from hiera_video.utils.labelmap import read_labelmap
from video_factory import decode_frame_ids, index_coded_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ALL = ActionClasses.first(80)


def data_cfg(opts, *extra):
    base = ["DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE", "64",
            "DATA.TEST_CROP_SIZE", "64", "DATA.TRAIN_JITTER_SCALES_RELATIVE", "[]",
            "DATA.TRAIN_JITTER_SCALES", "[64, 80]", "TASK", "detection"]
    return load_config([], base + list(opts) + list(extra))


@pytest.fixture(scope="module", params=["videos", "frames"])
def ava(request, tmp_path_factory):
    return write_ava_dataset(str(tmp_path_factory.mktemp(request.param)), request.param)


# ----------------------------------------------------------------------------------------------- box lists


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_box_lists_merge_boxes_into_multi_hot_actions_and_filter_detections(tmp_path, caplog):
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.2,0.5,0.9,1,0\nv,0902,0.1,0.2,0.5,0.9,3,0\n"
                                     "v,0902,0.6,0.2,0.9,0.9,80,1\nv,0901,0.1,0.1,0.2,0.2,1,0\n"
                                     "v,1799,0.1,0.1,0.2,0.2,1,0\nw,0904,-0.0004,0.0,1.0008,1.0,2,0\n")
    det = _write(tmp_path / "det.csv", "v,0902,0.1,0.2,0.5,0.9,,0.99\nv,0902,0.3,0.3,0.4,0.4,,0.95\n"
                                       "v,0902,0.3,0.3,0.45,0.45,,0.5\n")
    keyframes = read_box_lists([gt], [det], score_thresh=0.9, classes=ALL)
    assert [(k.video_id, k.second) for k in keyframes] == [("v", 902), ("w", 904)]  # 901 and 1799 are no keyframes
    (warning,) = _warnings(caplog)  # but they are counted, not dropped silently
    assert warning == f"{gt}: rows outside AVA.KEYFRAME_RANGE [902, 1798] are left out: 2 rows: {gt}:4 (second 901), " \
                      f"{gt}:5 (second 1799)"
    v = keyframes[0]
    assert v.boxes == pytest.approx(np.array([[0.1, 0.2, 0.5, 0.9], [0.6, 0.2, 0.9, 0.9], [0.3, 0.3, 0.4, 0.4]]))
    assert [list(np.flatnonzero(row) + 1) for row in v.labels] == [[1, 3], [80], []]  # the detection is a negative
    assert keyframes[1].boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]]  # rounding outside the frame is clamped
    every_4th = read_box_lists([gt], [], score_thresh=0.9, classes=ALL, second_step=4)
    assert [(k.video_id, k.second) for k in every_4th] == [("w", 904)]


@pytest.mark.parametrize("row, message", [
    ("v,0902,0.1,0.2,0.5\n", r"gt\.csv:2: expected video,second"),
    ("v,0902,0.1,x,0.5,0.9,1,0\n", r"gt\.csv:2: .*must be numbers"),
    ("v,0902,0.1,0.2,0.5,0.9,81,0\n", r"gt\.csv:2: action 81 is outside 1\.\.MODEL\.NUM_CLASSES=80"),
])
def test_malformed_box_rows_name_file_and_line(tmp_path, row, message):
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.2,0.5,0.9,1,0\n" + row)
    with pytest.raises(ValueError, match=message):
        read_box_lists([gt], [], score_thresh=0.9, classes=ALL)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_bad_boxes_are_reported_by_line_and_dropped(tmp_path, caplog):
    """Out-of-frame, inverted and empty boxes are dropped with one warning per file and problem naming file:line;
    a keyframe left without boxes disappears; rows that would not be used anyway are not reported."""
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.2,0.5,0.9,1,0\n"
                                     "v,0902,0.1,0.2,1.2,0.9,3,1\n"  # outside: dropped
                                     "v,0902,0.5,0.2,0.1,0.9,3,2\n"  # inverted
                                     "v,0903,0.3,0.2,0.3,0.9,1,0\n"  # zero width: its keyframe has no box left
                                     "v,0904,0.1,nan,0.5,0.9,1,0\n"  # NaN
                                     "v,0904,0.1,0.2,0.5,0.9,1,1\n")
    det = _write(tmp_path / "det.csv", "v,0902,0.6,0.2,0.9,0.9,,0.95\n"
                                       "v,0902,0.6,0.9,0.9,0.2,,0.95\n"  # inverted
                                       "v,0902,0.6,0.9,0.9,0.2,,0.5\n")  # inverted but below the threshold
    keyframes = read_box_lists([gt], [det], score_thresh=0.9, classes=ALL)
    assert [(k.video_id, k.second, len(k.boxes)) for k in keyframes] == [("v", 902, 2), ("v", 904, 1)]
    assert keyframes[0].boxes == pytest.approx(np.array([[0.1, 0.2, 0.5, 0.9], [0.6, 0.2, 0.9, 0.9]]))
    outside, empty, det_empty = _warnings(caplog)
    assert outside.startswith(f"{gt}: boxes with a coordinate outside [0, 1] (by more than 0.001) are dropped: "
                              f"2 rows: {gt}:2 (x1,y1,x2,y2 = 0.1,0.2,1.2,0.9), {gt}:5 (x1,y1,x2,y2 = 0.1,nan,0.5,")
    assert f"x2 <= x1 or y2 <= y1 are dropped: 2 rows: {gt}:3 " in empty and f"{gt}:4 " in empty
    assert f"1 row: {det}:2 (x1,y1,x2,y2 = 0.6,0.9,0.9,0.2)" in det_empty


def test_many_bad_boxes_make_one_warning_with_the_count(tmp_path, caplog):
    rows = [f"v,{902 + i},0.1,0.2,0.5,0.9,1,0\nv,{902 + i},0.5,0.2,0.5,0.9,1,1\n" for i in range(40)]
    gt = _write(tmp_path / "gt.csv", "".join(rows))
    assert len(read_box_lists([gt], [], 0.9, ALL)) == 40
    (warning,) = _warnings(caplog)
    assert ": 40 rows: " in warning and warning.count(f"{gt}:") == 1 + 5 and warning.endswith(", and 35 more")
    assert f"{gt}:2 " in warning and f"{gt}:10 " in warning


def test_missing_box_list_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_box_lists([str(tmp_path / "nowhere.csv")], [], 0.9, ALL)


def test_frame_lists_order_frames_and_report_gaps(tmp_path, caplog):
    good = _write(tmp_path / "l.csv", "original_vido_id video_id frame_id path labels\n"
                                      'a 0 1 a/a_000002.jpg ""\na 0 0 a/a_000001.jpg ""\nb 1 0 b/b_000001.jpg ""\n')
    lists = read_frame_lists([good])
    assert [p.decode() for p in lists["a"]] == ["a/a_000001.jpg", "a/a_000002.jpg"] and len(lists["b"]) == 1
    assert not _warnings(caplog)
    gap = _write(tmp_path / "gap.csv", 'a 0 0 a/a_000001.jpg ""\na 0 2 a/a_000003.jpg ""\n')
    assert [p.decode() for p in read_frame_lists([gap])["a"]] == ["a/a_000001.jpg", "", "a/a_000003.jpg"]
    (warning,) = _warnings(caplog)
    assert "gap.csv" in warning and "a (1 of frames 0..2)" in warning
    bad = _write(tmp_path / "bad.csv", 'header line here x\na 0 zero a/a.jpg ""\n')
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        read_frame_lists([bad])


# ----------------------------------------------------------------------------------------------- range, subset


def test_a_class_subset_maps_its_actions_to_its_outputs_and_counts_the_others(tmp_path, caplog):
    """Actions of the subset go to its outputs (in id order); rows of other actions are counted in one warning,
    their boxes kept as persons doing none of the subset's actions."""
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.2,0.5,0.9,12,0\nv,0902,0.1,0.2,0.5,0.9,3,0\n"
                                     "v,0902,0.6,0.2,0.9,0.9,1,1\nv,0903,0.1,0.1,0.2,0.2,80,0\n"
                                     "v,0903,0.3,0.1,0.4,0.2,12,1\n")
    subset = ActionClasses((3, 12), "AVA.CLASS_SUBSET sub.pbtxt", subset=True)
    keyframes = read_box_lists([gt], [], score_thresh=0.9, classes=subset)
    assert [(k.second, k.labels.tolist()) for k in keyframes] == [(902, [[1, 1], [0, 0]]), (903, [[0, 0], [0, 1]])]
    (warning,) = _warnings(caplog)
    assert warning == (f"{gt}: actions outside AVA.CLASS_SUBSET sub.pbtxt are left out (their boxes stay, as persons "
                       f"doing none of its actions): 2 rows: {gt}:3 (action 1), {gt}:4 (action 80)")


def test_a_custom_keyframe_range_and_class_subset_build_the_dataset(tmp_path, caplog):
    """A custom AVA-format dataset: keyframes at seconds 1-3 of uncut videos (AVA.FIRST_SECOND 0), of which
    AVA.KEYFRAME_RANGE keeps 1-2, and one of its classes ("sit", id 3) trained as AVA.CLASS_SUBSET."""
    opts = write_ava_dataset(str(tmp_path), "videos", num_train=2, num_val=1, seconds=(1, 2, 3), first_second=0)
    annotations = tmp_path / "annotations"
    cfg = data_cfg(opts, "AVA.KEYFRAME_RANGE", "[1, 2]", "AVA.CLASS_SUBSET", SIT_ONLY, "MODEL.NUM_CLASSES", "1")
    train = build_ava(cfg, "train")
    assert [(k.video_id, k.second) for k in train.keyframes] == [(f"train_{v}", s) for v in range(2) for s in (1, 2)]
    first = train.keyframes[0]  # two people and the box of action 5 (outside the label map and the subset)
    assert first.labels.shape == (3, 1) and sorted(first.labels[:, 0].tolist()) == [0, 0, 1]
    sitting = first.boxes[first.labels[:, 0] == 1][0]
    frames = AvaVideos.from_cfg(cfg, "train").read_keyframe("train_0", 1)  # second 1 is frame 30 of 0..119
    x1, y1, x2, y2 = (sitting * np.array([WIDTH, HEIGHT, WIDTH, HEIGHT])).round().astype(int)
    assert frames[y1 + 2:y2 - 2, x1 + 2:x2 - 2].float().mean((0, 1)).tolist() == pytest.approx([30, 30, 230], abs=12)
    assert train[SampleKey(0, 1)]["labels"].shape[1] == 1
    gt = annotations / "ava_train_v2.2.csv"
    subset_warning, range_warning = sorted(_warnings(caplog), key=lambda w: "KEYFRAME_RANGE" in w)
    assert range_warning.startswith(f"{gt}: rows outside AVA.KEYFRAME_RANGE [1, 2] are left out: 4 rows: {gt}:5 "
                                    "(second 3)")
    assert subset_warning.startswith(f"{gt}: actions outside AVA.CLASS_SUBSET {annotations / SIT_ONLY} are left out")
    assert ": 6 rows: " in subset_warning  # 2 videos x 2 seconds of "stand", and the 2 rows of action 5
    caplog.clear()
    test = build_ava(cfg, "test")
    assert [(k.video_id, k.second, len(k.boxes)) for k in test.keyframes] == [("val_0", 1, 2), ("val_0", 2, 2)]
    (warning,) = _warnings(caplog)
    assert "ava_val_predicted_boxes.csv: rows outside AVA.KEYFRAME_RANGE [1, 2] are left out: 3 rows" in warning


def test_class_subset_and_keyframe_range_errors_name_the_key(tmp_path):
    opts = write_ava_dataset(str(tmp_path), "frames", num_train=1, num_val=1)
    labelmap = tmp_path / "annotations" / "labelmap.pbtxt"
    with pytest.raises(ValueError, match=f"AVA.CLASS_SUBSET {labelmap} lists 2 classes but MODEL.NUM_CLASSES is 80: "
                                         "the model needs one output per class, set MODEL.NUM_CLASSES 2"):
        build_ava(data_cfg(opts, "AVA.CLASS_SUBSET", "labelmap.pbtxt"), "train")
    with pytest.raises(FileNotFoundError, match="AVA.CLASS_SUBSET: label map not found: .*nowhere.pbtxt"):
        build_ava(data_cfg(opts, "AVA.CLASS_SUBSET", "nowhere.pbtxt"), "train")
    with pytest.raises(ValueError, match=r"AVA.KEYFRAME_RANGE must be \[first, last\] .* got \[1798, 902\]"):
        build_ava(data_cfg(opts, "AVA.KEYFRAME_RANGE", "[1798, 902]"), "train")


def test_synthetic_ava_files_at_other_seconds_are_counted_by_range_and_class(tmp_path, caplog):
    """benchmarks/make_ava_synthetic.py at seconds 0..99 (a custom dataset's range): with that range and a
    10-class subset every keyframe is kept and every row is a label or counted; with AVA's default range every row
    is reported outside it."""
    subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "make_ava_synthetic.py"), str(tmp_path),
                    "--keyframes", "300", "--boxes", "1", "--classes-per-box", "1", "--first-second", "0",
                    "--seconds-per-video", "100"], check=True, capture_output=True)
    gt = str(tmp_path / "groundtruth.csv")
    rows = [line.split(",") for line in (tmp_path / "groundtruth.csv").read_text().splitlines()]
    assert {int(row[1]) for row in rows} == set(range(100)) and len({row[0] for row in rows}) == 3
    ids = tuple(sorted(entry["id"] for entry in read_labelmap(str(tmp_path / "labelmap.pbtxt"))[:10]))
    subset = ActionClasses(ids, "a 10-class subset", subset=True)
    keyframes = read_box_lists([gt], [], 0.9, subset, seconds=(0, 99))
    assert len(keyframes) == 300  # every keyframe, also those whose people do none of the 10 actions
    in_subset = sum(int(row[6]) in ids for row in rows)
    assert sum(int(k.labels.sum()) for k in keyframes) == in_subset > 0
    (warning,) = _warnings(caplog)
    assert f"actions outside a 10-class subset are left out (their boxes stay, as persons doing none of its " \
           f"actions): {len(rows) - in_subset} rows: " in warning
    caplog.clear()
    assert read_box_lists([gt], [], 0.9, subset) == []
    (warning,) = _warnings(caplog)
    assert f"{gt}: rows outside AVA.KEYFRAME_RANGE [902, 1798] are left out: {len(rows)} rows: {gt}:1 " in warning


# ----------------------------------------------------------------------------------------------- timing


def test_clip_is_centred_on_the_keyframe_like_pyslowfast():
    # PySlowFast: range(c - L/2, c + L/2, rate) with c = (second - 900) * 30 and L = frames * rate.
    indices = keyframe_clip_indices(902, 900, 30.0, 27030, num_frames=8, sampling_rate=4, target_fps=30)
    assert indices.tolist() == list(range(60 - 16, 60 + 16, 4))
    # Near the start the clip is clamped; a 25 fps video samples the same instants in its own frames.
    assert keyframe_clip_indices(900.5, 900, 30.0, 100, 4, 10, 30).tolist() == [0, 5, 15, 25]
    assert keyframe_clip_indices(902, 900, 25.0, 1000, 4, 6, 30).tolist() == [40, 45, 50, 55]  # 1.6..2.2 s
    with pytest.raises(ValueError, match="outside the video.*FIRST_SECOND=900"):
        keyframe_clip_indices(1798, 900, 30.0, 1000, 4, 2, 30)


@pytest.mark.parametrize("layout", ["videos", "frames"])
def test_both_layouts_read_the_frames_around_the_keyframe(tmp_path, layout):
    frames = index_coded_frames(100, height=48, width=64)
    if layout == "videos":
        write_video(str(tmp_path / "vid.mp4"), frames)
        videos = AvaVideos(files={"vid": str(tmp_path / "vid.mp4")}, first_second=900, backend="pyav")
    else:
        names = write_frames(str(tmp_path), "vid", frames)
        videos = AvaVideos(frame_lists={"vid": np.array([n.encode() for n in names])}, frame_dir=str(tmp_path),
                           first_second=900, frame_rate=30)
    clip = videos.read_clip("vid", 902, num_frames=4, sampling_rate=3, target_fps=30)
    assert clip.shape == (4, 48, 64, 3)
    assert decode_frame_ids(clip).tolist() == [54, 57, 60, 63]
    assert decode_frame_ids(videos.read_keyframe("vid", 903)[None]).tolist() == [90]


# ----------------------------------------------------------------------------------------------- samples


def _bright_box_clip(box):
    """Frames of a black 64x96 video with a white rectangle exactly at normalised `box`."""
    frames = torch.zeros(4, HEIGHT, WIDTH, 3, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    frames[:, round(y1 * HEIGHT):round(y2 * HEIGHT), round(x1 * WIDTH):round(x2 * WIDTH)] = 255
    return frames


def test_training_boxes_follow_the_pixels_through_crop_and_flip(ava, monkeypatch):
    cfg = data_cfg(ava, "DATA.TRAIN_JITTER_SCALES", "[64, 128]")
    dataset = build_ava(cfg, "train")
    assert len(dataset) == 4 * 3 and dataset.keyframes[0].labels.shape == (3, 80)  # the 3rd box: class 5
    box = (0.3, 0.2, 0.7, 0.8)
    monkeypatch.setattr(dataset.videos, "read_clip", lambda *a, **k: _bright_box_clip(box))
    dataset.keyframes[0] = replace(dataset.keyframes[0], boxes=np.array([box], dtype=np.float32),
                                   labels=dataset.keyframes[0].labels[:1])
    flips = set()
    for seed in range(12):
        sample = dataset[SampleKey(0, seed)]
        video, boxes = sample["video"], sample["boxes"]
        assert video.shape == (3, 4, 64, 64) and boxes.shape == (1, 4)
        bright = video[0, 0] > 0  # normalised white is positive, black negative
        rows, cols = torch.nonzero(bright, as_tuple=True)
        x1, y1, x2, y2 = boxes[0].tolist()
        assert abs(cols.min().item() - x1) <= 2 and abs(cols.max().item() + 1 - x2) <= 2
        assert abs(rows.min().item() - y1) <= 2 and abs(rows.max().item() + 1 - y2) <= 2
        assert sample["source_boxes"].numpy() == pytest.approx(np.array([box]))
        flips.add(round(x1 + x2))  # the box's centre moves with the crop and the flip
    assert len(flips) > 2


def test_crops_drop_boxes_they_empty_and_keep_labels_aligned(ava, monkeypatch):
    cfg = data_cfg(ava, "DATA.TRAIN_JITTER_SCALES", "[128, 128]", "DATA.RANDOM_FLIP", "False")
    dataset = build_ava(cfg, "train")
    inside, edge = (0.35, 0.3, 0.65, 0.7), (0.0, 0.0, 0.05, 1.0)  # the edge box leaves most crops
    labels = np.zeros((2, 80), dtype=np.uint8)
    labels[0, 0], labels[1, 2] = 1, 1
    dataset.keyframes[0] = replace(dataset.keyframes[0], boxes=np.array([inside, edge], dtype=np.float32),
                                   labels=labels)
    monkeypatch.setattr(dataset.videos, "read_clip", lambda *a, **k: _bright_box_clip(inside))
    counts = set()
    for seed in range(10):
        sample = dataset[SampleKey(0, seed)]
        counts.add(len(sample["boxes"]))
        assert sample["labels"][0].nonzero().flatten().tolist() == [0]  # the inside box always stays first
        widths = sample["boxes"][:, 2] - sample["boxes"][:, 0]
        assert (widths >= 1).all()
    assert counts == {1, 2}


def test_samples_are_a_function_of_the_seed(ava):
    dataset = build_ava(data_cfg(ava, "AVA.BOX_JITTER", "0.1"), "train")
    a, b, c = dataset[SampleKey(3, 7)], dataset[SampleKey(3, 7)], dataset[SampleKey(3, 8)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["boxes"], c["boxes"])


def test_datasets_survive_pickling_for_spawned_workers(ava):
    # On CUDA the loader starts workers with "spawn", which pickles the dataset and its transforms.
    dataset = build_ava(data_cfg(ava), "train")
    copy = pickle.loads(pickle.dumps(dataset))
    a, b = dataset[SampleKey(2, 5)], copy[SampleKey(2, 5)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["boxes"], b["boxes"])


def test_box_jitter_moves_edges_within_bounds():
    rng = np.random.default_rng(0)
    boxes = np.array([[0.2, 0.2, 0.6, 0.8], [0.0, 0.5, 0.1, 1.0]], dtype=np.float32)
    assert jitter_boxes(boxes, 0.0, rng) is boxes
    moved = jitter_boxes(boxes, 0.1, rng)
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    assert not np.allclose(moved, boxes) and (np.abs(moved - boxes) <= 0.1 * size + 1e-6).all()
    assert (moved >= 0).all() and (moved <= 1).all() and (moved[:, :2] <= moved[:, 2:]).all()


def test_evaluation_keeps_every_detected_box_and_its_original_coordinates(ava):
    cfg = data_cfg(ava)
    test = build_dataset(cfg, "test")
    val = build_ava(cfg, "val")
    assert len(test) == 2 * 3 and [k.second for k in val.keyframes] == [904, 904]  # every 4th second
    full = build_ava(data_cfg(ava, "AVA.FULL_TEST_ON_VAL", "True"), "val")
    assert len(full) == 6
    sample = test[0]
    keyframe = test.keyframes[0]
    assert len(keyframe.boxes) == 2  # the 0.3-score detection is below AVA.DETECTION_SCORE_THRESH
    assert sample["video"].shape == (3, 4, 64, 64)
    assert torch.equal(sample["source_boxes"], torch.from_numpy(keyframe.boxes))
    # Short side 64 -> 96x64 stays, the centre 64 columns are kept: x shifts by 16 px and is clamped.
    expected = keyframe.boxes * np.array([96, 64, 96, 64]) - np.array([16, 0, 16, 0])
    assert sample["boxes"].numpy() == pytest.approx(np.clip(expected, 0, 64), abs=1e-4)
    assert sample["metadata"] == (keyframe.video_id, keyframe.second)


def test_batches_concatenate_boxes_with_their_sample_index(ava):
    dataset = build_ava(data_cfg(ava), "test")
    batch = collate_detection([dataset[0], dataset[3], dataset[1]])
    assert batch["video"].shape == (3, 3, 4, 64, 64)
    assert batch["boxes"].shape == (6, 4) and batch["box_batch_idx"].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch["index"].tolist() == [0, 3, 1] and batch["labels"].shape == (6, 80)
    assert batch["metadata"][1] == (dataset.keyframes[3].video_id, dataset.keyframes[3].second)


# ----------------------------------------------------------------------------------------------- bad input


def test_layout_must_be_exactly_one_of_videos_and_frames(ava):
    with pytest.raises(ValueError, match="exactly one of AVA.VIDEO_DIR"):
        build_ava(data_cfg(ava, "AVA.VIDEO_DIR", "", "AVA.FRAME_DIR", ""), "train")


def test_unreadable_keyframes_are_reported_replaced_in_training_and_empty_in_evaluation(tmp_path):
    opts = write_ava_dataset(str(tmp_path), "videos", num_train=2, num_val=2)
    open(tmp_path / "videos" / "train_0.mp4", "wb").close()  # an empty file
    (tmp_path / "videos" / "val_0.mp4").write_bytes(b"not a video")
    train = build_ava(data_cfg(opts), "train")
    for index in range(3):  # the keyframes of train_0
        sample = train[SampleKey(index, 0)]
        assert sample["bad_files"][0].video_id == "train_0" and sample["metadata"][0] == "train_1"
    test = build_ava(data_cfg(opts), "test")
    sample = test[0]
    assert sample["metadata"] == ("val_0", 902) and len(sample["boxes"]) == 0
    assert sample["bad_files"][0][:2] == ("val_0", 902)


def test_keyframe_past_the_end_of_a_video_is_a_bad_file(tmp_path):
    opts = write_ava_dataset(str(tmp_path), "videos", num_train=1, num_val=1)
    sample = build_ava(data_cfg(opts, "AVA.FIRST_SECOND", "898"), "test")[2]  # 904 s = frame 180 of 120
    (failure,) = sample["bad_files"]
    assert "outside the video" in failure.error and "FIRST_SECOND=898" in failure.error


def test_videos_missing_from_the_layout_are_left_out_of_training_and_bad_in_evaluation(tmp_path, caplog):
    opts = write_ava_dataset(str(tmp_path), "videos", num_train=2, num_val=2)
    os.remove(tmp_path / "videos" / "train_1.mp4")
    os.remove(tmp_path / "videos" / "val_1.mp4")
    dataset = build_ava(data_cfg(opts), "train")
    assert {k.video_id for k in dataset.keyframes} == {"train_0"}
    assert "1 videos of the box lists (3 keyframes)" in caplog.text and "train_1" in caplog.text
    test = build_ava(data_cfg(opts), "test")
    assert len(test) == 6 and "counted as bad videos: val_1" in caplog.text
    sample = test[3]
    assert sample["metadata"] == ("val_1", 902) and len(sample["boxes"]) == 0
    assert sample["bad_files"] == [KeyframeFailure("val_1", 902, "cannot decode video 'val_1': no file for this "
                                                   "video in AVA.VIDEO_DIR")]
    assert str(sample["bad_files"][0]).startswith("val_1 at 902 s: cannot decode video")


def _frame_path(root, video_id, frame_index):
    return os.path.join(root, "frames", video_id, f"{video_id}_{frame_index + 1:06d}.jpg")


def test_missing_frames_skip_only_the_keyframes_that_need_them(tmp_path):
    """A deleted JPEG or a gap in the frame list makes the keyframes whose clips need that frame bad: training
    replaces them, evaluation keeps them without boxes; the other keyframes of the video are read as usual."""
    opts = write_ava_dataset(str(tmp_path), "frames", num_train=2, num_val=1)
    # 4 frames 2 apart around frame (second - 901) * 30: second 903 needs frames 56, 58, 60 and 62.
    os.remove(_frame_path(tmp_path, "train_0", 58))
    val_list = tmp_path / "frame_lists" / "val.csv"
    val_list.write_text("".join(line for line in val_list.read_text().splitlines(keepends=True)
                                if not line.startswith("val_0 0 60 ")))
    train = build_ava(data_cfg(opts), "train")
    assert [(k.video_id, k.second) for k in train.keyframes[:3]] == [("train_0", s) for s in SECONDS]
    bad = train[SampleKey(1, 0)]
    (failure,) = bad["bad_files"]
    assert failure[:2] == ("train_0", 903) and "train_0_000059.jpg" in failure.error
    assert bad["index"] != 1 and len(bad["boxes"])
    assert train[SampleKey(0, 0)]["bad_files"] == [] and train[SampleKey(2, 0)]["bad_files"] == []
    test = build_ava(data_cfg(opts), "test")
    gap = test[1]
    assert gap["metadata"] == ("val_0", 903) and len(gap["boxes"]) == 0
    assert "frames [60] of the clip around second 903 are missing from the frame list" in gap["bad_files"][0].error
    assert test[0]["bad_files"] == [] and len(test[0]["boxes"]) == 2 and test[2]["bad_files"] == []
