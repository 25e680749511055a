"""Masked autoencoder with a Hiera encoder (video and image), compatible with the official `mae_hiera_*` files.

Data flow of `forward(x, mask_ratio, mask)`:
  1. a random mask per mask unit (True = visible; video unit = 1 token-frame x 8x8 tokens = 2 frames x 32x32 px);
  2. the encoder runs on the visible units only (masked pixels are zeroed before the stem);
  3. multi-scale fusion: the outputs of the first `q_pool` stages are pooled per unit to the last stage's resolution
     by strided convs and summed with the last stage's output, then `encoder_norm`;
  4. decoder: embed, fill masked units with `mask_token`, un-window to the natural token order, add
     `decoder_pos_embed`, global blocks, norm, linear prediction of one target per final-resolution token;
  5. MSE between prediction and target on the masked tokens only.

Targets (`target=`):
  "pixel": official semantics. Video uses only the first frame of each temporal token ("time-strided"); every
           pred_stride x pred_stride patch is flattened in (py, px, c) order for video and (c, py, px) for images,
           then normalised per patch with its mean and unbiased variance (eps 1e-6).
  "hog":   HOG of the same (time-strided) frames per patch, see hiera_video.models.hog.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from hiera_video.models.hiera import (
    IMAGE_CONFIG,
    IMAGE_SIZES,
    LAYER_NORM_EPS,
    VIDEO_CONFIG,
    VIDEO_SIZES,
    HieraBackbone,
    HieraBlock,
    true_count,
    true_indices,
    unwindow_units,
)
from hiera_video.models.hog import hog_patch_targets, hog_target_dim
from hiera_video.models.registry import create_model, register_model

TARGETS = ("pixel", "hog")
PIXEL_NORM_EPS = 1e-6


def pixel_patches(images: torch.Tensor, patch_size: tuple[int, int], channels_last: bool) -> torch.Tensor:
    """[N, C, H, W] -> [N, (H / ph) * (W / pw), ph * pw * C], patches row-major, each flattened in (py, px, c)
    order if channels_last else (c, py, px)."""
    n, c, height, width = images.shape
    ph, pw = patch_size
    x = images.reshape(n, c, height // ph, ph, width // pw, pw)
    x = x.permute(0, 2, 4, 3, 5, 1) if channels_last else x.permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (height // ph) * (width // pw), -1)


def normalise_patches(patches: torch.Tensor) -> torch.Tensor:
    """Per-patch (last dim) standardisation with the unbiased variance, as the official MAE targets."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + PIXEL_NORM_EPS) ** 0.5


def _apply_fusion_head(head: nn.Module, units: torch.Tensor) -> torch.Tensor:
    """Apply a conv to every unit's feature map: [B, K, *unit_shape, C] -> [B, K, *unit_shape', C']."""
    if isinstance(head, nn.Identity):
        return units
    batch, num_units = units.shape[:2]
    out = head(units.flatten(0, 1).movedim(-1, 1))
    return out.movedim(1, -1).unflatten(0, (batch, num_units))


