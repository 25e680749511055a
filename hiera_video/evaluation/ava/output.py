"""Writing AVA detections in the official CSV format and evaluation results as JSON, atomically."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from hiera_video.evaluation.ava.metric import AvaResult
from hiera_video.utils.atomic import atomic_open


def write_detections_csv(path: str, rows: Iterable[Sequence]) -> None:
    """Write (video_id, timestamp, x1, y1, x2, y2, action_id, score) rows in the official format
    (`%04d` integer seconds, boxes with 3 decimals, scores with 4), atomically."""
    with atomic_open(path, "w") as f:  # streamed: the full val set is tens of millions of rows
        for video_id, timestamp, x1, y1, x2, y2, action_id, score in rows:
            second = "%04d" % timestamp if float(timestamp).is_integer() else "%.6f" % timestamp
            f.write("%s,%s,%.3f,%.3f,%.3f,%.3f,%d,%.4f\n" % (video_id, second, x1, y1, x2, y2, action_id, score))


def save_result_json(path: str, result: AvaResult) -> None:
    """Write AvaResult.to_json_dict() as JSON, atomically."""
    with atomic_open(path, "w") as f:
        f.write(json.dumps(result.to_json_dict(), indent=2) + "\n")
