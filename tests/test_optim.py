"""Parameter groups (weight-decay exclusions, layer-wise LR decay), optimizer construction and LR schedules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hiera_video.engine.optim import build_optimizer, lr_at, param_groups, scaled_lr, set_lr


class TinyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim)


class TinyBackbone(nn.Module):
    """Hiera-like names: pos_embed_*, patch_embed.proj, mask_token, blocks.<i>, norm, head.projection."""

    def __init__(self, dim: int = 8, depth: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.pos_embed_spatial = nn.Parameter(torch.randn(1, 4, dim))
        self.pos_embed_temporal = nn.Parameter(torch.randn(1, 2, dim))
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim))
        self.rel_table = nn.Parameter(torch.randn(3, dim))  # 2-D, excluded only through no_weight_decay()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, kernel_size=1)
        self.blocks = nn.ModuleList(TinyBlock(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Module()
        self.head.projection = nn.Linear(dim, num_classes)

    def no_weight_decay(self) -> list[str]:
        return ["rel_table"]


def _by_name(groups: list[dict], key: str) -> dict[str, float]:
    return {name: group[key] for group in groups for name in group["param_names"]}


def test_no_weight_decay_on_norms_biases_pos_embeds_and_declared_names():
    model = TinyBackbone()
    wd = _by_name(param_groups(model, weight_decay=0.05), "weight_decay")
    no_decay = {name for name, value in wd.items() if value == 0.0}
    assert no_decay == {
        "pos_embed_spatial", "pos_embed_temporal", "rel_table", "patch_embed.proj.bias",
        "blocks.0.norm1.weight", "blocks.0.norm1.bias", "blocks.0.mlp.bias",
        "blocks.1.norm1.weight", "blocks.1.norm1.bias", "blocks.1.mlp.bias",
        "blocks.2.norm1.weight", "blocks.2.norm1.bias", "blocks.2.mlp.bias",
        "norm.weight", "norm.bias", "head.projection.bias",
    }
    decay = {name for name, value in wd.items() if value == 0.05}
    assert decay == {"mask_token", "patch_embed.proj.weight", "blocks.0.mlp.weight", "blocks.1.mlp.weight",
                     "blocks.2.mlp.weight", "head.projection.weight"}


def test_no_decay_names_adds_exclusions():
    wd = _by_name(param_groups(TinyBackbone(), 0.05, no_decay_names=("mask_token",)), "weight_decay")
    assert wd["mask_token"] == 0.0
    assert wd["head.projection.weight"] == 0.05


def test_layer_decay_scales_follow_block_depth():
    groups = param_groups(TinyBackbone(depth=3), weight_decay=0.05, layer_decay=0.5)
    scale = _by_name(groups, "lr_scale")
    # num_layers = 3: embeddings are layer 0, blocks.i layer i+1, the rest layer 4.
    for name in ("pos_embed_spatial", "pos_embed_temporal", "patch_embed.proj.weight", "mask_token"):
        assert scale[name] == pytest.approx(0.5 ** 4), name
    assert scale["blocks.0.mlp.weight"] == pytest.approx(0.5 ** 3)
    assert scale["blocks.1.norm1.bias"] == pytest.approx(0.5 ** 2)
    assert scale["blocks.2.mlp.weight"] == pytest.approx(0.5)
    for name in ("norm.weight", "head.projection.weight", "head.projection.bias", "rel_table"):
        assert scale[name] == 1.0, name


def test_groups_are_unique_per_decay_and_scale_and_skip_frozen_params():
    model = TinyBackbone(depth=3)
    model.blocks[0].requires_grad_(False)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    keys = [(g["weight_decay"], g["lr_scale"]) for g in groups]
    assert len(keys) == len(set(keys))
    names = [n for g in groups for n in g["param_names"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable)
    assert not any(n.startswith("blocks.0.") for n in names)
    # Frozen blocks still count as layers: blocks.1 keeps its scale.
    assert _by_name(groups, "lr_scale")["blocks.1.mlp.weight"] == pytest.approx(0.5 ** 2)
    for group in groups:
        assert len(group["params"]) == len(group["param_names"])


def test_nested_backbone_counts_blocks_but_not_decoder_blocks():
    class WithDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = TinyBackbone(depth=2)
            self.decoder_blocks = nn.ModuleList(TinyBlock(8) for _ in range(4))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 3, 8))

    groups = param_groups(WithDecoder(), 0.05, layer_decay=0.5)
    scale, wd = _by_name(groups, "lr_scale"), _by_name(groups, "weight_decay")
    assert scale["backbone.blocks.0.mlp.weight"] == pytest.approx(0.5 ** 2)
    assert scale["backbone.pos_embed_spatial"] == pytest.approx(0.5 ** 3)
    assert scale["decoder_blocks.3.mlp.weight"] == 1.0
    assert wd["decoder_pos_embed"] == 0.0
    assert wd["backbone.rel_table"] == 0.0  # declared by the nested module's no_weight_decay()


def test_ddp_wrapped_model_gives_same_groups(single_process_group):
    model = TinyBackbone()
    ddp = nn.parallel.DistributedDataParallel(model)
    plain, wrapped = param_groups(model, 0.05, 0.7), param_groups(ddp, 0.05, 0.7)
    assert _by_name(wrapped, "lr_scale") == _by_name(plain, "lr_scale")
    assert _by_name(wrapped, "weight_decay") == _by_name(plain, "weight_decay")


def test_official_hiera_pos_embeds_excluded_and_head_undecayed():
    hiera = pytest.importorskip("hiera")
    model = hiera.Hiera(input_size=(4, 32, 32), embed_dim=8, num_heads=1, stages=(1, 1, 1, 1), q_pool=0,
                        num_classes=3, patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3),
                        sep_pos_embed=True)
    groups = param_groups(model, 0.05, layer_decay=0.5)
    wd, scale = _by_name(groups, "weight_decay"), _by_name(groups, "lr_scale")
    assert wd["pos_embed_spatial"] == wd["pos_embed_temporal"] == 0.0
    assert scale["pos_embed_spatial"] == pytest.approx(0.5 ** 5)  # 4 blocks
    assert scale["blocks.3.attn.qkv.weight"] == pytest.approx(0.5)
    assert scale["head.projection.weight"] == 1.0 and wd["head.projection.weight"] == 0.05


def test_adamw_groups_start_at_scaled_lr_and_set_lr_applies_scales():
    opt = build_optimizer(TinyBackbone(), "adamw", base_lr=1e-3, weight_decay=0.05, betas=[0.9, 0.95],
                          layer_decay=0.5)
    assert isinstance(opt, torch.optim.AdamW)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
        assert group["betas"] == (0.9, 0.95)
    set_lr(opt, 2e-4)
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx(
        sorted(2e-4 * g["lr_scale"] for g in opt.param_groups))


def test_sgd_step_decays_only_decayed_params():
    model = TinyBackbone()
    opt = build_optimizer(model, "sgd", base_lr=0.1, weight_decay=0.5, momentum=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    # With zero gradients SGD moves a decayed parameter by -lr * wd * p and leaves the others alone.
    torch.testing.assert_close(after["head.projection.weight"], before["head.projection.weight"] * (1 - 0.05))
    torch.testing.assert_close(after["pos_embed_spatial"], before["pos_embed_spatial"])
    torch.testing.assert_close(after["norm.weight"], before["norm.weight"])


def test_unknown_optimizer_and_bad_layer_decay_raise():
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'"):
        build_optimizer(TinyBackbone(), "lamb", base_lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(TinyBackbone(), 0.0, layer_decay=1.5)


def test_scaled_lr_is_linear_in_batch():
    assert scaled_lr(1e-3, 512) == pytest.approx(2e-3)
    assert scaled_lr(8e-4, 64, reference_batch=4096) == pytest.approx(1.25e-5)
    with pytest.raises(ValueError):
        scaled_lr(1e-3, 0)


SCHEDULE = dict(base_lr=1e-3, max_epoch=100, warmup_epochs=5, warmup_start_lr=1e-6, end_lr=1e-5)


def test_warmup_is_linear_from_start_lr_to_base_lr():
    assert lr_at(0.0, **SCHEDULE) == pytest.approx(1e-6)
    assert lr_at(2.5, **SCHEDULE) == pytest.approx((1e-6 + 1e-3) / 2)
    assert lr_at(5.0, **SCHEDULE) == pytest.approx(1e-3)


def test_cosine_spans_the_post_warmup_epochs():
    assert lr_at(52.5, **SCHEDULE) == pytest.approx((1e-3 + 1e-5) / 2)  # halfway between warmup end and max
    quarter = 5 + 95 / 4
    assert lr_at(quarter, **SCHEDULE) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(100.0, **SCHEDULE) == pytest.approx(1e-5)
    assert lr_at(120.0, **SCHEDULE) == pytest.approx(1e-5)
    lrs = [lr_at(e / 10, **SCHEDULE) for e in range(50, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_constant_policy_and_no_warmup():
    assert lr_at(60.0, **SCHEDULE, policy="constant") == pytest.approx(1e-3)
    assert lr_at(1.0, **SCHEDULE, policy="constant") == pytest.approx(1e-6 + (1e-3 - 1e-6) / 5)
    assert lr_at(0.0, **{**SCHEDULE, "warmup_epochs": 0}) == pytest.approx(1e-3)


def test_bad_schedules_raise():
    with pytest.raises(ValueError, match="Unknown LR policy"):
        lr_at(1.0, **SCHEDULE, policy="steps")
    with pytest.raises(ValueError, match="warmup_epochs"):
        lr_at(1.0, **{**SCHEDULE, "warmup_epochs": 100})
