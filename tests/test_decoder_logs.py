"""Native decoder logging: FFmpeg's and decord's own messages stay out of a run's output unless asked for.

A training run over broken files used to print `moov atom not found` and `video_reader.cc:83: ERROR opening ...`
on every attempt. These tests run real processes and read their stdout/stderr at the file-descriptor level, where
C code writes.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from hiera_video.config import ConfigError, load_config
from hiera_video.data.video_io import set_decoder_log_level
from video_factory import index_coded_frames, make_empty_file, make_truncated_video, make_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What FFmpeg (through PyAV or decord) and decord's C++ print about broken files.
NATIVE_PATTERNS = ("moov atom", "video_reader.cc", "Invalid data found", "[mov,mp4", "ERROR opening", "partial file",
                   "NAL unit")
# The start of a record of our logger (hiera_video.engine.logging._FORMAT), from one of our modules.
LOG_RECORD = re.compile(r"^\[\d\d/\d\d \d\d:\d\d:\d\d\]\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] (?P<name>\S+):\d+: ")
# A Python warning printed to stderr: "file:line: SomeWarning: message", then the indented source line.
PYTHON_WARNING = re.compile(r"^(\S+:\d+: \w*Warning: |\s+\S)")

TRAIN_BAD = ("truncated.mp4", "empty.mp4", "notes.mp4", "missing.mp4")
TEST_BAD = ("truncated_tail.mp4", "notes_test.mp4")


def write_split(folder, name: str, files: list[str]) -> None:
    (folder / f"{name}.csv").write_text("".join(f"{folder / f} {i % 2}\n" for i, f in enumerate(files)))


@pytest.fixture(scope="module")
def broken_dataset(tmp_path_factory):
    """Good videos mixed with a truncated, an empty, a text file named .mp4 and a missing one (train), and a
    video cut after its index plus another text file (test). Each bad file is in one split only."""
    folder = tmp_path_factory.mktemp("broken")
    good = [os.path.basename(make_video(str(folder / f"good{i}.mp4"), index_coded_frames(24))) for i in range(6)]
    make_truncated_video(str(folder / "truncated.mp4"), keep_fraction=0.3)  # index lost: cannot be opened
    make_truncated_video(str(folder / "truncated_tail.mp4"), keep_fraction=0.5, index_first=True)  # opens, fails later
    make_empty_file(str(folder / "empty.mp4"))
    for name in ("notes.mp4", "notes_test.mp4"):
        (folder / name).write_text("not a video\n")
    write_split(folder, "train", good[:4] + list(TRAIN_BAD))
    write_split(folder, "val", good[4:])
    write_split(folder, "test", good[4:] + list(TEST_BAD))
    return folder


def tiny_config(data, output_dir) -> str:
    """A 2-epoch run of a 16-channel, 3-stage Hiera on 4-frame 32x32 clips, one decoding worker process."""
    config = {
        "OUTPUT_DIR": str(output_dir), "LOG_PERIOD": 1, "TENSORBOARD": {"ENABLE": False},
        "MODEL": {"ARCH": "hiera_base_16x224", "NUM_CLASSES": 2},
        "HIERA": {"EMBED_DIM": 16, "NUM_HEADS": 1, "STAGES": [1, 1, 1]},
        "TRAIN": {"DATASET": "kinetics", "BATCH_SIZE": 4},
        "TEST": {"DATASET": "kinetics", "BATCH_SIZE": 2, "NUM_ENSEMBLE_VIEWS": 1, "NUM_SPATIAL_CROPS": 1},
        "DATA": {"PATH_TO_DATA_DIR": str(data), "NUM_FRAMES": 4, "SAMPLING_RATE": 2, "TRAIN_CROP_SIZE": 32,
                 "TEST_CROP_SIZE": 32, "MAX_BAD_FRACTION": 0.6},
        "DATA_LOADER": {"NUM_WORKERS": 1},
        "SOLVER": {"MAX_EPOCH": 2, "WARMUP_EPOCHS": 1.0},
    }
    path = os.path.join(output_dir, "config.yaml")
    os.makedirs(output_dir)
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def log_records(stdout: str) -> list[str]:
    """stdout split into log records of our modules; fails on any other line. The only multi-line record is the
    config dump ("Running with ... Config:" followed by YAML)."""
    records: list[list[str]] = []
    for line in stdout.splitlines():
        record = LOG_RECORD.match(line)
        if record:
            assert record["name"].startswith("hiera_video."), f"a record from another logger: {line!r}"
            records.append([line])
        else:
            assert records, f"output before the first log record: {line!r}"
            assert_no_native_lines(line)
            records[-1].append(line)
    for lines in records:
        if len(lines) > 1:
            assert lines[0].endswith("Config:"), f"unexpected lines after a log record: {lines[1:]!r}"
            assert isinstance(yaml.safe_load("\n".join(lines[1:])), dict)
    return [lines[0] for lines in records]


def assert_no_native_lines(text: str) -> None:
    for line in text.splitlines():
        assert not any(p in line for p in NATIVE_PATTERNS), f"native decoder output: {line!r}"


@pytest.mark.slow
def test_training_and_testing_over_broken_files_name_each_once_without_native_lines(broken_dataset, tmp_path):
    config = tiny_config(broken_dataset, tmp_path / "run")
    out = subprocess.run([sys.executable, "tools/run_net.py", "--cfg", config], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_no_native_lines(out.stderr)
    for line in out.stderr.splitlines():
        assert PYTHON_WARNING.match(line), f"unexpected stderr line: {line!r}"
    records = log_records(out.stdout)
    for name in TRAIN_BAD + TEST_BAD:
        naming = [r for r in records if name in r]
        assert len(naming) == 1 and "[WARNING]" in naming[0], (name, naming)
    assert any('"split": "test_final"' in r and '"bad_videos": 2' in r for r in records)


SPAWNED_OPEN = textwrap.dedent("""
    import multiprocessing
    import sys

    from hiera_video.data.video_io import VideoDecodeError, open_video, set_decoder_log_level


    def try_open(path):
        try:
            open_video(path, backend="decord")  # decord and PyAV print natively; torchcodec keeps FFmpeg silent
        except VideoDecodeError as error:
            return error.path


    if __name__ == "__main__":
        set_decoder_log_level(sys.argv[1])
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            print(pool.map(try_open, sys.argv[2:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("level", ["quiet", "error"])
def test_the_level_reaches_spawned_workers(broken_dataset, tmp_path, level):
    script = tmp_path / "spawned_open.py"
    script.write_text(SPAWNED_OPEN)
    paths = [str(broken_dataset / name) for name in ("truncated.mp4", "notes.mp4")]
    out = subprocess.run([sys.executable, str(script), level, *paths], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(paths)  # both files fail, each named by its error
    if level == "quiet":
        assert out.stderr == ""
    else:  # the messages the default level hides, printed by the worker's decord and FFmpeg
        assert "ERROR opening" in out.stderr and "moov atom not found" in out.stderr


def test_unknown_levels_are_rejected():
    with pytest.raises(ConfigError, match="DATA.DECODER_LOG_LEVEL"):
        load_config([], ["DATA.DECODER_LOG_LEVEL", "loud"])
    with pytest.raises(ValueError, match="quiet, error, warning, info, debug"):
        set_decoder_log_level("loud")
