"""Hiera backbone/classifier: release compatibility (sizes, keys, official numerics), masking, shapes, errors."""
from __future__ import annotations

import pytest
import torch

from hiera_video import models
from hiera_video.models import Hiera, create_model, list_models
from hiera_video.models import hiera as hiera_module
from hiera_video.models.complexity import count_gmacs, count_params
from hiera_video.models.hiera import reroll_tokens, unroll_tokens, unwindow_units

# A tiny video Hiera with the released structure: 3 stages, windowed -> global attention with the one-block lag
# (block 3 pools and is still windowed, block 4 is global), 2 q-pools, multi-head.
TINY_VIDEO = dict(
    input_size=(4, 64, 64),
    embed_dim=8,
    num_heads=2,
    stages=(1, 2, 2),
    q_pool=2,
    q_stride=(1, 2, 2),
    mask_unit_attn=(True, True, False),
    num_classes=5,
)
TINY_IMAGE = dict(
    input_size=(32, 32), embed_dim=8, num_heads=1, stages=(1, 1, 2), q_pool=1, mask_unit_attn=(True, False, False),
    num_classes=7,
)
VIDEO_STEM = dict(patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3))


def tiny_video(**overrides) -> Hiera:
    return create_model("hiera_base_16x224", **{**TINY_VIDEO, **overrides})


def official_tiny_video(hiera_pkg, cfg=TINY_VIDEO):
    unit = tuple(s ** (len(cfg["stages"]) - 1) for s in cfg["q_stride"])
    return hiera_pkg.Hiera(**cfg, **VIDEO_STEM, mask_unit_size=unit, sep_pos_embed=True)


# ---------------------------------------------------------------------------------------------------------------
# Release compatibility
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hiera_base_16x224", 51_092_560),
        ("hiera_base_plus_16x224", 69_392_240),
        ("hiera_large_16x224", 213_091_600),
        ("hiera_huge_16x224", 671_627_664),
        ("hiera_base_224", 51_524_968),
    ],
)
def test_parameter_counts_match_the_release(name, expected):
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == expected


def test_registry_lists_all_named_models():
    sizes = ("base", "base_plus", "large", "huge")
    expected = {f"hiera_{s}_16x224" for s in sizes} | {f"mae_hiera_{s}_16x224" for s in sizes}
    expected |= {f"hiera_{s}_224" for s in ("tiny", "small") + sizes}
    assert expected <= set(list_models())


@pytest.mark.slow
def test_every_registered_name_is_a_function_building_that_model():
    for name in list_models():
        constructor = getattr(models, name)
        assert constructor.__name__ == name and constructor.__doc__
        with torch.device("meta"):
            built, named = create_model(name), constructor()
        assert type(built) is type(named)
        assert [(k, v.shape) for k, v in built.state_dict().items()] == \
            [(k, v.shape) for k, v in named.state_dict().items()]
    with torch.device("meta"):
        assert models.hiera_base_16x224(num_classes=3).head.projection.out_features == 3


def test_state_dict_keys_and_shapes_equal_the_official_base_video_model(official_keys_and_shapes):
    reference = official_keys_and_shapes("hiera_base_16x224")
    assert len(reference) == 302
    with torch.device("meta"):
        model = create_model("hiera_base_16x224")
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == reference


def test_official_checkpoint_file_loads_strictly_and_gives_the_same_logits(tmp_path):
    hiera_pkg = pytest.importorskip("hiera")
    official = official_tiny_video(hiera_pkg).double()
    path = tmp_path / "hiera_tiny.pth"
    torch.save({"model_state": official.state_dict()}, path)

    model = tiny_video().double().eval()
    model.load_state_dict(torch.load(path, weights_only=True)["model_state"], strict=True)

    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    official.train()  # train mode with zero drop rates: deterministic and returns logits, not softmax
    expected, expected_maps = official(x, return_intermediates=True)
    logits, maps = model(x, return_intermediates=True)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
    assert [m.shape for m in maps] == [e.shape for e in expected_maps]
    for ours, theirs in zip(maps, expected_maps):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)
    # The official eval mode applies a softmax; ours always returns logits.
    torch.testing.assert_close(official.eval()(x), logits.softmax(dim=-1), rtol=0, atol=1e-9)


def test_masked_forward_matches_the_official_model():
    hiera_pkg = pytest.importorskip("hiera")
    official = official_tiny_video(hiera_pkg).double().train()
    model = tiny_video().double()
    model.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64)
    mask = model.random_mask(2, mask_ratio=0.75)

    expected, expected_maps = official(x, mask=mask, return_intermediates=True)
    tokens, maps = model(x, mask=mask, return_intermediates=True)
    kept = model.num_mask_units // 4
    assert tokens.shape == (2, kept, 32)  # one token per unit at the last stage, un-normed, no head
    torch.testing.assert_close(tokens, expected, rtol=0, atol=1e-9)
    assert [tuple(m.shape) for m in maps] == [(2, kept, 1, 4, 4, 8), (2, kept, 1, 2, 2, 16), (2, kept, 1, 1, 1, 32)]
    for ours, theirs in zip(maps, expected_maps):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


