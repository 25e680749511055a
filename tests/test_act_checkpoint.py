"""MODEL.ACT_CHECKPOINT: every Hiera block recomputes its activations in backward, with the plain run's gradients."""
from __future__ import annotations

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.models import create_model
from hiera_video.models.build import build_model
from hiera_video.models.hiera import HieraBlock

# Tiny models with the released structure (windowed then global attention, 2 q-pools, multi-head), drop path on:
# its random draws must repeat when a block is recomputed.
TINY = dict(input_size=(4, 64, 64), embed_dim=8, num_heads=2, stages=(1, 2, 2), q_pool=2,
            mask_unit_attn=(True, True, False), drop_path_rate=0.3)
TINY_DECODER = dict(decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)


def count_block_passes(monkeypatch) -> dict[str, int]:
    """Counts every run of a block's computation (a recomputation in backward counts again)."""
    calls = {"n": 0}
    original = HieraBlock._forward

    def counted(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(HieraBlock, "_forward", counted)
    return calls


def loss_and_gradients(name: str, act_checkpoint: bool, clip: torch.Tensor, mask: torch.Tensor | None,
                       extra: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model(name, **TINY, **extra, act_checkpoint=act_checkpoint).double().train()
    torch.manual_seed(1)  # the same drop-path draws (and, for the MAE, the same decoder input) in both runs
    if name.startswith("mae_"):
        loss = model(clip, mask=mask)[0]
    else:
        out = model(clip, mask=mask)
        loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, masked, extra", [
    ("hiera_base_16x224", False, dict(num_classes=5, head_init_scale=1.0)),
    ("hiera_base_16x224", True, dict(num_classes=5, head_init_scale=1.0)),
    ("mae_hiera_base_16x224", True, TINY_DECODER),
], ids=["classifier", "classifier-masked", "mae-masked"])
def test_checkpointed_blocks_give_the_plain_gradients_in_float64(name, masked, extra, monkeypatch):
    clip = torch.randn(2, 3, 4, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = None
    if masked:
        num_units = create_model(name, **TINY, **extra).num_mask_units
        keep = torch.rand(2, num_units, generator=torch.Generator().manual_seed(3)).argsort(1).argsort(1)
        mask = keep < num_units // 2
    passes = count_block_passes(monkeypatch)
    plain_loss, plain = loss_and_gradients(name, False, clip, mask, extra)
    plain_passes = passes["n"]
    passes["n"] = 0
    checkpointed_loss, checkpointed = loss_and_gradients(name, True, clip, mask, extra)
    # Every block ran twice: once in forward, once recomputed in backward.
    assert passes["n"] == 2 * plain_passes > 0
    assert torch.equal(plain_loss, checkpointed_loss)
    assert plain.keys() == checkpointed.keys() and "blocks.0.attn.qkv.weight" in plain
    for key, grad in plain.items():
        assert grad.abs().max() > 0, key  # every comparison is of a gradient that flows
        # Within 1e-6, and within 1e-9 of each tensor's own scale (some gradients are only ~1e-5).
        torch.testing.assert_close(checkpointed[key], grad, rtol=1e-9, atol=min(1e-6, 1e-9 * grad.abs().max()),
                                   msg=key)


def test_evaluation_and_no_grad_run_each_block_once(monkeypatch):
    model = create_model("hiera_base_16x224", **TINY, num_classes=5, act_checkpoint=True)
    clip = torch.randn(1, 3, 4, 64, 64)
    passes = count_block_passes(monkeypatch)
    model.eval()
    model(clip).sum().backward()  # gradients without checkpointing in eval mode
    assert passes["n"] == len(model.blocks)
    model.train()
    with torch.no_grad():
        model(clip)
    assert passes["n"] == 2 * len(model.blocks)


def test_the_config_key_reaches_every_encoder_and_decoder_block(tmp_path):
    opts = ["HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "8", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE",
            "32", "MAE.DECODER_DEPTH", "2", "MAE.DECODER_EMBED_DIM", "16"]
    for task, arch in (("classification", "hiera_base_16x224"), ("mae", "mae_hiera_base_16x224")):
        for enabled in (False, True):
            cfg = load_config([], ["TASK", task, "MODEL.ARCH", arch, "MODEL.ACT_CHECKPOINT", str(enabled), *opts])
            blocks = [m for m in build_model(cfg).modules() if isinstance(m, HieraBlock)]
            assert len(blocks) == (5 if task == "mae" else 3)
            assert all(block.act_checkpoint is enabled for block in blocks)
