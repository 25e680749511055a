"""The demo dataset: real mp4 files in Kinetics CSV format, classes told apart only by motion."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hiera_video.data import demo
from hiera_video.data.demo import CLASS_NAMES, write_demo_dataset
from hiera_video.data.video_io import open_video

SMALL = dict(train_per_class=2, val_per_class=1, test_per_class=1, num_frames=12, size=32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The default demo dataset, as the quick start writes it."""
    return write_demo_dataset(str(tmp_path_factory.mktemp("demo") / "data"))


def read_csv(path):
    rows = [line.rstrip("\n").split(" ") for line in open(path)]
    assert all(len(row) == 2 for row in rows), f"{path}: every line must be '<path> <label>'"
    return [(relative, int(label)) for relative, label in rows]


FIRST, LATER, MIDDLE = 10, 22, 24  # frames used below; 12 frames apart the texture moved by 6 to 12 px


@pytest.fixture(scope="module")
def clips(dataset):
    """Frames FIRST, LATER and MIDDLE of every video in the dataset: (uint8 [3, H, W, 3], label)."""
    info = dataset
    out = []
    for split in ("train", "val", "test"):
        for relative, label in read_csv(info["csv"][split]):
            with open_video(os.path.join(info["path_prefix"], relative)) as reader:
                out.append((reader.get_frames([FIRST, LATER, MIDDLE]).numpy(), label))
    return out


@pytest.mark.slow
def test_default_dataset_is_small(dataset):
    info = dataset
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(info["root"]) for f in files)
    assert total < 2_000_000
    assert info["class_names"] == list(CLASS_NAMES[:4]) == ["left", "right", "up", "down"] and info["num_classes"] == 4
    assert info["num_videos"] == {"train": 128, "val": 32, "test": 40}
    assert (info["num_frames"], info["size"], info["fps"]) == (48, 64, 30)


