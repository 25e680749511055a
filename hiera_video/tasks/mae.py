"""Masked-autoencoder pretraining: the loss is the model's reconstruction error on masked mask units."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hiera_video.tasks.base import Task
from hiera_video.utils import distributed as du


class MaeTask(Task):
    """Masked-autoencoder pretraining: the model's own reconstruction loss, on fixed masks for evaluation."""

    tracked_minima = ("loss",)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = model(batch["video"], mask_ratio=self.cfg.MAE.MASK_RATIO)[0]
        return loss, {}

    @torch.no_grad()
    def _mean_loss(self, model: nn.Module, split: str) -> dict[str, Any]:
        """Reconstruction loss with masks drawn from a fixed seed, so epochs compare like with like (videos that fail
        to decode are left out, named and counted against DATA.MAX_BAD_FRACTION)."""
        model.eval()
        total, clips = 0.0, 0
        bad: set[Any] = set()
        with torch.random.fork_rng(devices=[self.ctx.device] if self.ctx.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.RNG_SEED + self.ctx.rank)
            for batch in self.evaluation_batches(self.loader(split)):
                bad.update(batch["bad_files"])
                video = batch["video"].to(self.ctx.device, non_blocking=True)
                with self.autocast():
                    total += float(model(video, mask_ratio=self.cfg.MAE.MASK_RATIO)[0]) * video.shape[0]
                clips += video.shape[0]
        model.train()
        sums = torch.tensor(du.all_gather_object([total, clips]), dtype=torch.float64).sum(0)
        return {"loss": float(sums[0] / max(sums[1], 1)), "num_clips": int(sums[1]),
                "bad_videos": self.count_bad_videos(bad, split)}

    def validate(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return self._mean_loss(model, "val")

    def test(self, model: nn.Module) -> dict[str, Any]:
        return self._mean_loss(model, "test")
