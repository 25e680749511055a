"""Something-Something v2: release layout of real VP9 webm files, PySlowFast frame lists, segment sampling,
flip with left/right label swap, bad annotations, and fine-tuning with the shipped recipe end to end."""
from __future__ import annotations

import json
import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from hiera_video.cli.analyze_predictions import main as analyze_predictions
from hiera_video.config import load_config
from hiera_video.data.loader import SampleKey
from hiera_video.data.ssv2 import build_ssv2, mirror_labels
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.runner import run
from hiera_video.models.build import build_model
from video_factory import decode_frame_ids, make_frame_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SSV2_CFG = os.path.join(REPO, "configs", "SSv2", "HIERA_B_16x224.yaml")

# A label file in the release's format (ids as strings) with real SSv2 templates. Class 4 names a direction but its
# mirrored template ("Turning the camera right ...") is absent, so it must never be flipped.
CLASSES = {
    "Pushing something from left to right": "0",
    "Pushing something from right to left": "1",
    "Moving something up": "2",
    "Moving something down": "3",
    "Turning the camera left while filming something": "4",
}
TEMPLATES = {  # the bracketed form used by the train/validation json
    0: "Pushing [something] from left to right",
    1: "Pushing [something] from right to left",
    2: "Moving [something] up",
    3: "Moving [something] down",
    4: "Turning the camera left while filming [something]",
}
MOTION = {0: (1, 0), 1: (-1, 0), 2: (0, -1), 3: (0, 1), 4: (1, 0)}  # (dx, dy) of the object on screen
SIZE, NUM_FRAMES, FPS = 32, 24, 12  # real SSv2: 12 fps webm, 240 pixels high
SQUARE, SPEED = 8, 0.75


def moving_square(rng, direction, num_frames=NUM_FRAMES, size=SIZE):
    """uint8 [T, size, size, 3]: a bright square sliding along `direction` over a dark noisy background. Its start
    is random, so only the motion over time tells the class."""
    travel = SPEED * (num_frames - 1)
    free = size - SQUARE
    start = [rng.uniform(0, free - travel) if d > 0 else rng.uniform(travel, free) if d < 0 else rng.uniform(0, free)
             for d in direction]
    frames = rng.integers(0, 60, (num_frames, size, size, 3)).astype(np.uint8)
    colour = rng.integers(170, 256, 3)
    for t in range(num_frames):
        x, y = (int(round(s + SPEED * t * d)) for s, d in zip(start, direction))
        frames[t, y:y + SQUARE, x:x + SQUARE] = colour
    return frames


def write_webm(path, frames, fps=FPS):
    """A VP9 webm file, as the SSv2 release ships them."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "20", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def entry(video_id, label):
    template = TEMPLATES[label]
    return {"id": str(video_id), "label": template.replace("[something]", "a pen").lower(), "template": template,
            "placeholders": ["a pen"]}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def write_release(root, train_per_class=3, val_per_class=1):
    """The release layout: three json files in `root`, `<id>.webm` videos in `root`/videos."""
    videos = os.path.join(root, "videos")
    os.makedirs(videos, exist_ok=True)
    write_json(os.path.join(root, "something-something-v2-labels.json"), CLASSES)
    splits = {"train": [], "validation": []}
    video_id = 1000
    for split, per_class in (("train", train_per_class), ("validation", val_per_class)):
        for label in range(4):
            for _ in range(per_class):
                video_id += 1
                rng = np.random.default_rng(video_id)
                write_webm(os.path.join(videos, f"{video_id}.webm"), moving_square(rng, MOTION[label]))
                splits[split].append(entry(video_id, label))
    for split, entries in splits.items():
        write_json(os.path.join(root, f"something-something-v2-{split}.json"), entries)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(str(tmp_path_factory.mktemp("ssv2")))


def copy_release(release, target, **replace):
    """The release's json files in `target`, its videos linked there, with json files replaced by `replace`."""
    for name in os.listdir(release):
        if name.endswith(".json"):
            (target / name).write_text(open(os.path.join(release, name)).read())
    if not (target / "videos").exists():
        (target / "videos").symlink_to(os.path.join(release, "videos"))
    for name, text in replace.items():
        (target / f"something-something-v2-{name}.json").write_text(text)
    return target


