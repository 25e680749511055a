"""AVA action detection: per-box multi-label actions, scored by frame-mAP@0.5IoU.

Training: binary cross-entropy with logits over MODEL.NUM_CLASSES (80, or the classes of AVA.CLASS_SUBSET)
multi-hot targets per ground-truth box. Evaluation: sigmoid scores of every detected person box for every class of
the evaluated label map (AVA.CLASS_SUBSET, else AVA.LABEL_MAP_FILE), written with the original class ids as the
official `video,second,x1,y1,x2,y2,action,score` CSV on rank 0 (test: OUTPUT_DIR/detections.csv, validation:
OUTPUT_DIR/detections_val.csv) and scored from that file with hiera_video.evaluation.ava, so the mAP is exactly
what tools/ava_eval.py reports on it with that label map. Validation scores every 4th second unless
AVA.FULL_TEST_ON_VAL, against the ground truth of those seconds only (PySlowFast's "mini" ground truth). Ground
truth outside AVA.KEYFRAME_RANGE, which the dataset has no clips for, is not scored (reported once).
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hiera_video.data.ava import VAL_SECOND_STEP, ActionClasses, KeyframeFailure, evaluated_labelmap, keyframe_range
from hiera_video.evaluation.ava.metric import AvaResult, evaluate_frame_map
from hiera_video.evaluation.ava.output import save_result_json, write_detections_csv
from hiera_video.evaluation.ava.readers import read_detections, read_exclusions, read_groundtruth, read_labelmap
from hiera_video.models.build import build_detector
from hiera_video.tasks.base import Task
from hiera_video.utils import distributed as du
from hiera_video.utils.progress import ProgressReporter

logger = logging.getLogger(__name__)


def action_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over boxes x classes, in float32; 0 (with a graph) without boxes."""
    total = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="sum")
    return total / max(targets.numel(), 1)


def keyframe_second(key: str) -> float:
    """The second of an evaluator keyframe key `video,second`."""
    return float(key.rsplit(",", 1)[1])


def log_failed_keyframes(split: str, failures: list[KeyframeFailure]) -> None:
    """One warning per video (not per keyframe) for keyframes that failed to decode: a missing or broken video
    has hundreds."""
    by_video: dict[str, list[KeyframeFailure]] = {}
    for failure in failures:
        by_video.setdefault(failure.video_id, []).append(failure)
    for video, entries in by_video.items():
        more = f"; {len(entries) - 1} more like it" if len(entries) > 1 else ""
        logger.warning("AVA %s: %d keyframe%s of %s failed to decode (no detections for them): %s%s", split,
                       len(entries), "s" if len(entries) > 1 else "", video, entries[0], more)


