"""Video transforms (same random op on every frame), test-time crops, normalisation, and MixUp/CutMix."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from hiera_video.data.mixup import MixupCutmix
from hiera_video.data.transforms import (
    MagnitudeNoiseRandAugment,
    build_eval_transform,
    build_train_transform,
    eval_geometry,
    normalize,
    spatial_crops,
    to_normalized_float,
    train_geometry,
    video_to_clip,
)

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def distinct_frames(num_frames=6, height=40, width=40, seed=0):
    """uint8 [T, H, W, 3]: random frames, all different."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, height, width, 3), dtype=torch.uint8, generator=generator)


def identical_frames(num_frames=6, height=48, width=64):
    """A still clip: one textured frame (gradients + a bright square) repeated."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    frame = torch.stack([x * 255 // width, y * 255 // height, (x * y) % 256], dim=-1).to(torch.uint8)
    frame[10:20, 30:45] = 255
    return frame.expand(num_frames, -1, -1, -1).contiguous()


def test_train_transform_shapes_and_dtypes():
    frames = distinct_frames(8, 72, 96)
    for transform in [
        build_train_transform(32, rand_augment=(2, 9), random_erasing_prob=0.5),
        build_train_transform(32, scale=None, jitter_scales=(40, 48)),
    ]:
        clip = transform(frames)
        assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(8, 3, 72, 96\)"):
        build_train_transform(32)(frames.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="uint8"):
        build_train_transform(32)(frames.float())
    with pytest.raises(ValueError):
        build_train_transform(32, scale=None, jitter_scales=None)
    with pytest.raises(ValueError, match="magnitude"):
        build_train_transform(32, rand_augment=(2, 31))


def unchanged_geometry(flip, **kwargs):
    """A train transform whose crop is the whole (square) frame, so only the flip and later ops act."""
    return build_train_transform(40, scale=None, jitter_scales=(40, 40), flip=flip, **kwargs)


@pytest.mark.parametrize(
    "transform",
    [
        build_train_transform(32, scale=(0.2, 1.0), rand_augment=(3, 10), random_erasing_prob=1.0),
        unchanged_geometry(flip=False, rand_augment=(1, 10)),  # RandAugment alone
        unchanged_geometry(flip=False, rand_augment=(2, 7), rand_augment_std=0.5),  # with magnitude noise
    ],
    ids=["all_ops", "rand_augment", "rand_augment_noise"],
)
def test_every_frame_gets_the_same_random_ops(transform):
    """A still clip must stay still through crop, flip, RandAugment and erasing, whatever ops are drawn."""
    frames = identical_frames(height=40, width=40)
    outputs = set()
    for seed in range(25):
        torch.manual_seed(seed)
        clip = transform(frames)
        assert torch.equal(clip, clip[:, :1].expand_as(clip)), f"frames differ for seed {seed}"
        outputs.add(round(clip.sum().item(), 2))
    assert len(outputs) > 10  # the ops themselves were random


def test_flip_flips_all_frames_or_none():
    frames = distinct_frames()
    plain, flipped = normalize(frames), normalize(frames.flip(2))
    seen = []
    for seed in range(20):
        torch.manual_seed(seed)
        clip = unchanged_geometry(flip=True)(frames)
        seen.append(torch.allclose(clip, flipped))
        assert seen[-1] or torch.allclose(clip, plain)
    assert 0 < sum(seen) < 20
    torch.manual_seed(0)
    assert all(torch.allclose(unchanged_geometry(flip=False)(frames), plain) for _ in range(10))


def test_random_erasing_erases_the_same_box_in_every_frame():
    frames = distinct_frames()
    reference = normalize(frames)
    for seed in range(10):
        torch.manual_seed(seed)
        clip = unchanged_geometry(flip=False, random_erasing_prob=1.0)(frames)
        erased = (clip != reference).any(dim=0)  # [T, H, W]
        assert erased[0].any()
        assert torch.equal(erased, erased[:1].expand_as(erased))


@pytest.mark.parametrize("augment", [False, True])
def test_transforms_equal_the_plain_v2_pipeline_bit_for_bit(augment):
    """The clip changes layout while uint8 and is normalised in place (normalized_clip): the values must be those
    of the one-pass v2 pipeline (geometry, ToDtype, Normalize, erasing on the Video, then the layout change)."""
    frames = distinct_frames(8, 60, 80)
    geometry = train_geometry(32, scale=None, jitter_scales=(36, 48))
    if augment:
        geometry.append(MagnitudeNoiseRandAugment(2, 9, 0.5))
    erasing = [v2.RandomErasing(p=0.7, value="random")] if augment else []
    plain = v2.Compose(geometry + to_normalized_float(MEAN, STD) + erasing)
    ours = build_train_transform(32, scale=None, jitter_scales=(36, 48), rand_augment=(2, 9) if augment else None,
                                 rand_augment_std=0.5, random_erasing_prob=0.7 if augment else 0.0, mean=MEAN, std=STD)
    for seed in range(8):
        torch.manual_seed(seed)
        expected = video_to_clip(plain(tv_tensors.Video(frames.permute(0, 3, 1, 2))))
        torch.manual_seed(seed)
        clip = ours(frames)
        assert torch.equal(clip, expected) and clip.is_contiguous()
    evaluation = v2.Compose(eval_geometry(32, 40) + to_normalized_float(MEAN, STD))
    assert torch.equal(build_eval_transform(32, 40, MEAN, STD)(frames),
                       video_to_clip(evaluation(tv_tensors.Video(frames.permute(0, 3, 1, 2)))))


def test_eval_transform_is_the_single_centre_crop():
    frames = distinct_frames(4, 60, 90)
    clip = build_eval_transform(32, 40, MEAN, STD)(frames)
    assert clip.shape == (3, 4, 32, 32)
    (crop,) = spatial_crops(frames, 32, 1, short_side=40)
    assert torch.equal(clip, normalize(crop, MEAN, STD))
    assert torch.equal(clip, build_eval_transform(32, 40, MEAN, STD)(frames))


def test_three_crops_run_along_the_long_side():
    landscape = distinct_frames(3, 64, 96)
    resized = F.resize(landscape.permute(0, 3, 1, 2), 32, antialias=True).permute(0, 2, 3, 1)  # 32 x 48
    left, centre, right = spatial_crops(landscape, 32, 3)
    assert torch.equal(left, resized[:, :, :32]) and torch.equal(centre, resized[:, :, 8:40])
    assert torch.equal(right, resized[:, :, 16:])
    portrait = landscape.transpose(1, 2).contiguous()
    resized = F.resize(portrait.permute(0, 3, 1, 2), 32, antialias=True).permute(0, 2, 3, 1)  # 48 x 32
    top, _, bottom = spatial_crops(portrait, 32, 3)
    assert torch.equal(top, resized[:, :32]) and torch.equal(bottom, resized[:, 16:])


def test_spatial_crops_keep_the_float_layout():
    frames = distinct_frames(3, 64, 96)
    crops = spatial_crops(normalize(frames), 32, 3)
    assert [c.shape for c in crops] == [(3, 3, 32, 32)] * 3
    for from_float, from_uint8 in zip(crops, spatial_crops(frames, 32, 3)):
        assert (from_float - normalize(from_uint8)).abs().max() < 0.05  # uint8 resizing rounds
    with pytest.raises(ValueError, match="spatial_crops"):
        spatial_crops(distinct_frames(4).float(), 32, 3)  # float frames must be channels-first


def test_normalize_values():
    frames = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 0, 255, 115
    clip = normalize(frames, mean=(0.5, 0.5, 0.45), std=(0.5, 0.25, 0.225))
    assert clip.shape == (3, 2, 4, 4)
    assert torch.allclose(clip[0], torch.tensor(-1.0)) and torch.allclose(clip[1], torch.tensor(2.0))
    assert torch.allclose(clip[2], torch.tensor((115 / 255 - 0.45) / 0.225), atol=1e-6)


def test_train_transform_on_a_full_size_clip():
    frames = distinct_frames(16, 256, 340)
    transform = build_train_transform(224, rand_augment=(2, 9), rand_augment_std=0.5, random_erasing_prob=0.25)
    clip = transform(frames)
    assert clip.shape == (3, 16, 224, 224) and clip.dtype == torch.float32 and torch.isfinite(clip).all()


def labelled_batch(batch=6, num_classes=5):
    video = torch.randn(batch, 3, 4, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 1])[:batch]  # neighbours (roll by one) differ
    return video, labels


def test_no_mixing_gives_smoothed_one_hot_targets():
    video, labels = labelled_batch()
    mixed, targets = MixupCutmix(prob=0.0, label_smoothing=0.1, num_classes=5)(video, labels)
    assert torch.equal(mixed, video)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert torch.allclose(targets[torch.arange(6), labels], torch.tensor(0.9 + 0.1 / 5))
    assert torch.allclose(targets.min(), torch.tensor(0.1 / 5))


def test_mixup_blends_neighbours_with_matching_targets():
    video, labels = labelled_batch()
    mixer = MixupCutmix(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=5)
    mixed, targets = mixer(video, labels)
    assert targets.shape == (6, 5) and torch.allclose(targets.sum(1), torch.ones(6))
    lam = ((targets[0, labels[0]] - 0.1 / 5) / 0.9).item()
    assert 0 <= lam <= 1
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.roll(1, 0), atol=1e-6)


def test_cutmix_pastes_one_box_through_all_frames():
    video, labels = labelled_batch()
    mixer = MixupCutmix(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=5)
    for seed in range(5):
        torch.manual_seed(seed)
        mixed, targets = mixer(video, labels)
        pasted = mixed != video  # [B, C, T, H, W]
        assert torch.equal(pasted, pasted[:, :1, :1].expand_as(pasted))
        area = pasted[0, 0, 0].float().mean()
        assert torch.allclose(targets[0, labels[0]], 1 - area, atol=1e-6)
        assert torch.allclose(targets.sum(1), torch.ones(6))


def test_mixup_cutmix_switch_and_input_checks():
    video, labels = labelled_batch()
    mixer = MixupCutmix(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, num_classes=5)
    kinds = set()
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, _ = mixer(video, labels)
        kinds.add("cutmix" if ((mixed == video).any() and (mixed != video).any()) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        mixer(video[:, :, 0], labels)
    with pytest.raises(ValueError, match="labels"):
        mixer(video, labels + 5)


def test_rand_augment_without_noise_matches_torchvision_on_the_timm_scale():
    """Magnitude m on the 0..10 scale gives torchvision's strengths for bin m of 11, op for op, seed for seed."""
    frames = distinct_frames(4, 40, 40)
    video = tv_tensors.Video(frames.permute(0, 3, 1, 2))
    ours = MagnitudeNoiseRandAugment(num_ops=3, magnitude=9)
    theirs = v2.RandAugment(num_ops=3, magnitude=9, num_magnitude_bins=11,
                            interpolation=v2.InterpolationMode.BILINEAR)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = theirs(video)
        torch.manual_seed(seed)
        assert torch.equal(ours(video), expected), f"seed {seed}"