def small_cfg(root, *opts):
    """The shipped Hiera-B SSv2 recipe, shrunk to 32x32 clips of 4 segments, a 3-stage 16-channel Hiera, one
    process on the CPU, and no pretrained weights."""
    base = ["NUM_GPUS", "0", "MODEL.NUM_CLASSES", "5", "DATA.PATH_TO_DATA_DIR", str(root), "DATA.PATH_PREFIX",
            os.path.join(str(root), "videos"), "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
            "DATA.TEST_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "HIERA.STAGES", "[1, 1, 1]",
            "HIERA.EMBED_DIM", "16", "HIERA.NUM_HEADS", "1", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "2",
            "SOLVER.BASE_LR_BATCH", "4", "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0",
            "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.CHECKPOINT_FILE_PATH", "", "LOG_PERIOD", "1"]
    return load_config(SSV2_CFG, base + list(opts))


def exact_cfg(root, *opts):
    """small_cfg whose training transform keeps the whole frame (no crop jitter, RandAugment or erasing)."""
    return small_cfg(root, "AUG.ENABLE", "False", "DATA.TRAIN_JITTER_SCALES", "[32, 32]", *opts)


def horizontal_motion(clip):
    """Mean x displacement per frame of the bright square in a normalised clip [C, T, H, W]."""
    brightness = clip.mean(0)
    weights = (brightness > brightness.flatten(1).quantile(0.9, dim=1)[:, None, None]).float()
    xs = (weights.sum(1) * torch.arange(clip.shape[-1])).sum(-1) / weights.sum((1, 2))
    return float((xs[-1] - xs[0]) / (clip.shape[1] - 1))


# ------------------------------------------------------------------------------------------------ release layout
def test_release_layout_labels_come_from_templates_and_val_and_test_read_validation(release):
    cfg = small_cfg(release)
    train = build_ssv2(cfg, "train")
    assert len(train) == 12
    assert [r.label for r in train.records] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert train.records[0].video_id == "1001"
    assert train.records[0].source == os.path.join(release, "videos", "1001.webm")
    for split in ("val", "test"):
        dataset = build_ssv2(cfg, split)
        assert [r.video_id for r in dataset.records] == ["1013", "1014", "1015", "1016"]
        assert [r.label for r in dataset.records] == [0, 1, 2, 3]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_webm_views_have_the_configured_shapes(release, backend):
    cfg = small_cfg(release, "AUG.NUM_SAMPLE", "2", "DATA.DECODING_BACKEND", backend)
    sample = build_ssv2(cfg, "train")[SampleKey(0, 7)]
    assert sample["video"].shape == (2, 3, 4, 32, 32) and sample["label"] == 0 and sample["bad_files"] == []
    sample = build_ssv2(cfg, "val")[0]
    assert sample["video"].shape == (1, 3, 4, 32, 32)
    sample = build_ssv2(cfg, "test")[0]  # the recipe's 2 temporal x 3 spatial views
    assert sample["video"].shape == (6, 3, 4, 32, 32) and sample["view"].tolist() == list(range(6))


# ------------------------------------------------------------------------------------------------ frame lists
@pytest.fixture(scope="module")
def frame_layout(tmp_path_factory):
    """PySlowFast layout: the json files plus {train,val}.csv frame lists of index-coded PNG frames (lossless, so
    the test reads back exactly which frames were sampled). Entry 3 has no frames in the list."""
    root = tmp_path_factory.mktemp("ssv2_frames")
    write_json(root / "something-something-v2-labels.json", CLASSES)
    write_json(root / "something-something-v2-train.json", [entry(1, 0), entry(2, 2), entry(3, 1)])
    write_json(root / "something-something-v2-validation.json", [entry(2, 2)])
    frames = {"1": make_frame_folder(str(root / "frames" / "1"), 20, "1_{:06d}.png"),
              "2": make_frame_folder(str(root / "frames" / "2"), 20, "2_{:06d}.png")}
    header = "original_vido_id video_id frame_id path labels\n"
    rows = [f"{vid} {k} {i} {os.path.relpath(p, root / 'frames')} \"\"\n"
            for k, (vid, paths) in enumerate(frames.items()) for i, p in enumerate(paths)]
    (root / "train.csv").write_text(header + "".join(rows))
    (root / "val.csv").write_text(header + "".join(r for r in rows if r.startswith("2 ")))
    return root


