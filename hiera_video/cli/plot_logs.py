"""Plot training curves from json_stats.log files: loss, learning rate, and the validation metrics (top-1 error and
accuracy of classification, mAP of detection, loss of MAE pretraining).

    python tools/plot_logs.py output/run1/json_stats.log [output/run2/json_stats.log ...] [--labels A B] \
        --out curves.png

Each file is one run, labelled by the shortest end of its folder's path that tells the runs apart
(`a/out/json_stats.log b/out/json_stats.log c/json_stats.log` -> `a/out`, `b/out`, `c`), or by --labels.
Training curves use `train_iter` lines, x = fractional epoch; validation curves use `val_epoch` lines.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hiera_video.engine.logging import read_json_stats

Series = tuple[list[float], list[float]]
LOG_SCALE = ("train loss", "learning rate")


def _fraction(value: str) -> tuple[int, int]:
    done, total = str(value).split("/")
    return int(done), int(total)


def curves(records: list[dict]) -> dict[str, Series]:
    """Named series (x, y) from json_stats records: train loss / lr per iteration, val metrics per epoch."""
    series: dict[str, Series] = {}

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
            top1_err = record.get("top1_err")
            add("val top-1 error (%)", epoch, top1_err)
            add("val top-1 accuracy (%)", epoch, None if top1_err is None else 100.0 - top1_err)
            add("val mAP", epoch, record.get("map"))
            add("val loss", epoch, record.get("loss"))
    return series


def run_labels(paths: Sequence[str]) -> list[str]:
    """One label per log: the shortest end of its path that no other log's path ends with.

    Paths are compared by folder when all files have the same name (json_stats.log), else by file.
    """
    parts = [os.path.abspath(p).split(os.sep)[1:] for p in paths]
    if len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    labels = []
    for i, own in enumerate(parts):
        others = parts[:i] + parts[i + 1:]
        if own in others:
            raise ValueError(f"{paths[i]} is given more than once")
        length = next((n for n in range(1, len(own) + 1) if all(other[-n:] != own[-n:] for other in others)),
                      len(own))
        labels.append("/".join(own[-length:]) or os.sep)
    return labels


def draw(runs: dict[str, dict[str, Series]]) -> Figure:
    """A figure with one panel per metric and one colour per run, named in a legend above the panels."""
    names = sorted({name for series in runs.values() for name in series})
    fig = Figure(figsize=(4.5 * len(names), 4.0))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for axis, name in zip(axes, names):
        for colour, (run, series) in enumerate(runs.items()):
            if name in series:
                axis.plot(*series[name], label=run, color=f"C{colour}",
                          marker="o" if name.startswith("val") else None, markersize=3)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if name in LOG_SCALE:
            axis.set_yscale("log")
    handles = [Line2D([], [], color=f"C{colour}") for colour in range(len(runs))]
    fig.legend(handles, list(runs), loc="upper center", ncols=min(len(runs), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot(paths: Sequence[str], out: str, labels: Sequence[str] | None = None) -> Figure:
    """Writes one PNG with a panel per metric and a curve per run; returns the figure."""
    if labels is None:
        labels = run_labels(paths)
    elif len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} logs; give one label per log")
    elif len(set(labels)) != len(labels):
        raise ValueError(f"labels must differ, got {list(labels)}")
    runs = {label: curves(read_json_stats(path)) for label, path in zip(labels, paths)}
    if not any(runs.values()):
        raise ValueError(f"No train_iter / val_epoch json_stats lines in {', '.join(paths)}")
    fig = draw(runs)
    fig.savefig(out, dpi=110)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="json_stats.log files")
    parser.add_argument("--labels", nargs="+", help="one legend label per log (default: from their paths)")
    parser.add_argument("--out", default="curves.png", help="output PNG")
    args = parser.parse_args(argv)
    try:
        fig = plot(args.logs, args.out, args.labels)
    except ValueError as error:
        raise SystemExit(f"plot_logs: {error}") from None
    print(f"Wrote {args.out} ({', '.join(axis.get_title() for axis in fig.axes)})")


if __name__ == "__main__":
    main()
