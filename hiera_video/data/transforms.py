"""Spatial transforms for video clips on torchvision.transforms.v2.

Clips come in as decoded, uint8 [T, H, W, 3] RGB (VideoReader.get_frames) and leave as float [3, T, H, W]
normalised by mean/std. Inside, a clip is a torchvision `tv_tensors.Video` [T, 3, H, W], so every random
transform draws its parameters once per clip: all frames get the same crop, flip, RandAugment operations and
erased box. Geometric ops run first, on uint8, so colour ops and normalisation only touch the crop; the clip
changes to its [3, T, H, W] layout while still uint8 (normalized_clip).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# Magnitudes follow the timm/PySlowFast RandAugment scale (0..10, e.g. "rand-m9"): torchvision's ranges spread
# over 0..10 give the same rotation (m9 -> 27 deg), shear and enhancement strengths as timm's m/10 scaling.
RAND_AUGMENT_MAX_MAGNITUDE = 10
# Bins per unit of magnitude, so a magnitude drawn around m (timm's "mstd") lands within 0.05 of its value.
RAND_AUGMENT_BINS_PER_UNIT = 10


class MagnitudeNoiseRandAugment(v2.RandAugment):
    """torchvision's RandAugment on the timm 0..10 scale, with timm's magnitude noise ("rand-m7-mstd0.5").

    Every operation draws its magnitude from N(magnitude, magnitude_std) clipped to [0, 10] (the mean itself when
    magnitude_std is 0). torchvision already makes Posterize and Solarize stronger as the magnitude grows, which is
    timm's "inc1" variant. The draw uses torch's RNG, so the data sampler's per-sample seed makes it reproducible.
    torchvision has no magnitude noise, hence this subclass: it only chooses the magnitude bin before each op.
    """

    def __init__(self, num_ops: int, magnitude: float, magnitude_std: float = 0.0):
        if not 0 <= magnitude <= RAND_AUGMENT_MAX_MAGNITUDE:
            raise ValueError(f"RandAugment magnitude must lie in [0, {RAND_AUGMENT_MAX_MAGNITUDE}], got {magnitude}")
        if magnitude_std < 0:
            raise ValueError(f"RandAugment magnitude std must be >= 0, got {magnitude_std}")
        super().__init__(
            num_ops=1,
            magnitude=0,
            num_magnitude_bins=RAND_AUGMENT_MAX_MAGNITUDE * RAND_AUGMENT_BINS_PER_UNIT + 1,
            interpolation=v2.InterpolationMode.BILINEAR,
        )
        self.ops_per_clip = num_ops
        self.mean_magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)

    def _draw_magnitude(self) -> float:
        if self.magnitude_std == 0:
            return self.mean_magnitude
        drawn = self.mean_magnitude + self.magnitude_std * torch.randn(()).item()
        return min(max(drawn, 0.0), float(RAND_AUGMENT_MAX_MAGNITUDE))

    def forward(self, *inputs):
        outputs = inputs if len(inputs) > 1 else inputs[0]
        for _ in range(self.ops_per_clip):
            self.magnitude = round(self._draw_magnitude() * RAND_AUGMENT_BINS_PER_UNIT)
            outputs = super().forward(outputs)
        return outputs

    def extra_repr(self) -> str:
        return f"num_ops={self.ops_per_clip}, magnitude={self.mean_magnitude}, magnitude_std={self.magnitude_std}"


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3] as from VideoReader.get_frames, got {frames.dtype} "
            f"{tuple(frames.shape)}"
        )


def _frames_to_video(frames: torch.Tensor) -> tv_tensors.Video:
    """uint8 [T, H, W, 3] -> Video [T, 3, H, W]."""
    _check_frames(frames)
    return tv_tensors.Video(frames.permute(0, 3, 1, 2))


def video_to_clip(video: torch.Tensor) -> torch.Tensor:
    """Video [T, 3, H, W] -> plain tensor [3, T, H, W]."""
    return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()


def normalized_clip(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 Video [T, 3, H, W] -> float clip [3, T, H, W] with (x / 255 - mean) / std per channel.

    The layout changes in the same pass that converts to float, and the contiguous float clip is then scaled and
    normalised in place with the operations of v2.ToDtype(scale=True) and v2.Normalize, in their order: the values
    equal theirs bit for bit (tests/test_transforms.py checks), in about a quarter of the time of converting the
    Video and copying the float result into the clip layout (benchmarks/RESULTS.md, data loading).
    """
    if video.dtype != torch.uint8:
        raise ValueError(f"normalized_clip expects a uint8 video, got {video.dtype}")
    frames = video.as_subclass(torch.Tensor).permute(1, 0, 2, 3)
    clip = torch.empty(frames.shape, dtype=torch.float32, device=frames.device).copy_(frames).mul_(1.0 / 255)
    mean_, std_ = (torch.as_tensor(v, dtype=torch.float32).view(-1, 1, 1, 1) for v in (mean, std))
    return clip.sub_(mean_).div_(std_)


