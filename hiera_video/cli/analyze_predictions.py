"""Per-class analysis of a classification test from its score file.

    python tools/analyze_predictions.py OUTPUT_DIR/test_scores.npz [--out DIR] [--matrix-classes 60]

Writes into DIR (default: `analysis` next to the score file), each file atomically:
    per_class_accuracy.csv  per class: index, name, videos (support), top-1 / top-5 hits and accuracy (%)
    confusions.csv          every (true class, predicted class) pair of the top-1 errors with its number of videos
                            and its share of the true class's videos, most frequent first
    confusion_matrix.png    the confusion matrix, each row divided by its class's videos; all classes, or the
                            --matrix-classes classes with the most errors when there are more
    twin_confusions.csv     only when classes differ just by left <-> right (SSv2's mirrored templates, paired as
                            AUG.SSV2_FLIP_SWAP pairs them): how often each class is taken for its twin
    summary.json            top-1 / top-5 accuracy, mean class accuracy (every class weighs the same), error counts
and prints the summary, the most frequent confusions and the weakest classes. Videos without a label are left out.
Exit status 2 when the score file is missing or malformed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from hiera_video.data.ssv2 import mirror_labels
from hiera_video.evaluation.per_class import (
    ClassAccuracy,
    TwinConfusion,
    class_accuracy,
    confusion_matrix,
    confusions,
    most_confused_classes,
    top1_predictions,
    twin_confusions,
)
from hiera_video.evaluation.score_file import VideoScores, load_test_scores
from hiera_video.utils.atomic import atomic_open

MAX_LABEL_CHARS = 40
SHOWN_IN_TERMINAL = 10
PER_CLASS_HEADER = ("class", "name", "videos", "top1_hits", "top5_hits", "top1_acc", "top5_acc")
CONFUSIONS_HEADER = ("true", "true_name", "predicted", "predicted_name", "videos", "percent_of_true")
TWINS_HEADER = ("class_a", "name_a", "class_b", "name_b", "videos_a", "a_as_b", "videos_b", "b_as_a")


def _write_csv(path: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with atomic_open(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _percent(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.2f}"


def per_class_rows(accuracy: ClassAccuracy, names: Sequence[str]) -> list[list]:
    top1, top5 = accuracy.accuracy(1), accuracy.accuracy(5)
    return [[index, name, int(accuracy.support[index]), int(accuracy.correct[1][index]),
             int(accuracy.correct[5][index]), _percent(top1[index]), _percent(top5[index])]
            for index, name in enumerate(names)]


def confusion_rows(matrix: np.ndarray, names: Sequence[str]) -> list[list]:
    support = matrix.sum(1)
    return [[true, names[true], predicted, names[predicted], count, f"{100.0 * count / support[true]:.2f}"]
            for true, predicted, count in confusions(matrix)]


def twin_rows(twins: Sequence[TwinConfusion], names: Sequence[str]) -> list[list]:
    return [[t.class_a, names[t.class_a], t.class_b, names[t.class_b], t.support_a, t.a_as_b, t.support_b, t.b_as_a]
            for t in twins]


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL_CHARS else name[:MAX_LABEL_CHARS - 1] + "…"


def draw_confusion_matrix(matrix: np.ndarray, names: Sequence[str], shown: np.ndarray) -> Figure:
    """The rows and columns `shown` of `matrix`, each row divided by its class's videos (all columns counted), with
    the counts written in the cells when they fit."""
    support = np.maximum(matrix.sum(1), 1)
    part = matrix[np.ix_(shown, shown)]
    fraction = part / support[shown, None]
    labels = [_short(names[i]) for i in shown]
    label_inches = 0.07 * max(len(label) for label in labels) + 0.6
    side = max(4.0, 0.24 * len(shown))
    fig = Figure(figsize=(side + label_inches + 1.2, side + label_inches + 0.6))
    axis = fig.add_subplot()
    image = axis.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    positions = np.arange(len(shown))
    axis.set_xticks(positions, labels, rotation=90, fontsize=7)
    axis.set_yticks(positions, labels, fontsize=7)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    subset = "" if len(shown) == len(matrix) else f" ({len(shown)} most confused of {len(matrix)} classes)"
    axis.set_title(f"Confusion matrix{subset}", fontsize=9)
    if len(shown) <= 30:
        for (row, column), count in np.ndenumerate(part):
            if count:
                axis.text(column, row, str(count), ha="center", va="center", fontsize=6,
                          color="white" if fraction[row, column] > 0.5 else "black")
    fig.colorbar(image, ax=axis, fraction=0.04, pad=0.02).set_label("fraction of the true class's videos", fontsize=8)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Analysis:
    """What `analyze` wrote: the summary and the rows of the CSV files."""

    summary: dict
    per_class: list[list]
    confusions: list[list]
    twins: list[list]


def analyze(scores: VideoScores, out: str, matrix_classes: int = 60) -> Analysis:
    """Writes the analysis files of `scores` into `out`."""
    known = scores.labels >= 0
    if not known.any():
        raise ValueError("the score file has no video with a label: nothing to analyse")
    names = [str(name) for name in scores.class_names]
    labels, class_scores = scores.labels[known], scores.scores[known]
    accuracy = class_accuracy(class_scores, labels, ks=(1, 5))
    matrix = confusion_matrix(labels, top1_predictions(class_scores), len(names))
    twins = twin_confusions(matrix, mirror_labels({name: index for index, name in enumerate(names)}).twin)
    num_videos, top1_hits = int(known.sum()), int(accuracy.correct[1].sum())
    summary = {
        "num_videos": num_videos,
        "num_classes": len(names),
        "classes_with_videos": int((accuracy.support > 0).sum()),
        "top1_acc": 100.0 * top1_hits / num_videos,
        "top5_acc": 100.0 * int(accuracy.correct[5].sum()) / num_videos,
        "mean_class_top1_acc": accuracy.mean_accuracy(1),
        "mean_class_top5_acc": accuracy.mean_accuracy(5),
        "top1_errors": num_videos - top1_hits,
    }
    if twins:
        summary["twin_errors"] = sum(t.a_as_b + t.b_as_a for t in twins)
    analysis = Analysis(summary, per_class_rows(accuracy, names), confusion_rows(matrix, names),
                        twin_rows(twins, names))
    os.makedirs(out, exist_ok=True)
    _write_csv(os.path.join(out, "per_class_accuracy.csv"), PER_CLASS_HEADER, analysis.per_class)
    _write_csv(os.path.join(out, "confusions.csv"), CONFUSIONS_HEADER, analysis.confusions)
    if twins:
        _write_csv(os.path.join(out, "twin_confusions.csv"), TWINS_HEADER, analysis.twins)
    with atomic_open(os.path.join(out, "confusion_matrix.png"), "wb") as f:
        draw_confusion_matrix(matrix, names, most_confused_classes(matrix, matrix_classes)).savefig(
            f, format="png", dpi=110)
    with atomic_open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return analysis


def report(analysis: Analysis, out: str) -> str:
    """What the command prints: the summary, the most frequent confusions and the weakest classes."""
    summary = analysis.summary
    lines = [f"{summary['num_videos']} videos of {summary['classes_with_videos']} classes (of "
             f"{summary['num_classes']}): top-1 {summary['top1_acc']:.2f}%, top-5 {summary['top5_acc']:.2f}%",
             f"Mean class accuracy: top-1 {summary['mean_class_top1_acc']:.2f}%, top-5 "
             f"{summary['mean_class_top5_acc']:.2f}%"]
    if "twin_errors" in summary:
        lines.append(f"{summary['twin_errors']} of the {summary['top1_errors']} top-1 errors take a class for its "
                     "left/right twin (twin_confusions.csv)")
    lines.append("Most frequent confusions (true -> predicted: videos):" if analysis.confusions else "No top-1 errors.")
    lines += [f"  {row[1]} -> {row[3]}: {row[4]}" for row in analysis.confusions[:SHOWN_IN_TERMINAL]]
    scored = [row for row in analysis.per_class if row[2] > 0]
    weakest = sorted(scored, key=lambda row: (row[3] / row[2], row[0]))[:SHOWN_IN_TERMINAL]
    lines.append("Weakest classes (top-1 %, videos):")
    lines += [f"  {row[1]}: {row[5]} ({row[2]})" for row in weakest]
    lines.append(f"Wrote the analysis to {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", help="test_scores.npz of a classification test run")
    parser.add_argument("--out", help="output folder (default: analysis/ next to the score file)")
    parser.add_argument("--matrix-classes", type=int, default=60,
                        help="draw all classes up to this many, else this many most confused (default 60)")
    args = parser.parse_args(argv)
    if args.matrix_classes < 2:
        parser.error("--matrix-classes must be at least 2")
    out = args.out or os.path.join(os.path.dirname(args.scores), "analysis")
    try:
        analysis = analyze(load_test_scores(args.scores), out, args.matrix_classes)
    except (OSError, ValueError) as error:
        print(f"analyze_predictions: error: {error}", file=sys.stderr)
        return 2
    print(report(analysis, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
