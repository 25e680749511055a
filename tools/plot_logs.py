#!/usr/bin/env python
"""Plot training curves from json_stats.log files: loss, learning rate, and validation top-1 error / loss.

    python tools/plot_logs.py output/run1/json_stats.log [output/run2/json_stats.log ...] --out curves.png

Each file is one run (labelled by its folder). Training curves use `train_iter` lines, x = fractional epoch.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hiera_video.engine.logging import read_json_stats  # noqa: E402


def _fraction(value: str) -> tuple[int, int]:
    done, total = str(value).split("/")
    return int(done), int(total)


def curves(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """Named series (x, y) from json_stats records: train loss / lr per iteration, val metrics per epoch."""
    series: dict[str, tuple[list[float], list[float]]] = {}

    def add(name: str, x: float, y) -> None:
        if isinstance(y, (int, float)):
            series.setdefault(name, ([], []))
            series[name][0].append(x)
            series[name][1].append(float(y))

    for record in records:
        kind = record.get("_type", "")
        if kind == "train_iter":
            epoch, _ = _fraction(record["epoch"])
            done, total = _fraction(record["iter"])
            x = epoch - 1 + done / total
            add("train loss", x, record.get("loss"))
            add("learning rate", x, record.get("lr"))
        elif kind == "val_epoch":
            epoch, _ = _fraction(record["epoch"])
            add("val top-1 error (%)", epoch, record.get("top1_err"))
            add("val loss", epoch, record.get("loss"))
    return series


def plot(paths: list[str], out: str) -> list[str]:
    """Writes one PNG with a panel per metric; returns the metric names plotted."""
    runs = {os.path.basename(os.path.dirname(os.path.abspath(p))) or p: curves(read_json_stats(p)) for p in paths}
    names = sorted({name for series in runs.values() for name in series})
    if not names:
        raise SystemExit(f"No train_iter / val_epoch json_stats lines in {', '.join(paths)}")
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for axis, name in zip(axes[0], names):
        for run, series in runs.items():
            if name in series:
                axis.plot(*series[name], label=run, marker="o" if name.startswith("val") else None, markersize=3)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if name in ("train loss", "learning rate"):
            axis.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="json_stats.log files")
    parser.add_argument("--out", default="curves.png", help="output PNG")
    args = parser.parse_args(argv)
    names = plot(args.logs, args.out)
    print(f"Wrote {args.out} ({', '.join(names)})")


if __name__ == "__main__":
    main()
