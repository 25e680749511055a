"""Hiera (Ryali et al. 2023) for video (3D) and images (2D).

Parameter names and shapes follow the official release (facebookresearch/hiera v0.1.4), so an official
`{"model_state": ...}` file loads strictly and gives the same outputs. Differences from the official module:
the classifier always returns logits (the official one applies a softmax in eval mode), inputs and masks are
validated with clear errors, and every derived shape a downstream module needs is exposed as an attribute.

Reading order: token-order helpers, blocks, the backbone, the classifier, named constructors.

Token order. The stem output is flattened t-major ("natural" order). `unroll_tokens` then permutes the tokens so
that (a) each q-pooling step is a max over the slowest axis of size prod(q_stride) and (b) the tokens of one mask
unit are spread with stride num_mask_units, i.e. viewing [B, N // U, U, C] groups them by unit. `reroll_tokens`
inverts the permutation for the stage outputs.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from hiera_video.models.registry import create_model, register_model

LAYER_NORM_EPS = 1e-6
# The default of set_explicit_attention_max_keys, and the environment variable that overrides it.
EXPLICIT_ATTENTION_MAX_KEYS = 256
EXPLICIT_ATTENTION_ENV = "HIERA_VIDEO_EXPLICIT_ATTENTION_MAX_KEYS"
_explicit_attention_max_keys = int(os.environ.get(EXPLICIT_ATTENTION_ENV, EXPLICIT_ATTENTION_MAX_KEYS))


def set_explicit_attention_max_keys(max_keys: int) -> None:
    """The CPU attention switch of every Hiera in this process (as timm's `set_fused_attn`).

    On the CPU, attention over at most `max_keys` keys (the mask-unit windows) is computed as explicit
    softmax(q k^T / sqrt(d)) v, over more keys with torch's scaled_dot_product_attention (flash attention), whose
    per-block overhead dominates short windows. 0 always uses SDPA; CUDA always does. The default,
    EXPLICIT_ATTENTION_MAX_KEYS (or $HIERA_VIDEO_EXPLICIT_ATTENTION_MAX_KEYS), is where the two cost the same on
    the machine of benchmarks/RESULTS.md; re-measure with benchmarks/model_speed.py on yours. Both forms give the
    same results up to floating-point rounding.
    """
    global _explicit_attention_max_keys
    if max_keys < 0:
        raise ValueError(f"max_keys must be >= 0, got {max_keys}")
    _explicit_attention_max_keys = max_keys


def use_explicit_attention(device: torch.device, num_keys: int) -> bool:
    """Whether attention over `num_keys` keys on `device` runs explicitly (see set_explicit_attention_max_keys)."""
    return device.type == "cpu" and num_keys <= _explicit_attention_max_keys


# ----------------------------------------------------------------------------------------------------------------
# Token order helpers
# ----------------------------------------------------------------------------------------------------------------


def unroll_tokens(x: torch.Tensor, grid: Sequence[int], strides: Sequence[Sequence[int]]) -> torch.Tensor:
    """Permute tokens [B, N, C] from natural (row-major `grid`) order into Hiera's unrolled order.

    Along each axis a coordinate is written, most significant first, as (unit, digit_L, ..., digit_1) in the mixed
    radix given by `strides` (level 1 = the first q-pool). The unrolled order sorts tokens by
    (digits of level 1, ..., digits of level L, unit coordinates), slowest first.
    """
    batch, num_tokens, channels = x.shape
    ndim, levels = len(grid), len(strides)
    # Lists, not generators, inside math.prod: torch.compile cannot trace a generator argument (graph break).
    units = [size // math.prod([s[d] for s in strides]) for d, size in enumerate(grid)]
    factored = []
    for d in range(ndim):
        factored += [units[d]] + [strides[level][d] for level in reversed(range(levels))]
    x = x.reshape(batch, *factored, channels)
    axis_of_unit = [1 + d * (levels + 1) for d in range(ndim)]
    order = [0]
    for level in range(levels):
        order += [axis_of_unit[d] + levels - level for d in range(ndim)]
    order += axis_of_unit + [len(factored) + 1]
    return x.permute(order).reshape(batch, num_tokens, channels)


def reroll_tokens(x: torch.Tensor, strides: Sequence[Sequence[int]], ndim: int) -> torch.Tensor:
    """Invert `unroll_tokens` inside each mask unit, for tokens whose first levels were consumed by q-pooling.

    `strides` are the levels not yet consumed. Returns [B, K, *unit_shape, C] for the K units present (all or the
    visible ones), unit_shape = prod(strides) per axis; `unwindow_units` then gives the full natural map.
    """
    batch, num_tokens, channels = x.shape
    levels = len(strides)
    digits = [s[d] for s in strides for d in range(ndim)]
    num_units = num_tokens // math.prod(digits)
    x = x.reshape(batch, *digits, num_units, channels)
    unit_axis = 1 + levels * ndim
    order = [0, unit_axis]
    for d in range(ndim):
        order += [1 + level * ndim + d for level in reversed(range(levels))]  # coarse to fine digits of axis d
    unit_shape = [math.prod([s[d] for s in strides]) for d in range(ndim)]
    return x.permute(order + [unit_axis + 1]).reshape(batch, num_units, *unit_shape, channels)


def unwindow_units(x: torch.Tensor, unit_grid: Sequence[int]) -> torch.Tensor:
    """Assemble per-unit tokens [B, U, *unit_shape, C] (U = prod(unit_grid), natural order inside a unit) into
    the natural feature map [B, *(unit_grid * unit_shape), C]."""
    ndim = len(unit_grid)
    batch, channels = x.shape[0], x.shape[-1]
    unit_shape = list(x.shape[2:-1])
    x = x.reshape(batch, *unit_grid, *unit_shape, channels)
    order = [0] + [a for d in range(ndim) for a in (1 + d, 1 + ndim + d)] + [1 + 2 * ndim]
    return x.permute(order).reshape(batch, *[u * s for u, s in zip(unit_grid, unit_shape)], channels)


def true_count(mask: torch.Tensor, what: str) -> int:
    """The number of True entries of each row of a bool [B, N] `mask`, which must be the same non-zero count in
    every row (ValueError naming `what` otherwise). Reads the mask on the host, a device sync: only for masks made
    outside the model; a training step passes the count it knows (see true_indices)."""
    counts = mask.sum(dim=1).tolist()
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ValueError(f"every sample must have the same, non-zero number of {what}; got {counts}")
    return counts[0]


def true_indices(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Positions [B, count] of the True entries of each row of a bool [B, N] `mask`, ascending (the order boolean
    indexing gives), for a mask with exactly `count` True entries per row.

    Boolean indexing has a data-dependent shape, so it copies the count to the host (`nonzero`): a sync per use.
    A stable sort has a static shape and runs on the device, so the indices feed gather/scatter in graph-safe
    (CUDA graphs, torch.compile fullgraph) training steps.
    """
    return mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :count]


