"""hiera_video.engine.logging: setup per rank, json_stats lines and files, tensorboard scalars, memory string."""
from __future__ import annotations

import json
import logging
import math
import re

import pytest
import torch

from hiera_video.engine import logging as run_logging
from hiera_video.engine.logging import TensorboardWriter, log_json_stats, memory_string, read_json_stats, setup_logging


@pytest.fixture
def clean_root_logger():
    """Leave the root logger as it was: setup_logging changes process-wide state."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def _own_handlers(root):
    return [h for h in root.handlers if h in run_logging._INSTALLED]


def test_rank0_logs_info_to_stdout_and_file_once_even_after_two_setups(tmp_path, capsys, clean_root_logger):
    setup_logging(str(tmp_path), rank=0)
    setup_logging(str(tmp_path), rank=0)
    assert len(_own_handlers(clean_root_logger)) == 2
    logging.getLogger("hiera_video.test").info("epoch 1 done")
    logging.getLogger("hiera_video.test").debug("hidden detail")
    out = capsys.readouterr().out
    assert out.count("epoch 1 done") == 1 and "hidden detail" not in out
    setup_logging(None, rank=0)  # closes and flushes the file handler
    log_text = (tmp_path / "stdout.log").read_text()
    assert log_text.count("epoch 1 done") == 1
    assert re.search(r"\[\d\d/\d\d \d\d:\d\d:\d\d\]\[INFO\] hiera_video.test:\d+: epoch 1 done", log_text)


def test_other_ranks_log_warnings_only_with_rank_prefix(tmp_path, capsys, clean_root_logger):
    setup_logging(str(tmp_path), rank=3)
    logger = logging.getLogger("hiera_video.test")
    logger.info("rank 3 info")
    logger.warning("rank 3 warning")
    out = capsys.readouterr().out
    assert "rank 3 info" not in out
    assert re.search(r"^\[rank 3\]\[.*\]\[WARNING\] .*rank 3 warning$", out, re.MULTILINE)
    assert not (tmp_path / "stdout.log").exists()


def test_json_stats_line_is_sorted_rounded_and_appended(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    stats = {"_type": "train_iter_", "loss": torch.tensor(1.23456789), "lr": 0.000123456789, "iter": "5/10",
             "top1_err": 12.5, "epoch": "1/30", "eta": "0:01:00"}
    line = log_json_stats(stats, output_dir=str(tmp_path))
    log_json_stats({"_type": "val_epoch", "top1_err": 1 / 3, "loss": float("nan")}, output_dir=str(tmp_path))

    assert line.startswith("json_stats: {")
    assert line in caplog.text
    record = json.loads(line[len("json_stats: "):])
    assert list(record) == sorted(record)
    assert record["loss"] == 1.23457 and record["lr"] == 0.00012 and record["top1_err"] == 12.5
    assert '"lr": 0.00012,' in line  # rounded text, not the full float repr
    lines = (tmp_path / "json_stats.log").read_text().splitlines()
    assert lines[0] == line and len(lines) == 2
    records = read_json_stats(str(tmp_path / "json_stats.log"))
    assert records[1]["top1_err"] == 0.33333 and math.isnan(records[1]["loss"])


def test_read_json_stats_names_a_malformed_line(tmp_path):
    path = tmp_path / "stdout.log"
    path.write_text('[01/01 00:00:00][INFO] x: json_stats: {"a": 1}\nplain line\njson_stats: {"a": \n')
    with pytest.raises(ValueError, match=r"stdout.log:3"):
        read_json_stats(str(path))


def test_tensorboard_writer_writes_scalars_and_disabled_writer_writes_nothing(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    disabled_dir = tmp_path / "off"
    TensorboardWriter(str(disabled_dir), enabled=False).add_scalars({"Train/loss": 1.0}, step=1)
    assert not disabled_dir.exists()

    with TensorboardWriter(str(tmp_path / "tb")) as writer:
        writer.add_scalars({"Train/loss": 2.5, "Train/lr": torch.tensor(0.1)}, step=3)
        writer.add_scalars({"Train/loss": 1.5}, step=4)
        with pytest.raises(TypeError, match="Train/epoch"):
            writer.add_scalars({"Train/epoch": "1/10"}, step=4)
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("Train/loss")] == [(3, 2.5), (4, 1.5)]
    assert events.Scalars("Train/lr")[0].value == pytest.approx(0.1)


def test_memory_string():
    assert re.fullmatch(r"\d+\.\d\dG", memory_string())
    assert float(memory_string()[:-1]) > 0.01  # this process holds torch: well over 10 MB resident
