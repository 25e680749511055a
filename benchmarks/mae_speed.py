"""Cost of one MAE pretraining step against one full-token fine-tuning step, and against the official MAE.

    python benchmarks/mae_speed.py --threads 1   # mae_hiera_base_16x224 vs hiera_base_16x224, batch 1 (~3 min)
    python benchmarks/mae_speed.py --smoke       # a tiny MAE and classifier, 2 repetitions (seconds)

Four training steps (forward + backward) run interleaved, medians reported:
  ours MAE       MaskedAutoencoderHiera, mask ratio 0.9 (one fixed random mask)
  official MAE   hiera.hiera_mae.MaskedAutoencoderHiera with identical weights and the same mask
  ours full      our Hiera classifier on all tokens, encoder weights copied from the MAE (cross-entropy loss)
  official full  the official Hiera classifier, same weights
Targets: ours MAE <= 0.75 x ours full (the arithmetic ratio of hiera_base_16x224 is 71.3 / 101.7 GMACs = 0.70),
and ours MAE >= 1.2x faster than the official MAE.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common import PeakMemory, format_mb, format_table, interleaved_times, load_note, median
from hiera_video.models import create_model
from hiera_video.models.complexity import count_gmacs

MASK_RATIO = 0.9
TARGET_MAE_OVER_FULL = 0.75
TARGET_SPEEDUP_OVER_OFFICIAL = 1.2
VIDEO_STEM = dict(q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4),
                  patch_padding=(1, 3, 3), sep_pos_embed=True)
# Encoder sizes; "tiny" keeps the released structure (4 stages, q_pool 2, 1x8x8-token mask units) for smoke runs.
SIZES = {
    "base": dict(input_size=(16, 224, 224), embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "tiny": dict(input_size=(8, 128, 128), embed_dim=48, num_heads=1, stages=(1, 2, 3, 1)),
}
DECODERS = {"base": {}, "tiny": dict(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2)}  # {} = release


def build_models(size: str) -> dict[str, nn.Module]:
    """The four models, all carrying the official MAE's random init (the classifiers get its encoder)."""
    import hiera
    from hiera.hiera_mae import MaskedAutoencoderHiera as OfficialMAE

    torch.manual_seed(0)
    official_mae = OfficialMAE(**VIDEO_STEM, **SIZES[size], **DECODERS[size], q_pool=2)
    official_full = hiera.Hiera(**VIDEO_STEM, **SIZES[size], num_classes=400)
    ours_mae = create_model("mae_hiera_base_16x224", **SIZES[size], **DECODERS[size])
    ours_full = create_model("hiera_base_16x224", **SIZES[size])
    ours_mae.load_state_dict(official_mae.state_dict(), strict=True)
    encoder = {k: v for k, v in official_mae.state_dict().items() if k in ours_full.state_dict()}
    for model in (official_full, ours_full):
        missing = model.load_state_dict(encoder, strict=False).missing_keys
        if sorted(missing) != ["head.projection.bias", "head.projection.weight", "norm.bias", "norm.weight"]:
            raise RuntimeError(f"the MAE encoder weights do not all fit the classifier; missing {missing}")
    return {"ours MAE": ours_mae, "official MAE": official_mae, "ours full": ours_full,
            "official full": official_full}


def training_step(name: str, model: nn.Module, clip: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    """One forward + backward of `model` (MAE loss with `mask`, or cross-entropy for a classifier)."""
    model.train()
    label = torch.tensor([7])

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss = model(clip, mask=mask)[0] if "MAE" in name else F.cross_entropy(model(clip), label)
        loss.backward()

    return step


def check_same_loss(models: dict[str, nn.Module], clip: torch.Tensor, mask: torch.Tensor) -> float:
    """|our MAE loss - the official MAE loss| on `clip` with `mask`: zero up to rounding for the same weights."""
    with torch.no_grad():
        ours, official = (models[n](clip, mask=mask)[0].item() for n in ("ours MAE", "official MAE"))
    return abs(ours - official)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 repetitions")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions (default 3, smoke 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.smoke else 3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_note()}", flush=True)

    models = build_models("tiny" if args.smoke else "base")
    ours_mae = models["ours MAE"]
    input_shape = (1, 3, *ours_mae.input_size)
    clip = torch.randn(*input_shape, generator=torch.Generator().manual_seed(1))
    mask = ours_mae.random_mask(1, MASK_RATIO)
    total = count_gmacs(ours_mae, input_shape, mask=mask)
    encoder = count_gmacs(ours_mae, input_shape, method="forward_encoder", mask=mask)
    full = count_gmacs(models["ours full"], input_shape)
    print(f"GMACs per forward: MAE {total:.1f} (encoder on {100 * (1 - MASK_RATIO):.0f}% of tokens {encoder:.1f}, "
          f"fusion + decoder {total - encoder:.1f}), full-token classifier {full:.1f}: arithmetic ratio "
          f"{total / full:.2f}; |loss ours - official| {check_same_loss(models, clip, mask):.1e}", flush=True)

    steps = {name: training_step(name, model, clip, mask) for name, model in models.items()}
    times = interleaved_times(steps, repeats)
    peak = PeakMemory()
    memory = {name: peak.measure(step) for name, step in steps.items()}

    seconds = {name: median(t) for name, t in times.items()}
    rows = [[name, f"{seconds[name]:.3f}", " ".join(f"{t:.2f}" for t in times[name]), format_mb(memory[name])]
            for name in steps]
    print(format_table(["step (forward + backward)", "median s", "runs s", "peak MB"], rows))
    ours_ratio = seconds["ours MAE"] / seconds["ours full"]
    official_ratio = seconds["official MAE"] / seconds["official full"]
    speedup = seconds["official MAE"] / seconds["ours MAE"]
    print(f"MAE step / full step: ours {ours_ratio:.2f} (target <= {TARGET_MAE_OVER_FULL}), official "
          f"{official_ratio:.2f}, arithmetic {total / full:.2f}; {load_note()}")
    print(f"summary: ours MAE step {ours_ratio:.2f}x our full-token step (target <= {TARGET_MAE_OVER_FULL}: "
          f"{'met' if ours_ratio <= TARGET_MAE_OVER_FULL else 'MISSED'}); {speedup:.2f}x faster than the official "
          f"MAE step (target >= {TARGET_SPEEDUP_OVER_OFFICIAL}: "
          f"{'met' if speedup >= TARGET_SPEEDUP_OVER_OFFICIAL else 'MISSED'})")


if __name__ == "__main__":
    main()
