"""Smoothed metrics: a window median and a weighted global average per named value."""
from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping


class ScalarMeter:
    """One metric: the median over the last `window_size` values, and a weighted global average."""

    def __init__(self, window_size: int = 20) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self._window: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        """Add `value`, weighted by `n` (e.g. the batch size) in the global average."""
        value = float(value)
        self._window.append(value)
        self.total += value * n
        self.count += n

    @property
    def median(self) -> float:
        return statistics.median(self._window) if self._window else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan


class MetricLogger:
    """Named ScalarMeters created on first update (loss, dt, dt_data, dt_net, top1_err, ...)."""

    def __init__(self, window_size: int = 20) -> None:
        self.window_size = window_size
        self.meters: dict[str, ScalarMeter] = {}

    def update(self, values: Mapping[str, float], n: int = 1) -> None:
        """Add one value per metric, each weighted by `n` in the global averages."""
        for name, value in values.items():
            self.meters.setdefault(name, ScalarMeter(self.window_size)).update(value, n)

    def __getitem__(self, name: str) -> ScalarMeter:
        if name not in self.meters:
            raise KeyError(f"No metric '{name}'; logged metrics: {sorted(self.meters)}")
        return self.meters[name]

    def median(self, name: str) -> float:
        """Window median of one metric."""
        return self[name].median

    def medians(self) -> dict[str, float]:
        """Window median of every metric (for per-iteration logs)."""
        return {name: meter.median for name, meter in self.meters.items()}

    def global_averages(self) -> dict[str, float]:
        """Weighted average of every metric (for per-epoch logs)."""
        return {name: meter.global_avg for name, meter in self.meters.items()}