def frames_cfg(root, *opts):
    return exact_cfg(root, "SSV2.LAYOUT", "frames", "DATA.PATH_PREFIX", str(root / "frames"),
                     "DATA.MAX_BAD_FRACTION", "0.5", "DATA.MEAN", "[0.0, 0.0, 0.0]", "DATA.STD", "[1.0, 1.0, 1.0]",
                     *opts)


def sampled_frame_ids(clip):
    """Source frame indices of a clip [C, T, H, W] normalised with mean 0, std 1 (index-coded frames)."""
    return decode_frame_ids((clip.permute(1, 2, 3, 0) * 255).round().clamp(0, 255).to(torch.uint8)).tolist()


def test_frame_lists_sample_one_frame_per_segment(frame_layout):
    # 20 frames in 4 segments (PySlowFast rounding): [0, 5], [5, 10], [10, 14], [14, 19].
    cfg = frames_cfg(frame_layout, "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3")
    val = build_ssv2(cfg, "val")[0]
    assert val["label"] == 2 and sampled_frame_ids(val["video"][0]) == [2, 7, 12, 16]  # segment middles
    test = build_ssv2(cfg, "test")[0]["video"]
    views = [sampled_frame_ids(clip) for clip in test]  # view-major: 3 crops of temporal view 0, then view 1
    assert views == [[1, 6, 11, 15]] * 3 + [[3, 8, 13, 17]] * 3
    train = build_ssv2(cfg, "train")
    draws = np.array([sampled_frame_ids(train[SampleKey(0, seed)]["video"][0]) for seed in range(40)])
    low, high = np.array([0, 5, 10, 14]), np.array([5, 10, 14, 19])
    assert ((draws >= low) & (draws <= high)).all()
    assert all(len(set(draws[:, k])) > 2 for k in range(4))  # random inside each segment
    assert sampled_frame_ids(train[SampleKey(0, 3)]["video"][0]) == draws[3].tolist()  # seeded by the key


def test_entry_missing_from_the_frame_list_is_skipped_and_named(frame_layout, caplog):
    with caplog.at_level(logging.WARNING):
        train = build_ssv2(frames_cfg(frame_layout), "train")
    assert "1 of 3 entries" in caplog.text and "ids 3" in caplog.text
    sample = train[SampleKey(2, 0)]
    assert sample["index"] != 2 and sample["bad_files"]  # replaced by a healthy video (the draw may repeat it)
    assert all(bad.startswith("3: ") and "no frames in the frame list" in bad for bad in sample["bad_files"])


def test_frame_list_with_a_wrong_header_fails_with_the_file(frame_layout, tmp_path):
    for name in os.listdir(frame_layout):
        if name.endswith(".json"):
            (tmp_path / name).write_text((frame_layout / name).read_text())
    (tmp_path / "frames").mkdir()
    (tmp_path / "train.csv").write_text("video frame path\n1 0 a.png\n")
    with pytest.raises(ValueError, match=r"train\.csv:1: expected the header"):
        build_ssv2(frames_cfg(tmp_path), "train")


# ------------------------------------------------------------------------------------------------ flip and swap
def test_mirror_pairs_come_from_the_label_file():
    classes = {"Pushing something from left to right": 0, "Pushing something from right to left": 1,
               "Pulling something from left to right": 2, "Pulling something from right to left": 3,
               "Turning the camera left while filming something": 4,
               "Turning the camera right while filming something": 5,
               "Putting something upright on the table": 6, "Moving something up": 7}
    mirror = mirror_labels(classes)
    assert mirror.twin == {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4} and not mirror.unflippable
    assert mirror.flipped_label(6) == 6 and mirror.flipped_label(7) == 7  # "upright" is not "right"
    del classes["Pushing something from right to left"]
    mirror = mirror_labels(classes)
    assert mirror.unflippable == {0} and mirror.flipped_label(0) is None and 1 not in mirror.twin