def max_pool_tokens(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max over the slowest axis of size `stride` of unrolled tokens [B, N, ..., C] -> [B, N // stride, ..., C]; in
    the unrolled order this is exactly a max-pool over the q_stride neighbourhood."""
    if stride == 1:
        return x
    batch, channels = x.shape[0], x.shape[-1]
    # As a channels-last [B, C, stride, rest] image the pool is max_pool2d: vectorised over channels, with an
    # index-based backward, faster than amax/max over dim 1 in eager and compiled training (benchmarks/RESULTS.md).
    grouped = x.reshape(batch, stride, -1, channels).permute(0, 3, 1, 2)
    pooled = F.max_pool2d(grouped, kernel_size=(stride, 1))
    return pooled.permute(0, 2, 3, 1).reshape(batch, x.shape[1] // stride, *x.shape[2:])


# ----------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------


class MaskUnitAttention(nn.Module):
    """Multi-head attention inside mask units (windowed) or over all tokens (global), with optional max-pooling
    of the queries (keys and values are not pooled)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        heads: int,
        q_stride: int = 1,
        window_size: int = 0,
        use_mask_unit_attn: bool = False,
    ):
        super().__init__()
        if dim_out % heads:
            raise ValueError(f"attention width {dim_out} is not divisible by its {heads} heads")
        self.dim_out = dim_out
        self.heads = heads
        self.head_dim = dim_out // heads
        self.q_stride = q_stride
        self.window_size = window_size  # tokens per mask unit after this block's pooling
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, num_tokens, _ = x.shape
        windows = num_tokens // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        # Token p belongs to window p % windows (see unroll_tokens): split N as (tokens per window, windows).
        qkv = self.qkv(x).view(batch, num_tokens // windows, windows, 3, self.dim_out)
        # Unbinding before any permute lets backward stack the three gradients straight into qkv's layout.
        q, k, v = qkv.unbind(3)  # each [B, tokens, windows, C]
        q = max_pool_tokens(q, self.q_stride)
        # Windows act as extra heads; 4-D inputs let SDPA use its fused CPU/GPU kernels.
        q, k, v = [  # each [B, heads * windows, tokens, head_dim]
            t.unflatten(3, (self.heads, self.head_dim)).permute(0, 3, 2, 1, 4).flatten(1, 2) for t in (q, k, v)
        ]
        if use_explicit_attention(q.device, k.shape[2]):
            out = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.view(batch, self.heads, windows, -1, self.head_dim).permute(0, 3, 2, 1, 4)
        return self.proj(out.reshape(batch, -1, self.dim_out))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (names match the official checkpoints)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class HieraBlock(nn.Module):
    """Pre-norm transformer block. A block that changes the width projects the *normalised* input for the
    residual (`proj`), and a q-pooling block max-pools that residual like the queries.

    `act_checkpoint`: in training (with gradients), keep only the block's input and recompute its activations in
    backward (non-reentrant torch.utils.checkpoint, which restores the RNG state, so drop path draws the same).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        q_stride: int = 1,
        window_size: int = 0,
        use_mask_unit_attn: bool = False,
        act_checkpoint: bool = False,
    ):
        super().__init__()
        self.act_checkpoint = act_checkpoint
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = MaskUnitAttention(dim, dim_out, heads, q_stride, window_size, use_mask_unit_attn)
        self.norm2 = nn.LayerNorm(dim_out, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio))
        # One module serves both residual branches (each call draws its own per-sample decision).
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.proj is not None:
            x = self.proj(x_norm)
        x = max_pool_tokens(x, self.attn.q_stride)
        x = x + self.drop_path(self.attn(x_norm))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv2d/Conv3d stem; masked pixels are zeroed first so overlapping kernels cannot leak them."""

    def __init__(self, in_chans: int, dim: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]):
        super().__init__()
        conv: Callable[..., Any] = {2: nn.Conv2d, 3: nn.Conv3d}[len(kernel)]
        self.proj: nn.Conv2d | nn.Conv3d = conv(in_chans, dim, kernel_size=tuple(kernel), stride=tuple(stride),
                                                padding=tuple(padding))
        # A channels-last kernel makes the convolution write channels-last output, i.e. tokens [B, N, C] that are
        # already contiguous: the position embedding and the unroll permutation then read whole channel vectors
        # (benchmarks/RESULTS.md). Loading a state dict keeps this layout.
        self.proj.to(memory_format=torch.channels_last_3d if len(kernel) == 3 else torch.channels_last)

    def forward(self, x: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        if pixel_mask is not None:
            x = x * pixel_mask
        return self.proj(x).flatten(2).transpose(1, 2)


class Head(nn.Module):
    """Dropout -> Linear. Always returns logits."""

    def __init__(self, dim: int, num_classes: int, dropout_rate: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout_rate) if dropout_rate > 0 else nn.Identity()
        self.projection = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.dropout(x))


# ----------------------------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------------------------

IntTuple = tuple[int, ...]


def _as_int_tuple(name: str, value: Sequence[int], ndim: int) -> IntTuple:
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"{name}={value} must have {ndim} entries (one per axis of input_size)")
    return value