class VideoTransform:
    """uint8 frames [T, H, W, 3] -> float clip [3, T, H, W]: the v2 `geometry` (crops, flips, RandAugment: uint8
    ops on the Video), normalisation by `mean`/`std` (normalized_clip), then the v2 `after` (ops on the normalised
    Video, such as random erasing), if any."""

    def __init__(self, geometry: v2.Transform, mean: Sequence[float], std: Sequence[float],
                 after: v2.Transform | None = None):
        self.geometry = geometry
        self.mean, self.std = tuple(mean), tuple(std)
        self.after = after

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        clip = normalized_clip(self.geometry(_frames_to_video(frames)), self.mean, self.std)
        if self.after is None:
            return clip
        # A Video view of the clip's memory; erasing clones it with the same strides, so no copy on the way back.
        return video_to_clip(self.after(tv_tensors.Video(clip.permute(1, 0, 2, 3))))

    def __repr__(self) -> str:
        return f"VideoTransform({self.geometry}, mean={self.mean}, std={self.std}, after={self.after})"


def to_normalized_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    """uint8 -> float in [0, 1], then (x - mean) / std per channel, as v2 transforms (AVA's box-aware clips)."""
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_geometry(
    crop_size: int,
    scale: tuple[float, float] | None = (0.08, 1.0),
    aspect: tuple[float, float] = (3 / 4, 4 / 3),
    jitter_scales: tuple[int, int] | None = (256, 320),
    flip: bool = True,
) -> list[v2.Transform]:
    """The random crop (and flip) of training, for a video and anything moving with it (v2 BoundingBoxes).

    A random-resized crop (area fraction `scale`, aspect ratio `aspect`) when `scale` is given, otherwise
    PySlowFast's short-side jitter (short side resized to a random size in `jitter_scales`) and a random crop;
    then a horizontal flip unless `flip=False` (direction-sensitive data such as SSv2).
    """
    if scale is not None:
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(crop_size, scale=tuple(scale), ratio=tuple(aspect), antialias=True)
        ]
    elif jitter_scales is not None:
        low, high = jitter_scales
        if not 0 < low <= high or low < crop_size:
            raise ValueError(f"jitter_scales must satisfy crop_size ({crop_size}) <= low <= high, got {jitter_scales}")
        steps = [v2.RandomShortestSize(list(range(low, high + 1)), antialias=True), v2.RandomCrop(crop_size)]
    else:
        raise ValueError("the training crop needs `scale` (random-resized crop) or `jitter_scales`")
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return steps


def eval_geometry(crop_size: int, short_side: int) -> list[v2.Transform]:
    """The deterministic view: short side resized to `short_side`, then the centre crop of `crop_size`."""
    if short_side < crop_size:
        raise ValueError(f"short_side ({short_side}) must be >= crop_size ({crop_size})")
    return [v2.Resize(short_side, antialias=True), v2.CenterCrop(crop_size)]