def test_flip_swap_flips_pixels_and_label_together(release):
    plain = build_ssv2(exact_cfg(release), "train")
    flipping = build_ssv2(exact_cfg(release, "AUG.SSV2_FLIP_SWAP", "True"), "train")
    flips = {0: 0, 2: 0}
    for index, label in ((0, 0), (6, 2)):  # "left to right", "up"
        for seed in range(16):
            reference, sample = plain[SampleKey(index, seed)], flipping[SampleKey(index, seed)]
            again = flipping[SampleKey(index, seed)]  # the flip is decided by the sample's seed
            assert again["label"] == sample["label"] and torch.equal(again["video"], sample["video"])
            assert reference["label"] == label and horizontal_motion(reference["video"][0]) * MOTION[label][0] >= 0
            if torch.equal(sample["video"], reference["video"]):
                assert sample["label"] == label
                continue
            flips[label] += 1
            assert torch.equal(sample["video"], reference["video"].flip(-1))
            if label == 0:  # the square now moves right to left, and the label says so
                assert horizontal_motion(sample["video"][0]) < -0.3
                assert sample["label"] == 1
            else:
                assert sample["label"] == 2
    assert 3 <= flips[0] <= 13 and 3 <= flips[2] <= 13


def test_directional_class_without_a_mirrored_twin_is_never_flipped(release, tmp_path):
    copy_release(release, tmp_path, train=json.dumps([entry(1001, 4)]))  # reuses a right-moving video
    plain = build_ssv2(exact_cfg(tmp_path), "train")
    flipping = build_ssv2(exact_cfg(tmp_path, "AUG.SSV2_FLIP_SWAP", "True"), "train")
    for seed in range(12):
        sample = flipping[SampleKey(0, seed)]
        assert sample["label"] == 4 and torch.equal(sample["video"], plain[SampleKey(0, seed)]["video"])


