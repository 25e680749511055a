"""A classification test run on the demo videos writes names into test_predictions.csv, test_scores.npz with the
numbers its metrics use, and mean class accuracy in test_final; analyze_predictions turns the scores into per-class
accuracy, confusions, the confusion matrix and the left/right twin confusions. Every number is recomputed here
independently from the score file."""
from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hiera_video.cli.analyze_predictions import draw_confusion_matrix, main
from hiera_video.config import load_config
from hiera_video.data.class_names import shipped_class_names
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine import launch
from hiera_video.engine.checkpoint import find_latest_checkpoint
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.runner import launch as launch_run
from hiera_video.engine.runner import run
from hiera_video.evaluation.per_class import confusion_matrix, most_confused_classes
from hiera_video.utils.distributed import destroy_process_group

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")
NAMES = ["left", "right", "up", "down"]


def tiny_cfg(root, output_dir, *opts):
    """The demo config shrunk to 4-frame 32x32 clips, a 3-stage 16-channel Hiera and 3 epochs; 2 x 3 test views."""
    return load_config(DEMO_CFG, [
        "OUTPUT_DIR", str(output_dir), "DATA.PATH_TO_DATA_DIR", root, "DATA.PATH_PREFIX", root, "HIERA.STAGES",
        "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
        "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "8", "TEST.BATCH_SIZE", "4", "SOLVER.MAX_EPOCH", "3",
        "SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.BASE_LR_BATCH", "8", "DATA_LOADER.NUM_WORKERS", "0",
        "TRAIN.EVAL_PERIOD", "0", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3", *opts])


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo dataset: 4 classes, 16 training and 16 test videos."""
    root = str(tmp_path_factory.mktemp("data") / "motion")
    write_demo_dataset(root, num_classes=4, train_per_class=4, val_per_class=1, test_per_class=4, num_frames=16,
                       size=32)
    return root


@pytest.fixture(scope="module")
def tested(demo, tmp_path_factory):
    """A training and test run on the demo videos in one process: its output folder and test results."""
    output = tmp_path_factory.mktemp("run")
    ctx = launch.init_distributed(rank=0, world_size=1, use_cuda=False)
    try:
        results = run(ctx, tiny_cfg(demo, output))
    finally:
        destroy_process_group()
    return output, results


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(output):
    with np.load(output / "test_scores.npz", allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def test_predictions_carry_names_and_the_scores_are_the_numbers_of_the_metrics(tested):
    output, results = tested
    rows = read_csv(output / "test_predictions.csv")
    scores = load(output)
    assert len(rows) == 16 and scores["class_names"].tolist() == NAMES  # the demo's classes.txt
    for row in rows:
        predicted = [int(c) for c in row["pred_top5"].split()]
        assert row["label_name"] == NAMES[int(row["label"])] and row["video"].startswith(f"test/{row['label_name']}_")
        assert row["pred_names_top5"].split("|") == [NAMES[c] for c in predicted]
        assert row["num_views"] == "6"
    assert scores["video_ids"].tolist() == [row["video"] for row in rows]
    assert scores["labels"].tolist() == [int(row["label"]) for row in rows]
    assert scores["num_views"].tolist() == [6] * 16
    assert all(path.endswith(video) and os.path.isfile(path) for path, video in zip(scores["paths"],
                                                                                     scores["video_ids"]))
    assert (str(scores["dataset"]), str(scores["ensemble"])) == ("kinetics", "sum")
    matrix = scores["scores"]
    assert matrix.shape == (16, 4) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-5)  # the mean softmax over the views
    for row, video_scores in zip(rows, matrix):
        assert [int(c) for c in row["pred_top5"].split()] == np.argsort(-video_scores, kind="stable").tolist()
        assert row["score_top5"] == " ".join(f"{s:.5f}" for s in np.sort(video_scores)[::-1])
    # The reported metrics, recomputed from the score file.
    hits = matrix.argmax(1) == scores["labels"]
    per_class = [hits[scores["labels"] == c].mean() * 100 for c in range(4)]
    assert results["top1_acc"] == pytest.approx(100 * hits.mean())
    assert results["mean_class_acc"] == pytest.approx(np.mean(per_class))
    final = read_json_stats(str(output / "json_stats.log"))[-1]
    assert final["split"] == "test_final"
    assert final["top1_acc"] == pytest.approx(100 * hits.mean(), abs=1e-5)
    assert final["mean_class_acc"] == pytest.approx(np.mean(per_class), abs=1e-5)


def test_analysis_files_hold_the_per_class_numbers_of_the_score_file(tested, tmp_path, capsys):
    output, _ = tested
    assert main([str(output / "test_scores.npz"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    scores = load(output)
    labels, predicted = scores["labels"], scores["scores"].argmax(1)
    top5 = np.argsort(-scores["scores"], axis=1)[:, :5]
    per_class = read_csv(tmp_path / "per_class_accuracy.csv")
    assert [row["name"] for row in per_class] == NAMES
    for c, row in enumerate(per_class):
        mine = labels == c
        assert int(row["videos"]) == mine.sum() == 4
        assert int(row["top1_hits"]) == (predicted[mine] == c).sum()
        assert int(row["top5_hits"]) == (top5[mine] == c).any(1).sum()
        assert float(row["top1_acc"]) == pytest.approx(100 * (predicted[mine] == c).mean(), abs=0.005)
    errors = collections.Counter((int(t), int(p)) for t, p in zip(labels, predicted) if t != p)
    expected = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    confusions = read_csv(tmp_path / "confusions.csv")
    assert [((int(r["true"]), int(r["predicted"])), int(r["videos"])) for r in confusions] == expected
    assert all(r["true_name"] == NAMES[int(r["true"])] and r["predicted_name"] == NAMES[int(r["predicted"])]
               for r in confusions)
    assert [float(r["percent_of_true"]) for r in confusions] == [100 * n / 4 for _, n in expected]
    twins = read_csv(tmp_path / "twin_confusions.csv")  # left <-> right mirror each other; up/down have no twin
    assert [(r["name_a"], r["name_b"], int(r["a_as_b"]), int(r["b_as_a"])) for r in twins] == \
        [("left", "right", errors[(0, 1)], errors[(1, 0)])]
    summary = json.loads((tmp_path / "summary.json").read_text())
    class_top1 = [100 * (predicted[labels == c] == c).mean() for c in range(4)]
    assert summary["num_videos"] == 16 and summary["classes_with_videos"] == 4
    assert summary["top1_acc"] == pytest.approx(100 * (predicted == labels).mean())
    assert summary["mean_class_top1_acc"] == pytest.approx(np.mean(class_top1))
    assert summary["top1_errors"] == sum(errors.values()) and summary["twin_errors"] == errors[(0, 1)] + errors[(1, 0)]
    image = Image.open(tmp_path / "confusion_matrix.png")
    assert image.format == "PNG" and min(image.size) > 300
    assert f"Mean class accuracy: top-1 {np.mean(class_top1):.2f}%" in printed
    if expected:
        (true, pred), count = expected[0]
        assert f"  {NAMES[true]} -> {NAMES[pred]}: {count}" in printed


def test_hundreds_of_classes_show_the_most_confused_with_readable_labels():
    names = shipped_class_names("kinetics400")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(400), 3)
    predicted = labels.copy()
    confused = rng.choice(400, size=30, replace=False)  # the first video of 30 classes goes to the next class
    predicted[confused * 3] = (confused + 1) % 400
    matrix = confusion_matrix(labels, predicted, 400)
    shown = most_confused_classes(matrix, 60)
    assert set(shown) == set(confused) | set((confused + 1) % 400)
    fig = draw_confusion_matrix(matrix, names, shown)
    axis = fig.axes[0]
    assert [label.get_text() for label in axis.get_yticklabels()] == [
        names[c] if len(names[c]) <= 40 else names[c][:39] + "…" for c in shown]
    assert axis.get_title() == "Confusion matrix (60 most confused of 400 classes)"


def test_a_missing_or_foreign_file_exits_with_status_2(tmp_path, capsys):
    assert main([str(tmp_path / "test_scores.npz")]) == 2
    assert "Score file not found" in capsys.readouterr().err
    np.savez(tmp_path / "other.npz", scores=np.zeros((2, 2)))
    assert main([str(tmp_path / "other.npz")]) == 2
    assert "is not a test_scores.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_the_tool_runs_from_any_folder_and_writes_next_to_the_scores(tested, tmp_path):
    output, _ = tested
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "analyze_predictions.py"),
                          str(output / "test_scores.npz")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(output / "analysis")) == ["confusion_matrix.png", "confusions.csv",
                                                       "per_class_accuracy.csv", "summary.json",
                                                       "twin_confusions.csv"]
    assert out.stdout.splitlines()[0].startswith("16 videos of 4 classes (of 4): top-1 ")


@pytest.mark.slow
def test_two_processes_write_one_score_file_with_every_video(demo, tested, tmp_path):
    """Each rank tests half the videos; rank 0 alone writes the files, after gathering, with the same numbers."""
    output, results = tested
    launch_run(tiny_cfg(demo, tmp_path, "TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH",
                        find_latest_checkpoint(str(output)), "NUM_CPU_PROCS", "2"))
    one, both = load(output), load(tmp_path)
    for name in ("video_ids", "paths", "labels", "num_views", "class_names"):
        assert both[name].tolist() == one[name].tolist(), name
    np.testing.assert_allclose(both["scores"], one["scores"], atol=1e-5)
    final = read_json_stats(str(tmp_path / "json_stats.log"))[-1]
    assert final["top1_acc"] == pytest.approx(results["top1_acc"], abs=1e-5)
    assert final["mean_class_acc"] == pytest.approx(results["mean_class_acc"], abs=1e-5)
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]
