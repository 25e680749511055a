"""Fine-tuning initialisation from official classifier/MAE files and our checkpoints."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hiera_video.models import create_model, load_pretrained, load_state_file

BACKBONE = dict(
    input_size=(4, 64, 64), embed_dim=8, num_heads=2, stages=(1, 2, 2), q_pool=2, mask_unit_attn=(True, True, False)
)


def classifier(**overrides):
    return create_model("hiera_base_16x224", **{**BACKBONE, "num_classes": 5, **overrides})


def mae(**overrides):
    return create_model(
        "mae_hiera_base_16x224", **{**BACKBONE, "decoder_embed_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2},
        **overrides,
    )


def test_mae_weights_initialise_a_classifier_and_report_head_new_and_decoder_unused(tmp_path):
    pretrained = mae()
    torch.save({"model_state": pretrained.state_dict()}, tmp_path / "mae.pth")
    model = classifier()
    report = load_pretrained(model, tmp_path / "mae.pth")

    assert set(report.new_keys) == {"norm.weight", "norm.bias", "head.projection.weight", "head.projection.bias"}
    unused = set(report.unused_keys)
    assert {"mask_token", "decoder_pos_embed", "encoder_norm.weight", "decoder_embed.weight"} <= unused
    assert any(k.startswith("decoder_blocks.") for k in unused)
    assert any(k.startswith("multi_scale_fusion_heads.") for k in unused)
    assert not report.reinitialised and not report.interpolated
    for key, value in model.state_dict().items():
        if key in pretrained.state_dict():
            assert torch.equal(value, pretrained.state_dict()[key]), key
    summary = report.summary()
    assert "new (fresh init): 4 tensors in norm (2), head (2)" in summary
    assert "decoder_blocks" in summary


def test_other_num_classes_reinitialises_only_the_head():
    source = classifier(num_classes=400)
    model = classifier(num_classes=10)
    head_before = model.head.projection.weight.clone()
    report = load_pretrained(model, {"model_state": source.state_dict()})
    assert report.reinitialised == ["head.projection.weight", "head.projection.bias"]
    assert not report.new_keys and not report.unused_keys
    assert torch.equal(model.head.projection.weight, head_before)
    assert torch.equal(model.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)


def test_our_checkpoint_with_ddp_prefix_loads_completely():
    source = classifier()
    checkpoint = {
        "model_state": {f"module.{k}": v for k, v in source.state_dict().items()},
        "optimizer_state": {},
        "epoch": 3,
    }
    model = classifier()
    report = load_pretrained(model, checkpoint)
    assert len(report.loaded) == len(source.state_dict())
    assert not (report.new_keys or report.unused_keys or report.reinitialised)
    x = torch.randn(1, 3, 4, 64, 64)
    torch.testing.assert_close(model.eval()(x), source.eval()(x))


def test_position_embeddings_are_interpolated_to_another_clip_length_and_size():
    source = classifier(input_size=(8, 128, 128))  # 4 x 32 x 32 tokens
    model = classifier()  # 2 x 16 x 16 tokens
    report = load_pretrained(model, source.state_dict())
    assert report.interpolated == {
        "pos_embed_temporal": ((1, 4, 8), (1, 2, 8)),
        "pos_embed_spatial": ((1, 1024, 8), (1, 256, 8)),
    }
    expected_t = F.interpolate(source.pos_embed_temporal.detach().transpose(1, 2), size=2, mode="linear")
    torch.testing.assert_close(model.pos_embed_temporal.detach(), expected_t.transpose(1, 2))
    grid = source.pos_embed_spatial.detach().transpose(1, 2).reshape(1, 8, 32, 32)
    expected_s = F.interpolate(grid, size=(16, 16), mode="bilinear").flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.pos_embed_spatial.detach(), expected_s)
    assert model(torch.randn(1, 3, 4, 64, 64)).shape == (1, 5)
    assert "interpolated pos_embed_temporal: [1, 4, 8] -> [1, 2, 8]" in report.summary()


def test_other_shape_mismatch_names_key_and_shapes():
    source = classifier(embed_dim=16)
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight.*\[16, 3, 3, 7, 7\].*\[8, 3, 3, 7, 7\]"):
        load_pretrained(classifier(), source.state_dict())


def test_file_without_any_matching_key_is_rejected():
    with pytest.raises(ValueError, match="no tensor"):
        load_pretrained(classifier(), {"model_state": {"encoder.layer.0.weight": torch.zeros(2)}})
    with pytest.raises(ValueError, match="model_state"):
        load_pretrained(classifier(), {"epoch": 3, "cfg": "x"})


def test_load_state_file_is_weights_only_and_names_the_path(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model_state": {"w": torch.ones(2)}}, good)
    assert torch.equal(load_state_file(good)["model_state"]["w"], torch.ones(2))

    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_state_file(missing)

    unsafe = tmp_path / "unsafe.pth"  # arbitrary pickled objects are refused by weights_only=True
    torch.save({"model_state": {}, "hook": pytest.approx}, unsafe)
    with pytest.raises(ValueError, match="unsafe.pth"):
        load_state_file(unsafe)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(ValueError, match="corrupt.pth"):
        load_state_file(corrupt)