class HieraBackbone(nn.Module):
    """Stem, position embedding and the Hiera blocks; shared by the classifier and the MAE.

    Attributes for downstream modules (all tuples are per axis, (T, H, W) for video, (H, W) for images):
      input_size: expected input size in pixels; in_chans: expected channels.
      tokens_spatial_shape: token grid after the stem (input_size // patch_stride).
      mask_unit_size: tokens per mask unit (q_stride ** (num_stages - 1)); mask_spatial_shape: grid of mask units;
      num_mask_units: prod(mask_spatial_shape), the length of a mask; mask_unit_pixel_size: pixels per unit.
      stage_ends: index of the last block of each stage; stage_dims: channels of each stage.
      stage_shapes: feature-map grid of each stage; stage_strides: pixels per feature-map cell of each stage
      (e.g. (2, 16, 16) for stage 3 of hiera_base_16x224: a 224 input gives a 14x14 map).

    `act_checkpoint=True` recomputes every block's activations in backward instead of keeping them (see HieraBlock):
    less memory for about one more forward pass per training step.
    """

    def __init__(
        self,
        input_size: Sequence[int] = (224, 224),
        in_chans: int = 3,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        mask_unit_size: Sequence[int] | None = None,
        mask_unit_attn: Sequence[bool] = (True, True, False, False),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        patch_kernel: Sequence[int] = (7, 7),
        patch_stride: Sequence[int] = (4, 4),
        patch_padding: Sequence[int] = (3, 3),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        sep_pos_embed: bool | None = None,
        act_checkpoint: bool = False,
    ):
        super().__init__()
        ndim = len(input_size)
        if ndim not in (2, 3):
            raise ValueError(f"input_size={tuple(input_size)} must be (H, W) for images or (T, H, W) for video")
        self.input_size = _as_int_tuple("input_size", input_size, ndim)
        self.in_chans = in_chans
        q_stride = _as_int_tuple("q_stride", q_stride, ndim)
        patch_kernel = _as_int_tuple("patch_kernel", patch_kernel, ndim)
        self.patch_stride = _as_int_tuple("patch_stride", patch_stride, ndim)
        patch_padding = _as_int_tuple("patch_padding", patch_padding, ndim)
        stages = tuple(int(s) for s in stages)
        if not stages or min(stages) < 1:
            raise ValueError(f"stages={stages} must be a non-empty list of positive block counts")
        if len(mask_unit_attn) != len(stages):
            raise ValueError(f"mask_unit_attn={tuple(mask_unit_attn)} needs one entry per stage ({len(stages)})")
        if not 0 <= q_pool < len(stages):
            raise ValueError(f"q_pool={q_pool} must be in [0, {len(stages) - 1}] for {len(stages)} stages")
        # Tokens are unrolled once per stage transition, so a mask unit is exactly q_stride ** (stages - 1).
        unrolled_unit = tuple(s ** (len(stages) - 1) for s in q_stride)
        self.mask_unit_size = unrolled_unit if mask_unit_size is None else _as_int_tuple(
            "mask_unit_size", mask_unit_size, ndim
        )
        if self.mask_unit_size != unrolled_unit:
            raise ValueError(
                f"mask_unit_size={self.mask_unit_size} must equal q_stride ** (num_stages - 1) = {unrolled_unit}"
            )
        self.mask_unit_pixel_size = tuple(p * m for p, m in zip(self.patch_stride, self.mask_unit_size))
        if any(i % u for i, u in zip(self.input_size, self.mask_unit_pixel_size)):
            raise ValueError(
                f"input_size={self.input_size} must be divisible by patch_stride x mask_unit_size = "
                f"{self.mask_unit_pixel_size}"
            )
        self.tokens_spatial_shape = tuple(i // p for i, p in zip(self.input_size, self.patch_stride))
        stem_out = tuple(
            (i + 2 * pad - k) // s + 1
            for i, k, s, pad in zip(self.input_size, patch_kernel, self.patch_stride, patch_padding)
        )
        if stem_out != self.tokens_spatial_shape:
            raise ValueError(
                f"patch_kernel={patch_kernel}, patch_stride={self.patch_stride}, patch_padding={patch_padding} "
                f"turn input_size={self.input_size} into {stem_out} tokens, expected input_size // patch_stride "
                f"= {self.tokens_spatial_shape}"
            )
        if sep_pos_embed is None:
            sep_pos_embed = ndim == 3
        if sep_pos_embed and ndim != 3:
            raise ValueError("sep_pos_embed=True needs a video input_size (T, H, W)")

        self.q_pool = q_pool
        self.q_stride = q_stride
        self.mlp_ratio = mlp_ratio
        self.flat_q_stride = math.prod(q_stride)
        self.mask_spatial_shape = tuple(t // m for t, m in zip(self.tokens_spatial_shape, self.mask_unit_size))
        self.num_mask_units = math.prod(self.mask_spatial_shape)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.sep_pos_embed = sep_pos_embed
        self.act_checkpoint = act_checkpoint
        self._unroll_strides = [q_stride] * (len(stages) - 1)
        pools_before_stage = [min(i, q_pool) for i in range(len(stages))]
        self.stage_shapes = [
            tuple(t // s**p for t, s in zip(self.tokens_spatial_shape, q_stride)) for p in pools_before_stage
        ]
        self.stage_strides = [
            tuple(ps * s**p for ps, s in zip(self.patch_stride, q_stride)) for p in pools_before_stage
        ]

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_kernel, self.patch_stride, patch_padding)
        if sep_pos_embed:
            frames, *spatial = self.tokens_spatial_shape
            self.pos_embed_spatial = nn.Parameter(torch.zeros(1, math.prod(spatial), embed_dim))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, frames, embed_dim))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.tokens_spatial_shape), embed_dim))

        depth = sum(stages)
        pool_blocks = {end + 1 for end in self.stage_ends[:q_pool]}
        window_size = math.prod(self.mask_unit_size)
        stage = 0
        dim, heads = embed_dim, num_heads
        self.stage_dims = [embed_dim]
        self.blocks = nn.ModuleList()
        for i in range(depth):
            # The attention type is read before the stage counter advances: the first block of a stage still
            # uses the previous stage's setting (official behaviour; pooling happens in that block).
            windowed = bool(mask_unit_attn[stage])
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads = int(dim * dim_mul), int(heads * head_mul)
                stage += 1
                self.stage_dims.append(dim_out)
                if i in pool_blocks:
                    window_size //= self.flat_q_stride
            self.blocks.append(
                HieraBlock(
                    dim,
                    dim_out,
                    heads,
                    mlp_ratio=mlp_ratio,
                    drop_path=drop_path_rate * i / max(depth - 1, 1),
                    q_stride=self.flat_q_stride if i in pool_blocks else 1,
                    window_size=window_size,
                    use_mask_unit_attn=windowed,
                    act_checkpoint=act_checkpoint,
                )
            )
            dim = dim_out
        self.out_dim = dim
        self._init_backbone_weights()

    def _init_backbone_weights(self) -> None:
        for name in ("pos_embed_spatial", "pos_embed_temporal", "pos_embed"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)
        self.apply(init_hiera_weights)

    def no_weight_decay(self) -> list[str]:
        """Parameter names excluded from weight decay (the position embeddings)."""
        if self.sep_pos_embed:
            return ["pos_embed_spatial", "pos_embed_temporal"]
        return ["pos_embed"]

    def random_mask(
        self, batch_size: int, mask_ratio: float, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Random [B, num_mask_units] bool mask, True = keep, keeping num_kept_units(mask_ratio) units per sample."""
        num_keep = self.num_kept_units(mask_ratio)
        ranks = torch.rand(batch_size, self.num_mask_units, device=device).argsort(dim=1).argsort(dim=1)
        return ranks < num_keep

    def num_kept_units(self, mask_ratio: float) -> int:
        """Mask units per sample that random_mask keeps: int(num_mask_units * (1 - mask_ratio)), at least 1."""
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={mask_ratio} must be in [0, 1)")
        num_keep = int(self.num_mask_units * (1 - mask_ratio))
        if num_keep < 1:
            raise ValueError(f"mask_ratio={mask_ratio} keeps no unit of {self.num_mask_units}")
        return num_keep

    def position_embedding(self) -> torch.Tensor:
        """[1, N, C] position embedding in natural token order."""
        if self.sep_pos_embed:
            grid = self.pos_embed_temporal[:, :, None, :] + self.pos_embed_spatial[:, None, :, :]
            return grid.flatten(1, 2)
        return self.pos_embed

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is [B, in_chans, *input_size]."""
        expected = (self.in_chans, *self.input_size)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects input of shape [B, {', '.join(map(str, expected))}] "
                f"(in_chans, *input_size), got {list(x.shape)}"
            )

    def check_mask(self, mask: torch.Tensor, batch_size: int) -> None:
        """Raise ValueError unless mask is a bool [B, num_mask_units] (shape and dtype only: no device sync)."""
        expected = [batch_size, self.num_mask_units]
        if list(mask.shape) != expected:
            raise ValueError(f"mask must have shape [B, num_mask_units] = {expected}, got {list(mask.shape)}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True = keep), got dtype {mask.dtype}")

    def _pixel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        pixels = mask.view(mask.shape[0], 1, *self.mask_spatial_shape)
        for axis, repeat in enumerate(self.mask_unit_pixel_size):
            pixels = pixels.repeat_interleave(repeat, dim=2 + axis)
        return pixels

    def _keep_visible(self, x: torch.Tensor, mask: torch.Tensor, num_keep: int) -> torch.Tensor:
        batch, num_tokens, channels = x.shape
        per_unit = x.view(batch, num_tokens // self.num_mask_units, self.num_mask_units, channels)
        kept = true_indices(mask, num_keep)[:, None, :, None].expand(-1, per_unit.shape[1], -1, channels)
        return per_unit.gather(2, kept).reshape(batch, -1, channels)

    def _stage_feature_map(self, x: torch.Tensor, stage: int, masked: bool) -> torch.Tensor:
        per_unit = reroll_tokens(x, self._unroll_strides[min(stage, self.q_pool) :], len(self.input_size))
        return per_unit if masked else unwindow_units(per_unit, self.mask_spatial_shape)

    def forward_tokens(
        self,
        x: torch.Tensor | list[torch.Tensor],
        mask: torch.Tensor | None = None,
        return_intermediates: bool = False,
        num_keep: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the stem and blocks. Returns (tokens [B, N_out, C] in unrolled order, per-stage feature maps).

        Feature maps (only with return_intermediates) are [B, *stage_shape, C] in natural order, or with a mask
        [B, K, *unit_shape, C] per visible unit. A list input uses its first element (PySlowFast pathways).
        num_keep: the units the mask keeps per sample, when the caller knows it (a mask from random_mask); the step
        then never reads the mask on the host. Otherwise the mask is counted and checked on the host (a sync).
        """
        clip = x[0] if isinstance(x, (list, tuple)) else x
        self.check_input(clip)
        if mask is not None:
            self.check_mask(mask, clip.shape[0])
            if num_keep is None:
                num_keep = true_count(mask, "kept mask units")
        tokens = self.patch_embed(clip, None if mask is None else self._pixel_mask(mask))
        tokens = tokens + self.position_embedding()
        tokens = unroll_tokens(tokens, self.tokens_spatial_shape, self._unroll_strides)
        if mask is not None:
            tokens = self._keep_visible(tokens, mask, cast(int, num_keep))
        intermediates = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if return_intermediates and i in self.stage_ends:
                stage = self.stage_ends.index(i)
                intermediates.append(self._stage_feature_map(tokens, stage, masked=mask is not None))
        return tokens, intermediates


def init_hiera_weights(module: nn.Module, bias: float = 0.02) -> None:
    """Official Hiera init: Linear/Conv weights trunc-normal(0.02), Linear and LayerNorm biases 0.02, LN weight 1
    (conv biases keep PyTorch's default)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.constant_(module.bias, bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.constant_(module.weight, 1.0)
        nn.init.constant_(module.bias, bias)


# ----------------------------------------------------------------------------------------------------------------
# Classifier
# ----------------------------------------------------------------------------------------------------------------


class Hiera(HieraBackbone):
    """Hiera classifier: backbone -> mean over tokens -> LayerNorm -> dropout -> Linear (logits).

    See HieraBackbone for the architecture arguments and the exposed shape attributes.
    """

    def __init__(self, num_classes: int = 1000, head_dropout: float = 0.0, head_init_scale: float = 0.001, **backbone):
        super().__init__(**backbone)
        self.num_classes = num_classes
        self._backbone_frozen = False  # set by freeze_backbone (linear probing)
        self.norm: nn.Module = nn.LayerNorm(self.out_dim, eps=LAYER_NORM_EPS)
        self.head = Head(self.out_dim, num_classes, dropout_rate=head_dropout)
        self.norm.apply(init_hiera_weights)
        self.head.apply(init_hiera_weights)
        with torch.no_grad():
            self.head.projection.weight.mul_(head_init_scale)
            self.head.projection.bias.mul_(head_init_scale)

    def forward(
        self,
        x: torch.Tensor | list[torch.Tensor],
        mask: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """x: [B, in_chans, *input_size]. Returns logits [B, num_classes].

        mask: optional bool [B, num_mask_units], True = keep; then only visible units are computed and the
        un-normed tokens [B, K_out, C] are returned (no head), as the official model does.
        return_intermediates: also return the per-stage feature maps (see HieraBackbone.forward_tokens).
        """
        out, intermediates = self.forward_tokens(x, mask, return_intermediates)
        if mask is None:
            out = self.head(self.norm(out.mean(dim=1)))
        return (out, intermediates) if return_intermediates else out

    def freeze_backbone(self) -> None:
        """Linear probing (the MAE recipe): everything but the head is frozen and stays in eval mode (no drop path),
        and the head's LayerNorm becomes a BatchNorm without affine parameters, which standardises each feature
        over the batch before the linear layer."""
        self.norm = nn.BatchNorm1d(self.out_dim, affine=False, eps=1e-6)
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(name.startswith("head."))
        self._backbone_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> Hiera:
        super().train(mode)
        if self._backbone_frozen:
            for name, child in self.named_children():
                if name not in ("norm", "head"):
                    child.eval()
        return self


# ----------------------------------------------------------------------------------------------------------------
# Named constructors
# ----------------------------------------------------------------------------------------------------------------

IMAGE_SIZES = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2)),
    "base": dict(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "base_plus": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    "huge": dict(embed_dim=256, num_heads=4, stages=(2, 6, 36, 4)),
}
VIDEO_SIZES = {name: IMAGE_SIZES[name] for name in ("base", "base_plus", "large", "huge")}
IMAGE_CONFIG = dict(
    input_size=(224, 224),
    q_stride=(2, 2),
    mask_unit_attn=(True, True, False, False),
    patch_kernel=(7, 7),
    patch_stride=(4, 4),
    patch_padding=(3, 3),
)
VIDEO_CONFIG = dict(
    input_size=(16, 224, 224),
    q_stride=(1, 2, 2),
    mask_unit_attn=(True, True, False, False),
    patch_kernel=(3, 7, 7),
    patch_stride=(2, 4, 4),
    patch_padding=(1, 3, 3),
)


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["tiny"], num_classes=1000)
def hiera_tiny_224(**overrides: Any) -> Hiera:
    """Hiera-T image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_tiny_224", **overrides))


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["small"], num_classes=1000)
def hiera_small_224(**overrides: Any) -> Hiera:
    """Hiera-S image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_small_224", **overrides))


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["base"], num_classes=1000)
def hiera_base_224(**overrides: Any) -> Hiera:
    """Hiera-B image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_base_224", **overrides))


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["base_plus"], num_classes=1000)
def hiera_base_plus_224(**overrides: Any) -> Hiera:
    """Hiera-B+ image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_base_plus_224", **overrides))


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["large"], num_classes=1000)
def hiera_large_224(**overrides: Any) -> Hiera:
    """Hiera-L image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_large_224", **overrides))


@register_model(Hiera, **IMAGE_CONFIG, **IMAGE_SIZES["huge"], num_classes=1000)
def hiera_huge_224(**overrides: Any) -> Hiera:
    """Hiera-H image classifier, 224x224 input, 1000 classes (ImageNet-1k)."""
    return cast(Hiera, create_model("hiera_huge_224", **overrides))


@register_model(Hiera, **VIDEO_CONFIG, **VIDEO_SIZES["base"], num_classes=400)
def hiera_base_16x224(**overrides: Any) -> Hiera:
    """Hiera-B video classifier, 16 frames of 224x224, 400 classes (Kinetics-400)."""
    return cast(Hiera, create_model("hiera_base_16x224", **overrides))


@register_model(Hiera, **VIDEO_CONFIG, **VIDEO_SIZES["base_plus"], num_classes=400)
def hiera_base_plus_16x224(**overrides: Any) -> Hiera:
    """Hiera-B+ video classifier, 16 frames of 224x224, 400 classes (Kinetics-400)."""
    return cast(Hiera, create_model("hiera_base_plus_16x224", **overrides))


@register_model(Hiera, **VIDEO_CONFIG, **VIDEO_SIZES["large"], num_classes=400)
def hiera_large_16x224(**overrides: Any) -> Hiera:
    """Hiera-L video classifier, 16 frames of 224x224, 400 classes (Kinetics-400)."""
    return cast(Hiera, create_model("hiera_large_16x224", **overrides))


@register_model(Hiera, **VIDEO_CONFIG, **VIDEO_SIZES["huge"], num_classes=400)
def hiera_huge_16x224(**overrides: Any) -> Hiera:
    """Hiera-H video classifier, 16 frames of 224x224, 400 classes (Kinetics-400)."""
    return cast(Hiera, create_model("hiera_huge_16x224", **overrides))
