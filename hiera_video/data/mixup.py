"""Batch-level MixUp / CutMix with label smoothing for video batches [B, C, T, H, W]."""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class MixupCutmix:
    """Mix a batch of clips and turn int labels into soft targets (timm/PySlowFast semantics).

    With probability `prob` the batch is mixed: CutMix with probability `switch_prob` when both alphas are
    positive (otherwise whichever alpha is positive), MixUp otherwise. Each clip is paired with its neighbour
    in the batch (torchvision's roll by one), so the loader must shuffle. CutMix pastes one box through all
    frames. Targets are smoothed: a one-hot class gets 1 - label_smoothing + label_smoothing / num_classes.
    Randomness comes from torch's global generator (seeded per rank).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
    ):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got mixup {mixup_alpha} and cutmix {cutmix_alpha}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.prob = prob
        self.switch_prob = switch_prob if mixup_alpha > 0 and cutmix_alpha > 0 else float(cutmix_alpha > 0)
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        # v2.MixUp/CutMix accept a 5-D batch when it is wrapped as a Video; they only read the batch dim and
        # the last two (H, W), so the [B, C, T, H, W] layout is fine and the CutMix box spans every frame.
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None

    def __call__(self, video: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video float [B, C, T, H, W], labels int [B] -> (mixed video, soft targets float [B, num_classes])."""
        if video.ndim != 5 or labels.ndim != 1 or labels.shape[0] != video.shape[0]:
            raise ValueError(
                f"expected video [B, C, T, H, W] and labels [B], got {tuple(video.shape)} and {tuple(labels.shape)}"
            )
        # Checked on the CPU only: reading a GPU tensor would stall the training step, and on a GPU one_hot's
        # device-side assert stops a wrong label instead.
        if labels.device.type == "cpu" and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.min()}..{labels.max()}")
        mixer = self._pick_mixer()
        if mixer is None:
            targets = torch.nn.functional.one_hot(labels, self.num_classes).to(video.dtype)
        else:
            mixed, targets = mixer(tv_tensors.Video(video), labels)
            video, targets = mixed.as_subclass(torch.Tensor), targets.to(video.dtype)
        return video, targets * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes

    def _pick_mixer(self):
        if (self.mixup is None and self.cutmix is None) or torch.rand(()).item() >= self.prob:
            return None
        return self.cutmix if torch.rand(()).item() < self.switch_prob else self.mixup