def test_image_model_matches_the_official_model():
    hiera_pkg = pytest.importorskip("hiera")
    official = hiera_pkg.Hiera(**TINY_IMAGE, mask_unit_size=(4, 4)).double().train()
    model = create_model("hiera_tiny_224", **TINY_IMAGE).double()
    model.load_state_dict(official.state_dict(), strict=True)
    assert "pos_embed" in dict(model.named_parameters())  # images: one joint position embedding
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    mask = model.random_mask(3, mask_ratio=0.5)
    for kwargs in ({}, {"mask": mask}):
        (out, maps), (expected, expected_maps) = (m(x, return_intermediates=True, **kwargs) for m in (model, official))
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)
        assert len(maps) == len(expected_maps) == 3
        for ours, theirs in zip(maps, expected_maps):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_full_size_base_video_model_matches_the_official_model():
    hiera_pkg = pytest.importorskip("hiera")
    official = hiera_pkg.hiera_base_16x224(pretrained=False).train()
    model = create_model("hiera_base_16x224")
    model.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        logits, maps = model(x, return_intermediates=True)
        expected, expected_maps = official(x, return_intermediates=True)
    torch.testing.assert_close(maps[-1], expected_maps[-1], rtol=1e-4, atol=1e-4)  # [1, 8, 7, 7, 768], O(1)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-7)  # logits ~1e-3 (head init scale 0.001)


@pytest.mark.slow
def test_base_video_gmacs_match_the_paper():
    model = create_model("hiera_base_16x224")
    assert count_gmacs(model, (1, 3, 16, 224, 224)) == pytest.approx(101.7, rel=0.01)


# ---------------------------------------------------------------------------------------------------------------
# Token order and masking
# ---------------------------------------------------------------------------------------------------------------