def build_train_transform(
    crop_size: int,
    scale: tuple[float, float] | None = (0.08, 1.0),
    aspect: tuple[float, float] = (3 / 4, 4 / 3),
    jitter_scales: tuple[int, int] | None = (256, 320),
    flip: bool = True,
    rand_augment: tuple[int, float] | None = None,
    rand_augment_std: float = 0.0,
    random_erasing_prob: float = 0.0,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Training augmentation: uint8 [T, H, W, 3] -> normalised float [3, T, crop_size, crop_size].

    The crop and flip of `train_geometry`, then RandAugment `(num_ops, magnitude)` with magnitude on the 0..10 timm
    scale and per-op magnitude noise `rand_augment_std` (timm's "mstd"), normalisation, and random erasing with
    probability `random_erasing_prob` (one box filled with Gaussian noise, the same on every frame).
    """
    steps = train_geometry(crop_size, scale, aspect, jitter_scales, flip)
    if rand_augment is not None:
        num_ops, magnitude = rand_augment
        steps.append(MagnitudeNoiseRandAugment(num_ops, magnitude, rand_augment_std))
    erasing = v2.RandomErasing(p=random_erasing_prob, value="random") if random_erasing_prob > 0 else None
    return VideoTransform(v2.Compose(steps), mean, std, after=erasing)


def build_eval_transform(
    crop_size: int,
    short_side: int,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Deterministic view: short side resized to `short_side`, centre crop of `crop_size`, normalised.

    uint8 [T, H, W, 3] -> float [3, T, crop_size, crop_size]. Same pixels as
    normalize(spatial_crops(frames, crop_size, 1, short_side)[0]).
    """
    return VideoTransform(v2.Compose(eval_geometry(crop_size, short_side)), mean, std)


def normalize(
    frames: torch.Tensor, mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD
) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] -> float clip [3, T, H, W] with (x / 255 - mean) / std per channel, as the
    transforms normalise (normalized_clip)."""
    return normalized_clip(_frames_to_video(frames), mean, std)


def _crop_offsets(length: int, crop_size: int, num_crops: int) -> list[int]:
    if num_crops == 1:
        return [int(round((length - crop_size) / 2))]
    return [int(round(k * (length - crop_size) / (num_crops - 1))) for k in range(num_crops)]


def spatial_crops(
    video: torch.Tensor, crop_size: int, num_crops: int, short_side: int | None = None
) -> list[torch.Tensor]:
    """Test-time spatial views (PySlowFast semantics).

    The short side is resized to `short_side` (default `crop_size`, antialiased bilinear); then `num_crops`
    square crops of `crop_size` are taken, centred across the short side and evenly spaced along the long side:
    1 = centre; 3 = left/centre/right for landscape clips (top/middle/bottom for portrait ones).
    `video` is either uint8 frames [T, H, W, 3] or a float clip [3, T, H, W]; crops keep its layout.
    PySlowFast uses 3 crops with short_side = crop_size, and 1 crop with short_side = 256 for crop_size 224.
    """
    if num_crops < 1:
        raise ValueError(f"num_crops must be >= 1, got {num_crops}")
    short_side = crop_size if short_side is None else short_side
    if short_side < crop_size:
        raise ValueError(f"short_side ({short_side}) must be >= crop_size ({crop_size})")
    if video.dtype == torch.uint8 and video.ndim == 4 and video.shape[-1] == 3:
        frames, to_layout = video.permute(0, 3, 1, 2), (lambda crop: crop.permute(0, 2, 3, 1))
    elif video.is_floating_point() and video.ndim == 4 and video.shape[0] == 3:
        frames, to_layout = video.permute(1, 0, 2, 3), (lambda crop: crop.permute(1, 0, 2, 3))
    else:
        raise ValueError(
            f"spatial_crops expects uint8 [T, H, W, 3] or float [3, T, H, W], got {video.dtype} {tuple(video.shape)}"
        )
    frames = F.resize(frames, short_side, antialias=True)
    height, width = frames.shape[-2:]
    if height <= width:
        boxes = [(_crop_offsets(height, crop_size, 1)[0], x) for x in _crop_offsets(width, crop_size, num_crops)]
    else:
        boxes = [(y, _crop_offsets(width, crop_size, 1)[0]) for y in _crop_offsets(height, crop_size, num_crops)]
    return [
        to_layout(frames[..., y : y + crop_size, x : x + crop_size]).contiguous() for y, x in boxes
    ]