def brightness_only(augment: MagnitudeNoiseRandAugment) -> MagnitudeNoiseRandAugment:
    augment._AUGMENTATION_SPACE = {"Brightness": v2.RandAugment._AUGMENTATION_SPACE["Brightness"]}
    return augment


@pytest.mark.parametrize("std", [0.0, 0.5])
def test_rand_augment_magnitude_noise(std):
    """timm's mstd: each op draws its magnitude from N(m, std); read back from the brightness a grey clip gets."""
    grey = tv_tensors.Video(torch.full((2, 3, 8, 8), 100, dtype=torch.uint8))
    augment = brightness_only(MagnitudeNoiseRandAugment(num_ops=1, magnitude=7, magnitude_std=std))
    magnitudes = []
    for seed in range(400):
        torch.manual_seed(seed)
        factor = augment(grey).float().mean().item() / 100  # brightness factor 1 +- 0.09 * magnitude
        magnitudes.append(abs(factor - 1) / 0.09)
    magnitudes = torch.tensor(magnitudes)
    if std == 0:
        assert torch.allclose(magnitudes, torch.full_like(magnitudes, 7.0), atol=0.02)
    else:
        assert abs(magnitudes.mean().item() - 7) < 0.1 and 0.4 < magnitudes.std().item() < 0.6


def test_rand_augment_magnitude_noise_is_clipped_to_the_scale():
    augment = MagnitudeNoiseRandAugment(num_ops=1, magnitude=10, magnitude_std=3.0)
    torch.manual_seed(0)
    drawn = [augment._draw_magnitude() for _ in range(200)]
    assert max(drawn) == 10.0 and min(drawn) >= 0.0 and len(set(drawn)) > 50
    with pytest.raises(ValueError, match="std"):
        MagnitudeNoiseRandAugment(num_ops=1, magnitude=7, magnitude_std=-1)