def test_unroll_puts_each_mask_unit_at_a_fixed_residue_and_reroll_inverts_it():
    grid, strides = (2, 8, 8), [(1, 2, 2)] * 2
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    unit_id = (t * 4 + (h // 4) * 2 + (w // 4)).flatten()  # 2x2x2 units of 1x4x4 tokens
    coords = torch.stack([t, h, w], dim=-1).view(1, -1, 3).double()
    unrolled = unroll_tokens(coords, grid, strides)
    positions = torch.arange(unrolled.shape[1])
    natural_index = (unrolled[0] * torch.tensor([64.0, 8.0, 1.0], dtype=torch.float64)).sum(dim=1).long()
    token_unit = unit_id[natural_index]
    assert torch.equal(token_unit, positions % 8)  # tokens of unit u sit at positions p with p % U == u
    # The first q-pool (max over the 4 slowest blocks) combines the 2x2 neighbourhoods of stride-2 positions.
    first_quarter = unrolled[0, : unrolled.shape[1] // 4]
    assert (first_quarter[:, 1] % 2 == 0).all() and (first_quarter[:, 2] % 2 == 0).all()
    per_unit = reroll_tokens(unrolled, strides, ndim=3)
    assert torch.equal(unwindow_units(per_unit, (2, 2, 2)).flatten(1, 3), coords)


def test_visible_outputs_ignore_masked_pixels():
    model = tiny_video().double().eval()
    x = torch.randn(1, 3, 4, 64, 64, dtype=torch.float64)
    mask = torch.zeros(1, model.num_mask_units, dtype=torch.bool)
    mask[0, [0, 5, 9, 30]] = True  # unit (t, h, w) = index t*16 + h*4 + w; units are 2 frames x 16x16 px
    tokens = model(x, mask=mask)

    changed = x.clone()
    changed[:, :, 0:2, 16:32, 0:16] += 10.0  # unit 4: masked, and next to the visible units 0 and 5
    torch.testing.assert_close(model(changed, mask=mask), tokens, rtol=0, atol=0)
    changed[:, :, 0:2, 16:32, 16:32] += 10.0  # unit 5 is visible: the output must change
    assert not torch.allclose(model(changed, mask=mask), tokens)


def test_random_mask_keeps_the_same_number_of_units_per_sample():
    model = tiny_video()
    mask = model.random_mask(4, mask_ratio=0.9)
    assert mask.shape == (4, 32) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [3, 3, 3, 3]
    assert not torch.equal(mask[0], mask[1]) or not torch.equal(mask[1], mask[2])


# ---------------------------------------------------------------------------------------------------------------
# Shapes exposed to other modules
# ---------------------------------------------------------------------------------------------------------------


def test_video_and_image_models_give_logits_and_natural_feature_maps():
    video = tiny_video()
    logits, maps = video(torch.randn(2, 3, 4, 64, 64), return_intermediates=True)
    assert logits.shape == (2, 5)
    assert [tuple(m.shape) for m in maps] == [(2, 2, 16, 16, 8), (2, 2, 8, 8, 16), (2, 2, 4, 4, 32)]
    assert video.stage_shapes == [(2, 16, 16), (2, 8, 8), (2, 4, 4)]
    assert video.stage_strides == [(2, 4, 4), (2, 8, 8), (2, 16, 16)]
    assert video.stage_dims == [8, 16, 32] and video.stage_ends == [0, 2, 4]
    assert video.num_mask_units == 32 and video.mask_spatial_shape == (2, 4, 4)
    assert video.mask_unit_size == (1, 4, 4) and video.mask_unit_pixel_size == (2, 16, 16)
    image = create_model("hiera_tiny_224", **TINY_IMAGE)
    logits, maps = image(torch.randn(2, 3, 32, 32), return_intermediates=True)
    assert logits.shape == (2, 7)
    assert [tuple(m.shape) for m in maps] == [(2, 8, 8, 8), (2, 4, 4, 16), (2, 4, 4, 32)]  # q_pool=1
    assert image.stage_strides == [(4, 4), (8, 8), (8, 8)]


def test_base_video_model_exposes_the_ava_feature_scale():
    with torch.device("meta"):
        model = create_model("hiera_base_16x224")
    assert model.stage_shapes[2] == (8, 14, 14) and model.stage_strides[2] == (2, 16, 16)
    assert model.stage_shapes[3] == (8, 7, 7) and model.stage_dims == [96, 192, 384, 768]
    assert model.tokens_spatial_shape == (8, 56, 56) and model.num_mask_units == 392


def test_drop_path_is_stochastic_in_training_only():
    model = tiny_video(drop_path_rate=0.5)
    x = torch.randn(2, 3, 4, 64, 64)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_list_input_uses_the_first_pathway():
    model = tiny_video().eval()
    x = torch.randn(1, 3, 4, 64, 64)
    torch.testing.assert_close(model([x]), model(x))


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_wrong_input_size_names_expected_and_received_shapes():
    model = tiny_video()
    with pytest.raises(ValueError, match=r"\[B, 3, 4, 64, 64\].*\[1, 3, 8, 64, 64\]"):
        model(torch.randn(1, 3, 8, 64, 64))


def test_input_size_not_divisible_by_mask_units_is_rejected_at_construction():
    with pytest.raises(ValueError, match=r"input_size=\(4, 72, 72\).*\(2, 16, 16\)"):
        tiny_video(input_size=(4, 72, 72))


def test_wrong_mask_is_rejected_with_both_shapes():
    model = tiny_video()
    x = torch.randn(2, 3, 4, 64, 64)
    with pytest.raises(ValueError, match=r"\[2, 32\].*\[2, 31\]"):
        model(x, mask=torch.ones(2, 31, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        model(x, mask=torch.ones(2, 32))
    uneven = torch.ones(2, 32, dtype=torch.bool)
    uneven[0, 0] = False
    with pytest.raises(ValueError, match="same"):
        model(x, mask=uneven)


def test_unknown_override_and_unknown_model_are_named():
    with pytest.raises(TypeError, match="embed_dimm"):
        create_model("hiera_base_16x224", embed_dimm=8)
    with pytest.raises(KeyError, match="hiera_bass_16x224"):
        create_model("hiera_bass_16x224")


def test_inconsistent_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="mask_unit_attn"):
        tiny_video(mask_unit_attn=(True, True, False, False))
    with pytest.raises(ValueError, match="mask_unit_size"):
        tiny_video(mask_unit_size=(1, 8, 8))
    with pytest.raises(ValueError, match="patch_padding"):
        tiny_video(patch_padding=(0, 0, 0))


def test_the_cpu_attention_switch_chooses_the_form_not_the_result(monkeypatch):
    assert hiera_module.use_explicit_attention(torch.device("cpu"), hiera_module.EXPLICIT_ATTENTION_MAX_KEYS)
    assert not hiera_module.use_explicit_attention(torch.device("cpu"), hiera_module.EXPLICIT_ATTENTION_MAX_KEYS + 1)
    assert not hiera_module.use_explicit_attention(torch.device("cuda", 0), 16)
    model = tiny_video().eval()
    x = torch.randn(1, 3, *model.input_size)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *args, **kwargs: calls.append(args) or sdpa(*args, **kwargs))
    with torch.no_grad():
        explicit = model(x)
        assert not calls  # every block attends over at most 256 keys
        monkeypatch.setattr(hiera_module, "_explicit_attention_max_keys", hiera_module._explicit_attention_max_keys)
        hiera_module.set_explicit_attention_max_keys(0)
        fused = model(x)
    assert len(calls) == len(model.blocks)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_keys must be >= 0"):
        hiera_module.set_explicit_attention_max_keys(-1)
