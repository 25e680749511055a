"""Run logging: stdout/stdout.log setup per rank, PySlowFast-style `json_stats` lines, tensorboard scalars, and
the memory string. Smoothed metrics and progress reporting are in hiera_video.utils (meters, progress)."""
from __future__ import annotations

import decimal
import logging
import math
import os
import resource
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import simplejson
import torch
from iopath.common.file_io import g_pathmgr as PathManager

logger = logging.getLogger(__name__)

_FORMAT = "[%(asctime)s][%(levelname)s] %(name)s:%(lineno)d: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
_JSON_STATS_PREFIX = "json_stats: "
JSON_STATS_FILE = "json_stats.log"
STDOUT_FILE = "stdout.log"
_INSTALLED: list[logging.Handler] = []  # the handlers setup_logging added to the root logger


class _OwnedStreamHandler(logging.StreamHandler):
    """A StreamHandler that closes its stream (a file opened through PathManager) when closed."""

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


def setup_logging(output_dir: str | None, rank: int = 0) -> None:
    """Configure the root logger: rank 0 logs INFO to stdout and OUTPUT_DIR/stdout.log; other ranks log WARNING
    and above to stdout with a rank prefix. Calling it again replaces the handlers it installed before."""
    root = logging.getLogger()
    for handler in _INSTALLED:
        root.removeHandler(handler)
        handler.close()
    _INSTALLED.clear()

    prefix = "" if rank == 0 else f"[rank {rank}]"
    formatter = logging.Formatter(prefix + _FORMAT, datefmt=_DATE_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if rank == 0 and output_dir:
        PathManager.mkdirs(output_dir)
        # Line buffering, so `tail -f stdout.log` follows the run.
        log_file = PathManager.open(os.path.join(output_dir, STDOUT_FILE), "a", buffering=1)
        handlers.append(_OwnedStreamHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _INSTALLED.append(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _rounded(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        return decimal.Decimal(f"{value:.5f}")
    if isinstance(value, Mapping):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def format_json_stats(stats: Mapping[str, Any]) -> str:
    """`json_stats: {...}` with sorted keys and floats rounded to 5 decimals (tensors/NumPy scalars unwrapped).

    A diverged loss is written as NaN/Infinity (Python's json reads them) rather than hidden as null."""
    return _JSON_STATS_PREFIX + simplejson.dumps(_rounded(stats), sort_keys=True, use_decimal=True, allow_nan=True)


def log_json_stats(stats: Mapping[str, Any], output_dir: str | None = None) -> str:
    """Log a `json_stats: {...}` line and append it to OUTPUT_DIR/json_stats.log; returns the line.

    Call it on rank 0 only: it does not check the rank itself."""
    line = format_json_stats(stats)
    logger.info(line)
    if output_dir:
        PathManager.mkdirs(output_dir)
        with PathManager.open(os.path.join(output_dir, JSON_STATS_FILE), "a") as f:
            f.write(line + "\n")
    return line


def read_json_stats(path: str) -> list[dict]:
    """The stats dicts of a json_stats.log (or any log with `json_stats:` lines), in file order."""
    records = []
    with PathManager.open(path, "r") as f:
        for line_number, line in enumerate(f, start=1):
            start = line.find(_JSON_STATS_PREFIX)
            if start < 0:
                continue
            try:
                records.append(simplejson.loads(line[start + len(_JSON_STATS_PREFIX):], allow_nan=True))
            except simplejson.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: malformed json_stats line: {error}") from error
    return records


class TensorboardWriter:
    """Scalars to tensorboard; every method is a no-op when disabled or without a log_dir."""

    def __init__(self, log_dir: str | None, enabled: bool = True) -> None:
        self._writer = None
        if enabled and log_dir:
            # Imported here: loading tensorboard costs about a second that disabled runs should not pay.
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=log_dir)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def add_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Write each `tag: value` at global step `step`."""
        if self._writer is None:
            return
        for tag, value in scalars.items():
            if isinstance(value, (torch.Tensor, np.generic)):
                value = value.item()
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"Tensorboard scalar '{tag}' must be a number, got {type(value).__name__}")
            self._writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorboardWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def memory_string() -> str:
    """Peak memory in GB, e.g. "3.52G": CUDA max allocated when CUDA is available, else the process's max RSS."""
    if torch.cuda.is_available():
        return f"{torch.cuda.max_memory_allocated() / 1024 ** 3:.2f}G"
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = max_rss if sys.platform == "darwin" else max_rss * 1024  # Linux reports KiB, macOS bytes
    return f"{rss_bytes / 1024 ** 3:.2f}G"
