"""hiera_video.utils.meters: window medians and weighted global averages per named metric."""
from __future__ import annotations

import math

import pytest
import torch

from hiera_video.utils.meters import MetricLogger, ScalarMeter


def test_scalar_meter_window_and_weighted_global_average():
    meter = ScalarMeter(window_size=3)
    for value, n in [(10.0, 1), (1.0, 1), (2.0, 2), (6.0, 4)]:
        meter.update(value, n)
    assert meter.median == 2.0  # window holds 1, 2, 6
    assert meter.global_avg == pytest.approx((10 + 1 + 4 + 24) / 8)
    empty = ScalarMeter()
    assert math.isnan(empty.median) and math.isnan(empty.global_avg)


def test_metric_logger_tracks_named_meters():
    metrics = MetricLogger(window_size=2)
    metrics.update({"loss": torch.tensor(4.0), "dt": 0.5}, n=2)
    metrics.update({"loss": 2.0, "dt": 0.3}, n=2)
    metrics.update({"loss": 1.0, "dt": 0.1}, n=4)
    assert metrics.medians() == pytest.approx({"loss": 1.5, "dt": 0.2})
    assert metrics.median("dt") == pytest.approx(0.2)
    assert metrics.global_averages()["loss"] == pytest.approx((8 + 4 + 4) / 8)
    with pytest.raises(KeyError, match="top1_err.*'dt', 'loss'"):
        metrics["top1_err"]
