"""Video classification (Kinetics, SSv2): soft-target cross-entropy, centre-view validation, multi-view test."""
from __future__ import annotations

import contextlib
import csv
import logging
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hiera_video.config import register_choices
from hiera_video.data.mixup import MixupCutmix
from hiera_video.evaluation.classification import (
    ENSEMBLE_METHODS,
    MultiViewAggregator,
    topk_error_rates,
    topk_errors,
)
from hiera_video.evaluation.score_file import SCORES_FILE, VideoScores, save_test_scores
from hiera_video.tasks.base import Task
from hiera_video.tasks.class_names import class_names
from hiera_video.utils import distributed as du
from hiera_video.utils.atomic import atomic_open
from hiera_video.utils.progress import ProgressReporter

logger = logging.getLogger(__name__)
register_choices("TEST.ENSEMBLE_METHOD", ENSEMBLE_METHODS)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution over classes (mixed and/or smoothed labels)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot targets with `smoothing` spread uniformly over all classes."""
    off = smoothing / num_classes
    return torch.full((labels.shape[0], num_classes), off, device=labels.device).scatter_(
        1, labels.view(-1, 1), 1.0 - smoothing + off)


def view_scores(model: nn.Module, clips: torch.Tensor, device: torch.device,
                autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """Class probabilities [N, num_classes] (float32, on the CPU) of clips [N,C,T,H,W]: the per-view scores the
    multi-view test ensembles, shared with hiera_video.inference so a prediction equals the test's."""
    with autocast:
        return model(clips.to(device, non_blocking=True)).float().softmax(-1).cpu()