class DetectionTask(Task):
    """AVA action detection: BCE per box and action; frame-mAP of the written detections file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reported_ranges: set[str] = set()  # ground-truth files whose rows outside the range were reported

    def _annotation(self, name: str) -> str:
        return os.path.join(self.cfg.AVA.ANNOTATION_DIR, name)

    def build_model(self) -> nn.Module:
        return build_detector(self.cfg)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["video"], batch["boxes"], batch["box_batch_idx"])
        return action_loss(logits, batch["labels"]), {}

    @torch.no_grad()
    def _predict(self, model: nn.Module, split: str, columns: list[int]
                 ) -> tuple[dict[str, Any], list[KeyframeFailure]]:
        """This rank's predictions: keyframe index [N], normalised box [N, 4] and sigmoid scores of the model outputs
        `columns` [N, len(columns)] per detected box, and the keyframes that failed to decode."""
        model.eval()
        loader = self.loader(split)
        progress = ProgressReporter(len(loader), split, enabled=self.ctx.is_main)
        column_index = torch.tensor(columns)
        parts: dict[str, list[torch.Tensor]] = {"index": [], "boxes": [], "scores": []}
        bad: list[KeyframeFailure] = []
        for batch in self.evaluation_batches(loader):
            bad.extend(batch["bad_files"])
            progress.update(1)
            if not len(batch["boxes"]):
                continue
            device = self.ctx.device
            with self.autocast():
                logits = model(batch["video"].to(device, non_blocking=True), batch["boxes"].to(device),
                               batch["box_batch_idx"].to(device))
            parts["scores"].append(logits.float().sigmoid().cpu()[:, column_index])
            parts["boxes"].append(batch["source_boxes"])
            parts["index"].append(batch["index"][batch["box_batch_idx"]])
        progress.close()
        model.train()
        empty = {"index": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4),
                 "scores": torch.zeros(0, len(columns))}
        return {k: torch.cat(v).numpy() if v else empty[k].numpy() for k, v in parts.items()}, bad

    def _detection_rows(self, predictions: list[dict[str, Any]], split: str, class_ids: list[int]):
        """Official CSV rows (video, second, x1, y1, x2, y2, action, score), keyframes in dataset order."""
        index = np.concatenate([p["index"] for p in predictions])
        boxes = np.concatenate([p["boxes"] for p in predictions])
        scores = np.concatenate([p["scores"] for p in predictions])
        keyframes = self.loader(split).dataset.keyframes
        for row in np.argsort(index, kind="stable"):  # each rank's boxes keep their order
            keyframe = keyframes[index[row]]
            x1, y1, x2, y2 = boxes[row].tolist()
            for class_id, score in zip(class_ids, scores[row].tolist()):
                yield keyframe.video_id, keyframe.second, x1, y1, x2, y2, class_id, score

    def _evaluate(self, model: nn.Module, split: str, csv_name: str) -> dict[str, Any]:
        """Detections of `split` gathered on rank 0, written to OUTPUT_DIR/csv_name and scored; stats on all ranks."""
        cfg = self.cfg
        labelmap_path = evaluated_labelmap(cfg)
        labelmap, class_ids = read_labelmap(labelmap_path)
        evaluated = sorted(class_ids)
        predictions, bad = self._predict(model, split, ActionClasses.from_cfg(cfg).columns(evaluated, labelmap_path))
        gathered = du.gather_object((predictions, bad))  # to rank 0 only, which writes and scores them
        stats = None
        if gathered is not None:
            all_bad = sorted({entry for _, part in gathered for entry in part})
            log_failed_keyframes(split, all_bad)
            path = self.output_path(csv_name)
            write_detections_csv(path, self._detection_rows([p for p, _ in gathered], split, evaluated))
            num_boxes = sum(len(p["index"]) for p, _ in gathered)
            logger.info("Wrote the detections of %d boxes x %d classes to %s", num_boxes, len(class_ids), path)
            result = self._score(path, labelmap, class_ids, subsampled=split == "val" and not cfg.AVA.FULL_TEST_ON_VAL)
            if split == "test":
                save_result_json(self.output_path("ava_result.json"), result)
            stats = {"map": result.map, "num_keyframes": len(self.loader(split).dataset), "num_boxes": num_boxes,
                     "bad_videos": len(all_bad)}
        return du.broadcast_object(stats)

    def _score(self, detections: str, labelmap: list[dict], class_ids: set[int], subsampled: bool) -> AvaResult:
        """Frame-mAP of the detections file over ground truth inside AVA.KEYFRAME_RANGE; with `subsampled`, only
        ground truth of every 4th second counts."""
        ava = self.cfg.AVA
        groundtruth_path = self._annotation(ava.GROUNDTRUTH_FILE)
        groundtruth = read_groundtruth(groundtruth_path, class_ids)
        excluded = read_exclusions(self._annotation(ava.EXCLUSION_FILE)) if ava.EXCLUSION_FILE else set()
        first, last = keyframe_range(self.cfg)
        outside = {key for key in groundtruth.keys if not first <= keyframe_second(key) <= last}
        if outside and groundtruth_path not in self._reported_ranges:
            self._reported_ranges.add(groundtruth_path)
            logger.warning("%s: %d keyframes outside AVA.KEYFRAME_RANGE [%d, %d] are not scored (the dataset has no "
                           "clips for them): %s%s", groundtruth_path, len(outside), first, last,
                           ", ".join(sorted(outside)[:5]), " ..." if len(outside) > 5 else "")
        excluded |= outside
        if subsampled:
            excluded |= {key for key in groundtruth.keys if keyframe_second(key) % VAL_SECOND_STEP}
        return evaluate_frame_map(groundtruth, read_detections(detections, class_ids), labelmap, excluded)

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Frame-mAP on the validation keyframes (every 4th second unless AVA.FULL_TEST_ON_VAL)."""
        return self._evaluate(model, "val", "detections_val.csv")

    def test(self, model: nn.Module) -> dict[str, Any]:
        """Frame-mAP on every validation keyframe; writes detections.csv and ava_result.json (per-class AP)."""
        return self._evaluate(model, "test", "detections.csv")
