"""Every benchmark script runs end to end on its smallest setting and reports what it measured.

The benchmarks themselves are not tests (they take minutes and their numbers depend on the machine); this only
checks that each one still runs, compares what it claims to compare, and prints its table and summary.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hiera_video.data.video_io import backend_problem

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(script: str, *args: str) -> str:
    """stdout of `python benchmarks/<script> *args`; fails the test with stderr on a non-zero exit."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("summary: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_model_speed_compares_identical_models_in_both_modes():
    pytest.importorskip("hiera")
    output = run_benchmark("model_speed.py", "--smoke", "--threads", "1")
    difference = float(re.search(r"logits of ours vs official differ by (\S+) relative", output).group(1))
    assert difference < 1e-4  # the same weights give the same logits: the comparison is like for like
    rows = [line.split() for line in output.splitlines() if line.startswith("tiny ")]
    assert [row[2] for row in rows] == ["inference", "training"]
    for row in rows:
        ours, official, ratio = float(row[3]), float(row[4]), float(row[5])
        assert ours > 0 and official > 0 and ratio == pytest.approx(ours / official, abs=0.01)
    assert "target >= 1.0x in every row" in summary_line(output)


def test_mae_speed_reports_both_ratios_on_the_same_mask():
    pytest.importorskip("hiera")
    output = run_benchmark("mae_speed.py", "--smoke", "--threads", "1")
    assert float(re.search(r"\|loss ours - official\| (\S+)", output).group(1)) < 1e-5
    names = [line[:25].strip() for line in output.splitlines()
             if line.startswith(("ours MAE", "official MAE", "ours full", "official full"))]
    assert names == ["ours MAE", "official MAE", "ours full", "official full"]
    summary = summary_line(output)
    assert re.search(r"ours MAE step \d+\.\d\dx our full-token step", summary)
    assert re.search(r"\d+\.\d\dx faster than the official MAE step", summary)


def test_data_speed_loads_real_mp4_clips_with_every_loader(tmp_path):
    pytest.importorskip("pytorchvideo.data")
    output = run_benchmark("data_speed.py", "--smoke", "--data-dir", str(tmp_path))
    assert len(list(tmp_path.rglob("*.mp4"))) == 4
    loaders = [line.split("  ")[0].strip() for line in output.splitlines()
               if line.startswith(("ours (", "PyTorchVideo (", "decode "))]
    torchcodec = backend_problem("torchcodec") is None  # its rows are left out without it
    assert loaders == ["ours (torchcodec)"] * torchcodec + ["ours (decord)", "ours (pyav)", "PyTorchVideo (pyav)",
                       "PyTorchVideo (decord)"] + ["decode once (ours, torchcodec)"] * torchcodec + [
                       "decode once (ours, decord)", "decode each view (decord)"]
    default = "torchcodec" if torchcodec else "decord"
    summary = summary_line(output)
    assert re.search(rf"the default loader, ours \({default}\), \d+\.\d clips/s = \d+\.\d\dx the faster "
                     r"PyTorchVideo loader \(target >= 3\.5x: (met|MISSED)\)", summary)
    assert not torchcodec or re.search(r"ours \(torchcodec\) \d+\.\d\dx ours \(decord\)", summary)


def test_ava_eval_speed_runs_the_cli_on_generated_sets(tmp_path):
    output = run_benchmark("ava_eval_speed.py", "--small", "--repeats", "1", "--workdir", str(tmp_path))
    rows = [line for line in output.splitlines() if "keyframes, " in line and not line.startswith("summary")]
    assert len(rows) == 2
    for row in rows:
        assert 0.0 < float(row.split()[-1]) <= 1.0  # the mAP the CLI printed
    assert "keyframes" in summary_line(output)


def test_feature_speed_times_extraction_and_the_bare_model_on_the_same_clips(tmp_path):
    output = run_benchmark("feature_speed.py", "--smoke", "--threads", "1", "--data-dir", str(tmp_path))
    assert len(list(tmp_path.rglob("*.mp4"))) == 2
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[1] == "only" else ""): line.split()
            for line in output.splitlines() if line.startswith(("extraction ", "model only ", "decode only "))}
    assert sorted(rows) == ["decode only", "extraction", "model only"]
    extraction, model = float(rows["extraction"][1]), float(rows["model only"][2])
    assert extraction > 0 and model > 0 and float(rows["extraction"][3]) == pytest.approx(extraction / model, abs=0.01)
    assert re.search(r"extraction \S+ clips/s = \d+% of the bare model's", summary_line(output))


def test_memory_runs_each_setting_in_its_own_process_with_equal_losses():
    output = run_benchmark("memory.py", "--smoke", "--mae", "--threads", "1", "--steps", "1")
    assert "peak = ru_maxrss of the setting's own process" in output
    rows = [line.split() for line in output.splitlines() if line.startswith(("hiera_", "mae_hiera_"))
            and " 4x32x32 " in line and "checkpointed" not in line]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("hiera_large_16x224", "fine-tuning", "off"), ("hiera_large_16x224", "fine-tuning", "on"),
        ("mae_hiera_large_16x224", "mae", "off"), ("mae_hiera_large_16x224", "mae", "on")]
    for row in rows:
        seconds, (peak, step, static, libraries) = float(row[4]), map(float, row[-4:])
        assert seconds > 0 and peak > libraries > 100  # whole-process peaks, above torch's own footprint
        assert step >= 0 and static > 0
    ratios = re.findall(r"checkpointed / plain peak memory (\S+), step memory (\S+), speed (\S+); "
                        r"\|loss difference\| (\S+)", output)
    assert len(ratios) == 2
    for peak, step, speed, loss_gap in ratios:
        assert float(peak) > 0 and float(step) > 0 and float(speed) > 0
        assert float(loss_gap) == 0.0  # the same seed: checkpointing changes no number
    summary = summary_line(output)
    assert re.search(r"peak memory \d+\.\d\dx \(target <= 0\.5: (met|MISSED); step memory \d+\.\d\dx\), "
                     r"speed \d+\.\d\dx", summary)