class MaskedAutoencoderHiera(HieraBackbone):
    """Hiera MAE. Architecture arguments as HieraBackbone (q_pool is 2 in the released models), plus the decoder
    (width, depth, heads) and the reconstruction `target` ("pixel" or "hog").

    `act_checkpoint` (a backbone argument) also recomputes the decoder blocks in backward.

    Shape attributes besides the backbone's: pred_stride (pixels per prediction token per axis; predictions cover
    only the first frame of a temporal token), tokens_shape_final (prediction token grid), unit_shape_final
    (tokens per mask unit at the last stage), target_dim (values predicted per token).
    """

    def __init__(
        self,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        target: str = "pixel",
        **backbone,
    ):
        super().__init__(**backbone)
        if target not in TARGETS:
            raise ValueError(f"target={target!r} must be one of {TARGETS}")
        self.target = target
        ndim = len(self.input_size)
        pools = self.q_pool
        self.unit_shape_final = tuple(m // s**pools for m, s in zip(self.mask_unit_size, self.q_stride))
        self.tokens_shape_final = self.stage_shapes[-1]
        self.pred_stride = self.stage_strides[-1]
        patch = self.pred_stride[-2:]
        if target == "pixel":
            self.target_dim = math.prod(patch) * self.in_chans
        else:
            self.target_dim = hog_target_dim(patch, self.in_chans)

        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_shape_final), decoder_embed_dim))
        self.encoder_norm = nn.LayerNorm(self.out_dim, eps=LAYER_NORM_EPS)
        conv: Callable[..., nn.Module] = {2: nn.Conv2d, 3: nn.Conv3d}[ndim]
        heads: list[nn.Module] = []
        for stage in range(pools):
            unit_shape = [m // s**stage for m, s in zip(self.mask_unit_size, self.q_stride)]
            kernel = tuple(u // f for u, f in zip(unit_shape, self.unit_shape_final))
            heads.append(conv(self.stage_dims[stage], self.out_dim, kernel_size=kernel, stride=kernel))
        heads.append(nn.Identity())  # the last stage is already at the final resolution
        self.multi_scale_fusion_heads = nn.ModuleList(heads)

        self.decoder_embed = nn.Linear(self.out_dim, decoder_embed_dim)
        self.decoder_blocks = nn.ModuleList(
            HieraBlock(decoder_embed_dim, decoder_embed_dim, decoder_num_heads, mlp_ratio=self.mlp_ratio,
                       act_checkpoint=self.act_checkpoint)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.target_dim)
        self._init_mae_weights()

    def _init_mae_weights(self) -> None:
        """Official MAE init: xavier-uniform Linear (bias 0), LayerNorm 1/0, stem as a flattened Linear, trunc-normal
        mask token and decoder position embedding; fusion convs keep PyTorch's default."""
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        stem = self.patch_embed.proj.weight  # channels-last: initialise its [out, in * kernel] matrix out of place
        with torch.no_grad():
            stem.copy_(nn.init.xavier_uniform_(stem.new_empty(stem.shape[0], stem[0].numel())).view_as(stem))

    def forward_encoder(
        self, x: torch.Tensor, mask_ratio: float = 0.9, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the visible units. Returns (latent [B, K, *unit_shape_final, C], mask [B, num_mask_units]).

        Without `mask`, a random one keeping num_kept_units(mask_ratio) units: the step has static shapes and
        never reads a tensor on the host. A given mask is counted on the host (mask_ratio is then unused)."""
        num_keep = None
        if mask is None:
            mask = self.random_mask(x.shape[0], mask_ratio, device=x.device)
            num_keep = self.num_kept_units(mask_ratio)
        _, stage_maps = self.forward_tokens(x, mask, return_intermediates=True, num_keep=num_keep)
        fused_inputs = stage_maps[: self.q_pool] + stage_maps[-1:]
        latent = sum(_apply_fusion_head(h, m) for h, m in zip(self.multi_scale_fusion_heads, fused_inputs))
        return self.encoder_norm(latent), mask

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode to per-token predictions. Returns (pred [B, N_final, target_dim], visible [B, N_final] bool),
        both in natural token order. `latent` holds the K units `mask` keeps, in ascending unit order."""
        x = self.decoder_embed(latent)
        batch, dim = x.shape[0], x.shape[-1]
        ndim = len(self.unit_shape_final)
        full_shape = (batch, self.num_mask_units, *self.unit_shape_final, dim)
        unit_visible = mask.view(batch, self.num_mask_units, *([1] * (ndim + 1)))
        tokens = self.mask_token.to(x.dtype).view(1, 1, *([1] * ndim), dim).expand(full_shape)
        # The visible units go to their positions by index (K is latent's static size), not by mask: no sync.
        kept = true_indices(mask, x.shape[1]).view(batch, -1, *([1] * (ndim + 1))).expand_as(x)
        tokens = tokens.scatter(1, kept, x)
        tokens = unwindow_units(tokens, self.mask_spatial_shape).flatten(1, -2)
        visible = unwindow_units(unit_visible.expand(*full_shape[:-1], 1), self.mask_spatial_shape)
        x = tokens + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x)), visible.reshape(batch, -1)

    def target_frames(self, x: torch.Tensor) -> torch.Tensor:
        """The frames the targets are computed on, [B, C, T', H, W]: the first frame of each temporal token for
        video ("time-strided"), the image itself (T' = 1) for images."""
        return x[:, :, :: self.pred_stride[0]] if len(self.input_size) == 3 else x.unsqueeze(2)

    def _target_patches(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw pixel patches [B, T' * patches per frame, target_dim] of `target_frames`, in prediction order."""
        images = frames.transpose(1, 2).flatten(0, 1)
        patches = pixel_patches(images, self.pred_stride[-2:], channels_last=len(self.input_size) == 3)
        return patches.reshape(frames.shape[0], -1, patches.shape[-1])

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction target of every prediction token: [B, N_final, target_dim] (natural token order)."""
        frames = self.target_frames(x)
        if self.target == "pixel":
            return normalise_patches(self._target_patches(frames))
        per_image = hog_patch_targets(frames.transpose(1, 2).flatten(0, 1), self.pred_stride[-2:])
        return per_image.reshape(frames.shape[0], -1, per_image.shape[-1])

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixel-space view of a reconstruction (pixel target only), for visualisation.

        Returns (frames, masked, reconstruction), each [B, T', C, H, W] in the input's normalised units, where T'
        are the target frames (the first of each temporal token): the input, the input with hidden patches zeroed,
        and the input with hidden patches replaced by the predictions, un-normalised with each patch's own mean
        and variance (the targets are per-patch normalised, so that is the scale they were predicted in).
        """
        if self.target != "pixel":
            raise ValueError(f"only the pixel target can be shown as pixels; this model predicts {self.target!r}")
        latent, mask = self.forward_encoder(x, 0.0, mask)
        pred, visible = self.forward_decoder(latent, mask)
        frames = self.target_frames(x)
        batch, channels, num_frames, height, width = frames.shape
        patches = self._target_patches(frames)
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + PIXEL_NORM_EPS) ** 0.5
        shown = visible.unsqueeze(-1)
        masked = torch.where(shown, patches, torch.zeros_like(patches))
        reconstruction = torch.where(shown, patches, pred * std + mean)

        def to_frames(p: torch.Tensor) -> torch.Tensor:
            ph, pw = self.pred_stride[-2:]
            if len(self.input_size) == 3:  # patches flattened (py, px, c)
                grid = p.reshape(batch, num_frames, height // ph, width // pw, ph, pw, channels)
                return grid.permute(0, 1, 6, 2, 4, 3, 5).reshape(batch, num_frames, channels, height, width)
            grid = p.reshape(batch, num_frames, height // ph, width // pw, channels, ph, pw)  # (c, py, px)
            return grid.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, num_frames, channels, height, width)

        return frames.transpose(1, 2), to_frames(masked), to_frames(reconstruction)

    def forward_loss(
        self, x: torch.Tensor, pred: torch.Tensor, masked: torch.Tensor, num_masked: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MSE on the masked tokens (`masked` [B, N_final] bool, the same number in every sample: `num_masked`,
        else counted on the host). Returns (loss, pred [M, D], label [M, D]) with M = masked tokens over the batch
        in (sample, natural token) order."""
        count = true_count(masked, "masked tokens") if num_masked is None else num_masked
        index = true_indices(masked, count).unsqueeze(-1).expand(-1, -1, pred.shape[-1])
        label = self.targets(x).gather(1, index).flatten(0, 1)
        pred = pred.gather(1, index).flatten(0, 1)
        return F.mse_loss(pred, label), pred, label

    def forward(
        self,
        x: torch.Tensor | list[torch.Tensor],
        mask_ratio: float = 0.9,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, in_chans, *input_size]; mask: optional bool [B, num_mask_units], True = visible (else a random
        mask hiding `mask_ratio` of the units). Returns (loss, pred, label, mask) like the official model."""
        if isinstance(x, (list, tuple)):
            x = x[0]
        latent, mask = self.forward_encoder(x, mask_ratio, mask)
        pred, visible = self.forward_decoder(latent, mask)
        # Each of the U - K hidden units holds prod(unit_shape_final) prediction tokens.
        num_masked = (self.num_mask_units - latent.shape[1]) * math.prod(self.unit_shape_final)
        loss, pred, label = self.forward_loss(x, pred, ~visible, num_masked)
        return loss, pred, label, mask


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["tiny"], q_pool=2)
def mae_hiera_tiny_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-T image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_tiny_224", **overrides))


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["small"], q_pool=2)
def mae_hiera_small_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-S image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_small_224", **overrides))


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["base"], q_pool=2)
def mae_hiera_base_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-B image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_base_224", **overrides))


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["base_plus"], q_pool=2)
def mae_hiera_base_plus_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-B+ image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_base_plus_224", **overrides))


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["large"], q_pool=2)
def mae_hiera_large_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-L image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_large_224", **overrides))


