"""AVA frame-mAP@0.5IoU of a detection CSV, with the same numbers as the official ActivityNet evaluator.

    python tools/ava_eval.py --groundtruth ava_val_v2.2.csv --detections detections.csv \\
        --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt [--exclusions excluded.csv] \\
        [--output result.json]

Prints a per-class table (id, name, num_gt, AP) and the mAP. RESULT.json is
{"mAP": float, "per_class": {"<id>": {"name": str, "ap": float or null, "num_gt": int}}} (null: no ground truth).
Exit status 2 for a missing or malformed input file.
"""
from __future__ import annotations

import argparse
import sys

from hiera_video.evaluation.ava.csv_rows import AvaFormatError
from hiera_video.evaluation.ava.metric import AvaResult, evaluate_files
from hiera_video.evaluation.ava.output import save_result_json


def format_table(result: AvaResult) -> str:
    """Per-class rows (AP '-' for classes without ground truth) and the mAP line."""
    width = max([len(entry["name"]) for entry in result.per_class.values()] + [4])
    lines = [f"{'id':>4}  {'name':<{width}}  {'num_gt':>7}  {'AP':>7}"]
    for class_id, entry in result.per_class.items():
        ap = "-" if entry["ap"] is None else f"{entry['ap']:.4f}"
        lines.append(f"{class_id:>4}  {entry['name']:<{width}}  {entry['num_gt']:>7}  {ap:>7}")
    scored = sum(entry["ap"] is not None for entry in result.per_class.values())
    lines.append(f"mAP@0.5IoU: {result.map:.4f} (mean over {scored} classes with ground truth)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groundtruth", "-g", required=True, help="ground-truth CSV")
    parser.add_argument("--detections", "-d", required=True, help="detection CSV")
    parser.add_argument("--labelmap", "-l", required=True, help="label map pbtxt (its ids are the classes scored)")
    parser.add_argument("--exclusions", "-e", help="CSV of video_id,timestamp keyframes to leave out")
    parser.add_argument("--output", "-o", help="write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = evaluate_files(args.groundtruth, args.detections, args.labelmap, args.exclusions)
    except (AvaFormatError, OSError) as error:
        print(f"ava_eval: error: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.output:
        save_result_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
