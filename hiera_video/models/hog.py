"""Histograms of oriented gradients (HOG) as MAE targets, after MaskFeat (Wei et al. 2022), in torch ops.

Exact definition used here, for images [N, C, H, W] (video frames are treated as images):
  1. Gradients per channel with 3x3 Sobel filters (depthwise conv, 1-pixel reflect padding):
     gx = [[-1,0,1],[-2,0,2],[-1,0,1]] * I (positive when intensity grows to the right), gy = its transpose
     (positive when intensity grows downwards). Magnitude m = sqrt(gx^2 + gy^2).
  2. Unsigned orientation theta = atan2(gy, gx) mod pi in [0, pi) (0 deg: horizontal gradient, i.e. a vertical
     edge), quantised into `num_bins` equal bins (9 bins of 20 deg; bin = floor(theta / (pi / num_bins))).
  3. Hard voting: each pixel adds m to its bin in its `cell_size` x `cell_size` cell (8x8), per channel.
  4. Local contrast normalisation per block: a block is the set of cells of one target patch (2x2 cells for a
     16x16 patch, one cell for an 8x8 patch). For every channel the block's cells x bins vector is divided by
     max(L2 norm, eps); a block without gradient stays 0.
  5. A patch's target is flattened in (channel, cell_y, cell_x, bin) order: C * (patch / cell)^2 * num_bins values
     (3 * 4 * 9 = 108 for RGB and 16x16 patches).
Everything is computed in float32 with autocast off, whatever the input dtype and the caller's autocast: a bf16 or
fp16 Sobel conv and atan2 would move pixels across orientation bins.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

CELL_SIZE = 8
NUM_BINS = 9
NORM_EPS = 1e-6


def _sobel_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C, H, W] -> (gx, gy), each [N, C, H, W]."""
    channels = images.shape[1]
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=images.dtype, device=images.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=images.dtype, device=images.device)
    kernel_x = torch.outer(smooth, diff).expand(channels, 1, 3, 3)
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    gx = F.conv2d(padded, kernel_x.contiguous(), groups=channels)
    gy = F.conv2d(padded, kernel_x.transpose(-1, -2).contiguous(), groups=channels)
    return gx, gy


def cell_histograms(images: torch.Tensor, cell_size: int = CELL_SIZE, num_bins: int = NUM_BINS) -> torch.Tensor:
    """Unnormalised gradient-orientation histograms: [N, C, H, W] -> [N, C, num_bins, H / cell, W / cell]."""
    if images.dim() != 4:
        raise ValueError(f"cell_histograms expects images [N, C, H, W], got {list(images.shape)}")
    height, width = images.shape[-2:]
    if height % cell_size or width % cell_size:
        raise ValueError(f"image size {(height, width)} is not divisible by the HOG cell size {cell_size}")
    with _float32(images):
        gx, gy = _sobel_gradients(images.float())
        magnitude = torch.sqrt(gx**2 + gy**2)
        theta = torch.remainder(torch.atan2(gy, gx), math.pi)
        bins = torch.floor(theta / (math.pi / num_bins)).long().clamp_(0, num_bins - 1)
        # One bin at a time keeps memory at one image-sized map (a one-hot of all bins would be num_bins times the
        # input); average pooling times the cell area sums the votes of each cell.
        per_bin = [F.avg_pool2d(magnitude * (bins == b), cell_size) * cell_size**2 for b in range(num_bins)]
        return torch.stack(per_bin, dim=2)


def _float32(images: torch.Tensor) -> torch.autocast:
    """Autocast off on the images' device: the targets are defined in float32."""
    return torch.autocast(images.device.type, enabled=False)


def hog_patch_targets(
    images: torch.Tensor, patch_size: Sequence[int], cell_size: int = CELL_SIZE, num_bins: int = NUM_BINS
) -> torch.Tensor:
    """HOG target per patch: [N, C, H, W] -> [N, (H / ph) * (W / pw), C * (ph / cell) * (pw / cell) * num_bins],
    patches in row-major order, each block-normalised per channel (see the module docstring)."""
    patch_h, patch_w = patch_size
    if patch_h % cell_size or patch_w % cell_size:
        raise ValueError(f"HOG target patch {tuple(patch_size)} is not a multiple of the cell size {cell_size}")
    hist = cell_histograms(images, cell_size, num_bins)  # [N, C, bins, Hc, Wc], float32
    n, c, _, hc, wc = hist.shape
    cells_y, cells_x = patch_h // cell_size, patch_w // cell_size
    hist = hist.view(n, c, num_bins, hc // cells_y, cells_y, wc // cells_x, cells_x)
    blocks = hist.permute(0, 3, 5, 1, 4, 6, 2)  # [N, patch_y, patch_x, C, cell_y, cell_x, bins]
    blocks = blocks.reshape(n, (hc // cells_y) * (wc // cells_x), c, cells_y * cells_x * num_bins)
    with _float32(images):
        return F.normalize(blocks, p=2.0, dim=-1, eps=NORM_EPS).flatten(2)


def hog_target_dim(
    patch_size: Sequence[int], in_chans: int, cell_size: int = CELL_SIZE, num_bins: int = NUM_BINS
) -> int:
    """Length of one patch's HOG target; ValueError if the patch is not a multiple of the cell size."""
    if patch_size[0] % cell_size or patch_size[1] % cell_size:
        raise ValueError(f"HOG target patch {tuple(patch_size)} is not a multiple of the cell size {cell_size}")
    return in_chans * (patch_size[0] // cell_size) * (patch_size[1] // cell_size) * num_bins