@register_model(MaskedAutoencoderHiera, **IMAGE_CONFIG, **IMAGE_SIZES["huge"], q_pool=2)
def mae_hiera_huge_224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-H image MAE, 224x224 input."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_huge_224", **overrides))


@register_model(MaskedAutoencoderHiera, **VIDEO_CONFIG, **VIDEO_SIZES["base"], q_pool=2)
def mae_hiera_base_16x224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-B video MAE, 16 frames of 224x224."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_base_16x224", **overrides))


@register_model(MaskedAutoencoderHiera, **VIDEO_CONFIG, **VIDEO_SIZES["base_plus"], q_pool=2)
def mae_hiera_base_plus_16x224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-B+ video MAE, 16 frames of 224x224."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_base_plus_16x224", **overrides))


@register_model(MaskedAutoencoderHiera, **VIDEO_CONFIG, **VIDEO_SIZES["large"], q_pool=2)
def mae_hiera_large_16x224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-L video MAE, 16 frames of 224x224."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_large_16x224", **overrides))


@register_model(MaskedAutoencoderHiera, **VIDEO_CONFIG, **VIDEO_SIZES["huge"], q_pool=2)
def mae_hiera_huge_16x224(**overrides: Any) -> MaskedAutoencoderHiera:
    """Hiera-H video MAE, 16 frames of 224x224."""
    return cast(MaskedAutoencoderHiera, create_model("mae_hiera_huge_16x224", **overrides))