@pytest.mark.slow
def test_csvs_list_balanced_existing_videos(dataset):
    info = dataset
    seen = set()
    for split, count in info["num_videos"].items():
        rows = read_csv(info["csv"][split])
        assert len(rows) == count
        assert np.bincount([label for _, label in rows]).tolist() == [count // 4] * 4
        for relative, _ in rows:
            assert not os.path.isabs(relative) and os.path.isfile(os.path.join(info["path_prefix"], relative))
        assert seen.isdisjoint(r for r, _ in rows)
        seen.update(r for r, _ in rows)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_videos_are_real_h264_mp4_files(dataset, backend):
    info = dataset
    relative, _ = read_csv(info["csv"]["test"])[-1]
    with open_video(os.path.join(info["root"], relative), backend) as reader:
        assert (reader.num_frames, reader.fps, reader.height, reader.width) == (48, 30.0, 64, 64)
        frames = reader.get_frames([0, 47])
    assert frames.float().std() > 20  # a visible texture, not a flat frame
    with open(os.path.join(info["root"], relative), "rb") as f:
        assert b"ftyp" in f.read(16)


def nearest_centroid_accuracy(features, labels, num_classes=4):
    """Leave-one-out accuracy of a nearest-class-mean classifier on standardised features."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-9)
    correct = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        centroids = np.stack([features[keep & (labels == c)].mean(0) for c in range(num_classes)])
        correct += np.argmin(((centroids - features[i]) ** 2).sum(1)) == labels[i]
    return correct / len(labels)


def frame_statistics(frame):
    """Colour means and spreads, and horizontal vs vertical detail, of one frame."""
    gray = frame.astype(float).mean(-1)
    return np.concatenate([
        frame.reshape(-1, 3).mean(0),
        frame.reshape(-1, 3).std(0),
        [np.abs(np.diff(gray, axis=1)).mean(), np.abs(np.diff(gray, axis=0)).mean()],
    ])


def best_direction(first, later, max_shift=16):
    """The class whose displacement (one axis, 1..max_shift px) best maps `first` onto `later`."""
    a, b = first.astype(float).mean(-1), later.astype(float).mean(-1)
    errors = {}
    for name, (dx, dy) in demo.DIRECTIONS.items():
        for d in range(1, max_shift + 1):
            sx, sy = dx * d, dy * d  # content moved by (sx, sy): later[y + sy, x + sx] == first[y, x]
            h, w = a.shape
            src = a[max(0, -sy): h - max(0, sy), max(0, -sx): w - max(0, sx)]
            dst = b[max(0, sy): h - max(0, -sy), max(0, sx): w - max(0, -sx)]
            errors[(name, d)] = ((src - dst) ** 2).mean()
    (name, _), error = min(errors.items(), key=lambda item: item[1])
    return CLASS_NAMES.index(name), error


def test_a_single_frame_says_nothing_about_the_class(clips):
    labels = np.array([label for _, label in clips])
    features = np.stack([frame_statistics(frames[2]) for frames, _ in clips])
    assert nearest_centroid_accuracy(features, labels) < 0.4  # chance is 0.25


def test_motion_tells_the_class(clips):
    for frames, label in clips:
        direction, error = best_direction(frames[0], frames[1])
        assert direction == label
        still_error = ((frames[0].astype(float) - frames[1].astype(float)).mean(-1) ** 2).mean()
        assert error < still_error / 4


def test_writing_again_is_a_no_op(tmp_path):
    root = str(tmp_path / "demo")
    first = write_demo_dataset(root, **SMALL)
    video = os.path.join(root, read_csv(first["csv"]["train"])[0][0])
    stamp = os.stat(video).st_mtime_ns
    assert write_demo_dataset(root, **SMALL) == first
    assert os.stat(video).st_mtime_ns == stamp
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # no staging folder left behind
    with pytest.raises(FileExistsError, match="other parameters"):
        write_demo_dataset(root, **{**SMALL, "num_frames": 16})


def test_an_empty_folder_is_filled_and_a_foreign_one_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    info = write_demo_dataset(str(tmp_path / "empty"), num_classes=2, **SMALL)
    assert info["class_names"] == ["left", "right"] and len(read_csv(info["csv"]["train"])) == 4
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        write_demo_dataset(str(tmp_path / "mine"), **SMALL)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_a_concurrent_writer_of_the_same_dataset_wins_quietly(tmp_path, monkeypatch):
    root = str(tmp_path / "demo")
    write_all = demo._write_all

    def rival_finishes_first(folder, params):
        write_all(folder, params)
        monkeypatch.setattr(demo, "_write_all", write_all)
        write_demo_dataset(root, **SMALL)  # another rank completes the same dataset meanwhile

    monkeypatch.setattr(demo, "_write_all", rival_finishes_first)
    info = write_demo_dataset(root, **SMALL)
    assert len(read_csv(info["csv"]["test"])) == 4
    assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_bad_parameters_are_rejected(tmp_path):
    for bad in [dict(num_classes=9), dict(distractor=0.5), dict(num_classes=1), dict(size=33), dict(num_frames=1),
                dict(test_per_class=0), dict(pattern="stripes"), dict(noise=-1.0)]:
        with pytest.raises(ValueError):
            write_demo_dataset(str(tmp_path / "x"), **{**SMALL, **bad})


def plaid_videos(noise=0.0, per_class=4):
    """In-memory plaid videos of the 8 directions (16 frames, 64x64), as the dataset renders them: (frames, label)."""
    return [(demo.render_moving_texture(np.random.default_rng((7, label, i)), demo.DIRECTIONS[name], 16, 64,
                                        pattern="plaid", noise=noise), label)
            for label, name in enumerate(CLASS_NAMES) for i in range(per_class)]


def test_a_plaid_is_gray_one_frame_says_nothing_and_its_motion_tells_the_direction():
    videos = plaid_videos()
    assert all((frames[..., 0] == frames[..., 1]).all() and (frames[..., 0] == frames[..., 2]).all()
               for frames, _ in videos)
    labels = np.array([label for _, label in videos])
    features = np.stack([frame_statistics(frames[5]) for frames, _ in videos])
    assert nearest_centroid_accuracy(features, labels, num_classes=8) < 0.3  # chance is 0.125
    for frames, label in videos:  # 4 frames: 2 to 4 px along the direction, under half the 16 px wavelength
        assert best_direction(frames[0], frames[4], max_shift=5)[0] == label


def test_noise_adds_its_standard_deviation_to_every_pixel(tmp_path):
    clean, noisy = plaid_videos(per_class=1), plaid_videos(noise=60.0, per_class=1)
    difference = np.concatenate([n.astype(float) - c.astype(float) for (c, _), (n, _) in zip(clean, noisy)])
    assert 50 < difference.std() < 61  # 60, less what clipping to 0-255 takes
    info = write_demo_dataset(str(tmp_path / "plaid"), pattern="plaid", noise=60.0, **SMALL)
    assert demo.read_manifest(info["root"])["pattern"] == "plaid" and demo.read_manifest(info["root"])["noise"] == 60
