"""Detection heads: per-box action logits from a Hiera feature map (AVA), and the backbone + head model.

The ROI head follows PySlowFast's ResNetRoIHead / the Hiera paper (App. A.1): the stage's feature map is averaged
over time, RoIAlign (torchvision, aligned=True) pools each person box, a spatial max-pool gives one vector per box,
then dropout and a linear layer. It returns logits; the loss applies the sigmoid (BCE with logits, AMP-safe).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align

from hiera_video.models.hiera import LAYER_NORM_EPS, HieraBackbone

# PySlowFast initialises its detection classifier with N(0, 0.01) weights and zero biases.
HEAD_INIT_STD = 0.01


class RoIActionHead(nn.Module):
    """Feature map [B, T, H, W, C] + boxes [N, 4] (x1, y1, x2, y2 in input pixels) of sample box_batch_idx [N]
    -> logits [N, num_classes].

    `spatial_stride` is the input pixels per feature-map cell, so boxes map to the map at 1 / spatial_stride.
    """

    def __init__(self, dim: int, num_classes: int, spatial_stride: int, resolution: int = 7, dropout: float = 0.0):
        super().__init__()
        if resolution < 1:
            raise ValueError(f"RoIAlign resolution must be >= 1, got {resolution}")
        self.spatial_scale = 1.0 / spatial_stride
        self.resolution = resolution
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)
        nn.init.normal_(self.projection.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.projection.bias)

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, box_batch_idx: torch.Tensor) -> torch.Tensor:
        if features.dim() != 5:
            raise ValueError(f"features must be [B, T, H, W, C], got {list(features.shape)}")
        if boxes.dim() != 2 or boxes.shape[1] != 4 or box_batch_idx.shape != boxes.shape[:1]:
            raise ValueError(f"boxes must be [N, 4] with box_batch_idx [N], got {list(boxes.shape)} and "
                             f"{list(box_batch_idx.shape)}")
        # float32 pooling: bfloat16 box coordinates would be off by up to a pixel at 224.
        spatial = features.float().mean(dim=1).permute(0, 3, 1, 2)  # [B, C, H, W]
        rois = torch.cat([box_batch_idx.to(spatial)[:, None], boxes.to(spatial)], dim=1)
        pooled = roi_align(spatial, rois, output_size=self.resolution, spatial_scale=self.spatial_scale,
                           sampling_ratio=0, aligned=True)
        return self.projection(self.dropout(pooled.amax(dim=(2, 3))))


class HieraActionDetector(HieraBackbone):
    """Hiera video backbone + ROI action head: (clip [B, 3, T, H, W], boxes, box_batch_idx) -> logits [N, C].

    The backbone's parameters keep their names (`blocks.*`, `patch_embed.*`, `pos_embed_*`), so a Kinetics (or MAE)
    checkpoint loads into them with `load_pretrained`; the file's classifier (`head.*`) is reported unused. The head
    reads stage `head_stage` (-1: the last, as in the paper); blocks after it are dropped, since they would get no
    gradient. The stage's map is layer-normalised first: for the last stage that norm is named `norm` like the
    classifier's, so Kinetics weights initialise it; an earlier stage has its own `feature_norm`.
    """

    def __init__(self, num_classes: int = 80, head_stage: int = -1, roi_resolution: int = 7,
                 head_dropout: float = 0.0, **backbone):
        super().__init__(**backbone)
        if len(self.input_size) != 3:
            raise ValueError(f"action detection needs a video backbone (input_size (T, H, W)), got {self.input_size}")
        num_stages = len(self.stage_ends)
        if not -num_stages <= head_stage < num_stages:
            raise ValueError(f"head_stage={head_stage} must index one of the {num_stages} stages")
        self.head_stage = head_stage % num_stages
        del self.blocks[self.stage_ends[self.head_stage] + 1:]
        self.stage_ends = self.stage_ends[:self.head_stage + 1]
        _, stride_h, stride_w = self.stage_strides[self.head_stage]
        if stride_h != stride_w:
            raise ValueError(f"stage {self.head_stage} has spatial strides {stride_h} x {stride_w}; RoIAlign needs "
                             "one scale")
        dim = self.out_dim = self.stage_dims[self.head_stage]
        self.num_classes = num_classes
        self.norm_name = "norm" if self.head_stage == num_stages - 1 else "feature_norm"
        self.add_module(self.norm_name, nn.LayerNorm(dim, eps=LAYER_NORM_EPS))
        self.roi_head = RoIActionHead(dim, num_classes, spatial_stride=stride_h, resolution=roi_resolution,
                                      dropout=head_dropout)

    def whole_clip_boxes(self, batch_size: int, device: torch.device | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """One box covering the whole input per sample: (boxes [B, 4], box_batch_idx [B])."""
        _, height, width = self.input_size
        boxes = torch.tensor([[0.0, 0.0, float(width), float(height)]], device=device).expand(batch_size, 4)
        return boxes, torch.arange(batch_size, device=device)

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None,
                box_batch_idx: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, 3, *input_size]; boxes [N, 4] (x1, y1, x2, y2) in pixels of x, box_batch_idx [N] their sample.
        Without boxes, one box per clip covers the whole input (e.g. for complexity counts)."""
        if boxes is None:
            boxes, box_batch_idx = self.whole_clip_boxes(x.shape[0], x.device)
        elif box_batch_idx is None:
            raise ValueError("boxes need box_batch_idx (the sample of each box)")
        _, feature_maps = self.forward_tokens(x, return_intermediates=True)
        features = getattr(self, self.norm_name)(feature_maps[self.head_stage])
        return self.roi_head(features, boxes, box_batch_idx)
