"""hiera_video.utils.progress: plain log lines without a terminal, a tqdm bar on one, ETA strings."""
from __future__ import annotations

import io
import logging

from hiera_video.utils.progress import ProgressReporter, eta_string


def test_progress_without_tty_logs_plain_lines_every_period(caplog):
    caplog.set_level(logging.INFO)
    stream = io.StringIO()
    with ProgressReporter(total=7, desc="val", period=3, stream=stream) as progress:
        for _ in range(7):
            progress.update(loss=0.123456)
    messages = [r.getMessage() for r in caplog.records if r.name == "hiera_video.utils.progress"]
    assert [m.split("  ")[0] for m in messages] == ["val: 3/7", "val: 6/7", "val: 7/7"]
    assert "loss 0.1235" in messages[0] and "eta" in messages[0]
    assert stream.getvalue() == "" and not any("\r" in m for m in messages)


def test_progress_of_a_resumed_epoch_starts_at_initial(caplog):
    caplog.set_level(logging.INFO)
    with ProgressReporter(total=10, desc="epoch 2/5", period=4, stream=io.StringIO(), initial=6) as progress:
        for _ in range(4):
            progress.update()
    messages = [r.getMessage().split("  ")[0] for r in caplog.records if r.name == "hiera_video.utils.progress"]
    assert messages == ["epoch 2/5: 8/10", "epoch 2/5: 10/10"]


def test_progress_on_a_tty_draws_a_bar_and_disabled_is_silent(caplog):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    caplog.set_level(logging.INFO)
    terminal = Terminal()
    with ProgressReporter(total=4, desc="train", period=1, stream=terminal) as progress:
        progress.update(2, loss=1.0)
    assert "train" in terminal.getvalue() and "\r" in terminal.getvalue()
    silent = Terminal()
    with ProgressReporter(total=4, desc="train", enabled=False, period=1, stream=silent) as progress:
        progress.update(4)
    assert silent.getvalue() == "" and caplog.records == []


def test_eta_strings():
    assert eta_string(65.4) == "0:01:05"
    assert eta_string(90061) == "1 day, 1:01:01"
    assert eta_string(-3) == "0:00:00"
    assert eta_string(float("inf")) == "unknown"