def test_no_plain_flip_even_when_data_random_flip_is_on(release, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = build_ssv2(exact_cfg(release, "DATA.RANDOM_FLIP", "True"), "train")
    assert "DATA.RANDOM_FLIP is ignored" in caplog.text
    assert all(horizontal_motion(dataset[SampleKey(0, seed)]["video"][0]) > 0.3 for seed in range(10))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("labels, message", [
    ("[\"Moving something up\"]", "expected a non-empty JSON object"),
    ("{\"Moving something up\": 2,", "not valid JSON"),
    ("{\"Moving something up\": \"two\"}", "class id of 'Moving something up' must be an integer"),
    ("{\"Moving something up\": 9}", r"class id 9 .* outside \[0, MODEL.NUM_CLASSES=5\)"),
    ("{\"Moving something up\": 1, \"Moving something down\": \"1\"}", "class id 1 is used by both"),
])
def test_label_file_in_the_wrong_format_fails_with_its_name(release, tmp_path, labels, message):
    copy_release(release, tmp_path, labels=labels)
    with pytest.raises(ValueError, match=message) as error:
        build_ssv2(small_cfg(tmp_path), "train")
    assert "something-something-v2-labels.json" in str(error.value)


def test_split_file_in_the_wrong_format_fails_with_its_name_and_entry(release, tmp_path):
    copy_release(release, tmp_path, train=json.dumps([entry(1001, 0), {"id": "7", "label": "x"}]))
    with pytest.raises(ValueError, match=r"something-something-v2-train\.json: entry 1 must be an object"):
        build_ssv2(small_cfg(tmp_path), "train")
    copy_release(release, tmp_path, train=json.dumps({"1001": "x"}))
    with pytest.raises(ValueError, match=r"something-something-v2-train\.json: expected a JSON list"):
        build_ssv2(small_cfg(tmp_path), "train")


def test_unknown_template_and_missing_video_are_skipped_named_and_counted(release, tmp_path, caplog):
    entries = json.load(open(os.path.join(release, "something-something-v2-train.json")))
    entries.append({"id": "77", "label": "x", "template": "Juggling [something]", "placeholders": ["x"]})
    entries.append(entry(88, 1))  # no 88.webm
    copy_release(release, tmp_path, train=json.dumps(entries))
    opts = ["DATA.MAX_BAD_FRACTION", "0.2"]
    with caplog.at_level(logging.WARNING):
        train = build_ssv2(small_cfg(tmp_path, *opts), "train")
    assert "1 of 14 entries" in caplog.text and "ids 77" in caplog.text
    unknown, missing = train[SampleKey(12, 0)], train[SampleKey(13, 0)]
    assert unknown["bad_files"][0].startswith("77: ") and "'Juggling [something]' is not a class" in \
        unknown["bad_files"][0]
    assert missing["bad_files"][0].startswith("88: ") and "88.webm" in missing["bad_files"][0]
    assert "file not found" in missing["bad_files"][0]
    for sample in (unknown, missing):  # replaced by a healthy video
        assert sample["index"] < 12 and sample["video"].shape == (1, 3, 4, 32, 32)
    with pytest.raises(RuntimeError, match="more than DATA.MAX_BAD_FRACTION=0.05"):
        build_ssv2(small_cfg(tmp_path, *opts, "DATA.MAX_BAD_FRACTION", "0.05"), "train")


def test_unknown_layout_or_missing_video_folder_is_refused(release):
    with pytest.raises(ValueError, match="SSV2.LAYOUT must be one of videos, frames; got 'jpg'"):
        build_ssv2(small_cfg(release, "SSV2.LAYOUT", "jpg"), "train")
    with pytest.raises(FileNotFoundError, match=r"DATA.PATH_PREFIX '/nonexistent' is not a folder; .*<id>\.webm"):
        build_ssv2(small_cfg(release, "DATA.PATH_PREFIX", "/nonexistent"), "train")



# ------------------------------------------------------------------------------------------------ end to end
def test_fine_tunes_from_an_mae_checkpoint_and_runs_the_multi_view_test(release, tmp_path, single_process):
    mae_cfg = small_cfg(release, "TASK", "mae", "MODEL.ARCH", "mae_hiera_base_16x224", "MAE.DECODER_EMBED_DIM", "16",
                        "MAE.DECODER_DEPTH", "1", "MAE.DECODER_NUM_HEADS", "1")
    torch.save({"model_state": build_model(mae_cfg).state_dict()}, tmp_path / "mae.pth")
    output = tmp_path / "run"
    cfg = small_cfg(release, "OUTPUT_DIR", str(output), "TRAIN.CHECKPOINT_FILE_PATH", str(tmp_path / "mae.pth"),
                    "AUG.SSV2_FLIP_SWAP", "True")
    assert cfg.SOLVER.OPTIMIZING_METHOD == "sgd" and cfg.MIXUP.ENABLE and cfg.AUG.ENABLE  # the recipe, shrunk
    results = run(single_process, cfg)
    assert f"Initialised from {tmp_path / 'mae.pth'}: loaded" in (output / "stdout.log").read_text()
    stats = read_json_stats(str(output / "json_stats.log"))
    losses = [s["loss"] for s in stats if s.get("_type") == "train_iter"]
    assert len(losses) == 6 and all(np.isfinite(losses))  # 12 videos / 4 per step x 2 epochs
    assert [s["bad_videos"] for s in stats if s.get("_type") == "train_epoch"] == [0, 0]
    assert results["num_videos"] == 4 and results["videos_with_missing_views"] == 0
    rows = (output / "test_predictions.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[0] for row in rows) == ["1013", "1014", "1015", "1016"]  # the validation ids
    assert all(row.endswith(",6") for row in rows)  # 2 temporal x 3 spatial views each
    # Class names from the labels json; the left/right twins of the flip-swap pairing in the analysis.
    with np.load(output / "test_scores.npz", allow_pickle=False) as scores:
        assert scores["class_names"].tolist() == list(CLASSES) and str(scores["dataset"]) == "ssv2"
    assert rows[0].split(",")[2] == list(CLASSES)[int(rows[0].split(",")[1])]
    assert analyze_predictions([str(output / "test_scores.npz"), "--out", str(tmp_path / "analysis")]) == 0
    twins = (tmp_path / "analysis" / "twin_confusions.csv").read_text().splitlines()[1:]
    assert len(twins) == 1 and twins[0].startswith("0,Pushing something from left to right,1,"
                                                   "Pushing something from right to left,1,")