class ClassificationTask(Task):
    """Video classification: soft-target cross-entropy (mixup, smoothing), top-k errors, multi-view test."""

    tracked_minima = ("top1_err", "top5_err")

    def __init__(self, cfg, ctx) -> None:
        super().__init__(cfg, ctx)
        self.num_classes = cfg.MODEL.NUM_CLASSES
        self.mixup = MixupCutmix(
            mixup_alpha=cfg.MIXUP.ALPHA, cutmix_alpha=cfg.MIXUP.CUTMIX_ALPHA, prob=cfg.MIXUP.PROB,
            switch_prob=cfg.MIXUP.SWITCH_PROB, label_smoothing=cfg.MIXUP.LABEL_SMOOTH_VALUE,
            num_classes=self.num_classes) if cfg.MIXUP.ENABLE else None
        self.class_names = class_names(cfg)  # resolved (and checked) before any training

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        video, labels = batch["video"], batch["label"]
        if self.mixup is not None:
            video, targets = self.mixup(video, labels)
        else:
            targets = smoothed_one_hot(labels, self.num_classes, self.cfg.MIXUP.LABEL_SMOOTH_VALUE)
        logits = model(video)
        loss = soft_target_cross_entropy(logits, targets)
        if self.mixup is not None:  # errors against mixed targets mean nothing
            return loss, {}
        top1, top5 = topk_error_rates(logits.detach(), labels, (1, 5))
        return loss, {"top1_err": top1, "top5_err": top5}

    @torch.no_grad()
    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Top-1/top-5 error (%) on one deterministic centre clip per validation video (videos that fail to decode
        are left out, named and counted against DATA.MAX_BAD_FRACTION)."""
        model.eval()
        loader = self.loader("val")
        totals = torch.zeros(3, dtype=torch.float64)  # top1 errors, top5 errors, clips
        bad: set[Any] = set()
        for batch in self.evaluation_batches(loader):
            bad.update(batch["bad_files"])
            with self.autocast():
                logits = model(batch["video"].to(self.ctx.device, non_blocking=True)).float().cpu()
            top1, top5 = topk_errors(logits, batch["label"], (1, 5))
            n = logits.shape[0]
            totals += torch.tensor([top1 * n, top5 * n, n], dtype=torch.float64)
        totals = torch.tensor(du.all_gather_object(totals.tolist()), dtype=torch.float64).sum(0)
        model.train()
        bad_count = self.count_bad_videos(bad, "val")
        return {"top1_err": float(totals[0] / totals[2]), "top5_err": float(totals[1] / totals[2]),
                "num_clips": int(totals[2]), "bad_videos": bad_count}

    @torch.no_grad()
    def test(self, model: nn.Module) -> dict[str, Any]:
        """Multi-view test: softmax scores of all views summed (or maxed) per video; writes per-video results
        (test_predictions.csv with class names, test_scores.npz with every class's score)."""
        cfg = self.cfg
        model.eval()
        loader = self.loader("test")
        dataset = loader.dataset
        aggregator = MultiViewAggregator(len(dataset), self.num_classes, ensemble=cfg.TEST.ENSEMBLE_METHOD,
                                         num_views=cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS)
        progress = ProgressReporter(len(loader), "test", enabled=self.ctx.is_main)
        bad: set[str] = set()
        for batch in self.evaluation_batches(loader):
            scores = view_scores(model, batch["video"], self.ctx.device, self.autocast())
            aggregator.update(scores, batch["index"], batch["view"], labels=batch["label"])
            bad.update(batch["bad_files"])
            progress.update(1)
        progress.close()
        # Only rank 0 writes the results: the other ranks' scores go there, not to every rank.
        gathered = du.gather_object((aggregator.state(), bad))
        if gathered is None:
            return {}
        for rank, (other, _) in enumerate(gathered):
            if rank != self.ctx.rank:
                aggregator.merge(other)
        bad_all = sorted(set().union(*(part for _, part in gathered)))
        for entry in bad_all:
            logger.warning("Test video failed to decode: %s", entry)
        results = aggregator.finalize()
        results["bad_videos"] = len(bad_all)
        self._write_predictions(aggregator, dataset)
        self._write_scores(aggregator, dataset)
        return results

    def _display_names(self) -> list[str]:
        """The class names, or the class indices as text when the config names no classes."""
        return self.class_names or [str(index) for index in range(self.num_classes)]

    def _write_predictions(self, aggregator: MultiViewAggregator, dataset) -> None:
        path = self.output_path(self.cfg.TEST.SAVE_RESULTS_PATH or "test_predictions.csv")
        names = self._display_names()
        with atomic_open(path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["video", "label", "label_name", "pred_top5", "pred_names_top5", "score_top5",
                             "num_views"])
            for row in aggregator.per_video_predictions():
                label = row["label"]
                writer.writerow([dataset.records[row["video"]].video_id, label, names[label] if label >= 0 else "",
                                 " ".join(map(str, row["top5"])), "|".join(names[c] for c in row["top5"]),
                                 " ".join(f"{s:.5f}" for s in row["scores"]), row["num_views"]])
        logger.info("Wrote per-video predictions to %s", path)

    def _write_scores(self, aggregator: MultiViewAggregator, dataset) -> None:
        videos, scores = aggregator.video_scores()
        records = [dataset.records[video] for video in videos.tolist()]
        path = self.output_path(SCORES_FILE)
        save_test_scores(path, VideoScores(
            video_ids=np.array([record.video_id for record in records], dtype=str),
            paths=np.array([_video_path(record.source) for record in records], dtype=str),
            labels=aggregator.labels[videos].numpy(), scores=scores.numpy(),
            num_views=aggregator.view_counts[videos].numpy(), class_names=np.array(self._display_names(), dtype=str),
            dataset=self.cfg.TEST.DATASET, ensemble=aggregator.ensemble))
        logger.info("Wrote the scores of %d videos x %d classes to %s", len(records), self.num_classes, path)


def _video_path(source: str | tuple[str, ...]) -> str:
    """A video file, or the folder of a video's frame files."""
    return source if isinstance(source, str) else os.path.dirname(source[0])
