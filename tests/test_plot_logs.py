"""hiera_video.cli.plot_logs (tools/plot_logs.py): one distinct legend label per run, validation accuracy and mAP
panels, the command line."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hiera_video.cli import plot_logs
from hiera_video.engine.logging import log_json_stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(folder, val: dict) -> str:
    """A 2-epoch json_stats.log in `folder`: two train_iter lines and one val_epoch line (`val`) per epoch."""
    for epoch in (1, 2):
        for it in (1, 2):
            log_json_stats({"_type": "train_iter", "epoch": f"{epoch}/2", "iter": f"{it}/2",
                            "loss": 1.0 / (epoch + it), "lr": 0.1}, str(folder))
        log_json_stats({"_type": "val_epoch", "epoch": f"{epoch}/2", **val}, str(folder))
    return str(folder / "json_stats.log")


@pytest.fixture
def three_runs(tmp_path):
    """Two classification runs in folders both named `out`, and a detection run."""
    return [write_run(tmp_path / "a" / "out", {"top1_err": 40.0}),
            write_run(tmp_path / "b" / "out", {"top1_err": 30.0}), write_run(tmp_path / "c", {"map": 0.25})]


def test_runs_in_folders_of_the_same_name_get_distinct_labels_and_curves(three_runs, tmp_path):
    fig = plot_logs.plot(three_runs, str(tmp_path / "curves.png"))
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["a/out", "b/out", "c"]
    panels = {axis.get_title(): axis for axis in fig.axes}
    assert [line.get_label() for line in panels["train loss"].get_lines()] == ["a/out", "b/out", "c"]
    accuracy = panels["val top-1 accuracy (%)"].get_lines()
    assert [line.get_label() for line in accuracy] == ["a/out", "b/out"]
    assert list(accuracy[0].get_ydata()) == [60.0, 60.0]
    (map_line,) = panels["val mAP"].get_lines()
    assert map_line.get_label() == "c" and list(map_line.get_ydata()) == [0.25, 0.25]
    assert os.path.getsize(tmp_path / "curves.png") > 0


@pytest.mark.parametrize("paths, labels", [
    (["x/a/out/json_stats.log", "x/b/out/json_stats.log", "x/c/json_stats.log"], ["a/out", "b/out", "c"]),
    (["r/a/b/json_stats.log", "r/b/json_stats.log"], ["a/b", "r/b"]),
    (["runs/first.log", "runs/second.log"], ["first.log", "second.log"]),
    (["one/run/json_stats.log"], ["run"]),
])
def test_labels_are_the_shortest_distinct_path_ends(paths, labels):
    assert plot_logs.run_labels(paths) == labels


def test_the_same_log_twice_and_wrong_label_counts_are_rejected(three_runs, tmp_path):
    with pytest.raises(ValueError, match="given more than once"):
        plot_logs.run_labels([three_runs[0], three_runs[0]])
    with pytest.raises(ValueError, match="2 labels for 3 logs"):
        plot_logs.plot(three_runs, str(tmp_path / "c.png"), labels=["A", "B"])


@pytest.mark.slow
def test_command_line_takes_explicit_labels(three_runs, tmp_path):
    out = subprocess.run([sys.executable, "tools/plot_logs.py", *three_runs, "--labels", "A", "B", "C", "--out",
                          str(tmp_path / "c.png")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "val top-1 accuracy (%)" in out.stdout and "val mAP" in out.stdout
    bad = subprocess.run([sys.executable, "tools/plot_logs.py", *three_runs, "--labels", "A", "--out",
                          str(tmp_path / "d.png")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "1 labels for 3 logs" in bad.stderr
