"""Speed and peak memory of our Hiera against the official implementation (`hiera-transformer`), side by side.

    python benchmarks/model_speed.py --threads 1   # tiny and hiera_base_16x224, eager and torch.compile (~8 min)
    python benchmarks/model_speed.py --smoke       # tiny config, eager only, 2 repetitions (seconds)

Both models get identical weights (the official model's state dict, loaded strictly into ours) and the same input
clip at batch 1. For every (config, compile, mode) row the two models and a large float32 matmul run interleaved
(see common.interleaved_times), and medians are reported: clips/s and the ratio ours/official (target >= 1.0),
peak memory of one step (extra resident memory over the step), and the share of the machine's matmul FLOP/s each
model reaches (GMACs x 2 / time, GMACs from fvcore; a training step counts 3x the forward). Target: >= 65% for
our hiera_base_16x224 forward. On a machine shared with other jobs use --threads 1 (see RESULTS.md).
"""
from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common import (
    PeakMemory,
    format_mb,
    format_table,
    interleaved_times,
    load_note,
    matmul_step,
    median,
)
from hiera_video.models import create_model
from hiera_video.models.complexity import count_gmacs

VIDEO_STEM = dict(q_stride=(1, 2, 2), patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3))
# A small video Hiera with the released structure (4 stages, windowed then global attention, 3 q-pools).
TINY = dict(input_size=(8, 128, 128), embed_dim=48, num_heads=1, stages=(1, 2, 3, 1), num_classes=400)
CONFIGS = {"tiny": TINY, "base": {}}  # overrides of hiera_base_16x224
TARGET_RATIO = 1.0
TARGET_BASE_FORWARD_UTILISATION = 0.65
# Backward costs about twice the forward (a gradient for the input and one for the weights of every matmul).
TRAINING_FLOPS_PER_FORWARD = 3


def build_pair(config: str) -> tuple[nn.Module, nn.Module]:
    """(ours, official) with the official model's random init copied into ours."""
    import hiera  # the `hiera-transformer` package (benchmark extra)

    overrides = CONFIGS[config]
    torch.manual_seed(0)
    if overrides:
        official = hiera.Hiera(**VIDEO_STEM, **overrides, mask_unit_size=(1, 8, 8), sep_pos_embed=True)
    else:
        official = hiera.hiera_base_16x224(pretrained=False)
    ours = create_model("hiera_base_16x224", **overrides)
    ours.load_state_dict(official.state_dict(), strict=True)
    return ours, official


def logit_difference(ours: nn.Module, official: nn.Module, clip: torch.Tensor) -> float:
    """max |ours - official| / max |official| over the logits of `clip` (both in train mode without dropout,
    where both return logits)."""
    with torch.no_grad():
        theirs = official.train()(clip)
        return ((ours.train()(clip) - theirs).abs().max() / theirs.abs().max()).item()


def inference_step(model: Callable, clip: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        with torch.no_grad():
            model(clip)

    return step


def training_step(model: Callable, module: nn.Module, clip: torch.Tensor, label: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        F.cross_entropy(model(clip), label).backward()

    return step


@dataclass
class Row:
    """One (config, compile, mode) comparison: the timed steps, FLOPs per step, and what was measured."""

    config: str
    compiled: bool
    mode: str
    steps: dict[str, Callable[[], object]]
    flops: float
    compile_seconds: dict[str, float] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # seconds per step; "matmul": FLOP/s samples
    peak: dict[str, int | None] = field(default_factory=dict)

    def clips_per_second(self, name: str) -> float:
        return 1.0 / median(self.times[name])

    @property
    def ratio(self) -> float:
        return self.clips_per_second("ours") / self.clips_per_second("official")

    def matmul_share(self, name: str) -> float:
        """Achieved FLOP/s of `name` over the median matmul FLOP/s measured in the same rounds."""
        return self.flops * self.clips_per_second(name) / median(self.times["matmul"])

    def label(self) -> str:
        return f"{self.config} {'compiled' if self.compiled else 'eager'} {self.mode}"


def prepare(model: nn.Module, mode: str, compiled: bool, clip: torch.Tensor, label: torch.Tensor):
    """The timed step of `model` in `mode`, and the seconds its first call took (compilation when compiled)."""
    model.train(mode == "training")
    # Static shapes: after the tiny config, automatic dynamic shapes would recompile the base config with symbolic
    # sizes, whose index arithmetic took inductor more than 10 minutes to simplify.
    runner = torch.compile(model, dynamic=False) if compiled else model
    step = inference_step(runner, clip) if mode == "inference" else training_step(runner, model, clip, label)
    start = time.perf_counter()
    step()
    return step, time.perf_counter() - start


def run(configs: list[str], compile_modes: list[bool], repeats: dict[str, dict[str, int]]) -> list[Row]:
    """Time every row (ours, official and a matmul interleaved), then measure peak memory of every step."""
    mm_step, mm_flops = matmul_step()
    rows = []
    for config in configs:
        ours, official = build_pair(config)
        input_shape = (1, 3, *ours.input_size)
        clip = torch.randn(*input_shape, generator=torch.Generator().manual_seed(1))
        label = torch.tensor([3])
        difference = logit_difference(ours, official, clip)
        gmacs = count_gmacs(ours, input_shape)
        print(f"{config}: input {list(input_shape)}, {gmacs:.2f} GMACs per forward, logits of ours vs official "
              f"differ by {difference:.1e} relative", flush=True)
        for compiled in compile_modes:
            for mode in ("inference", "training"):
                flops = 2e9 * gmacs * (1 if mode == "inference" else TRAINING_FLOPS_PER_FORWARD)
                row = Row(config, compiled, mode, {}, flops)
                for name, model in (("ours", ours), ("official", official)):
                    row.steps[name], row.compile_seconds[name] = prepare(model, mode, compiled, clip, label)
                # prepare() made each step's first (warm-up) call.
                row.times = interleaved_times({**row.steps, "matmul": mm_step}, repeats[config][mode], warmup=0)
                row.times["matmul"] = [mm_flops / t for t in row.times["matmul"]]
                rows.append(row)
                print(f"  timed {row.label()}", flush=True)
    memory = PeakMemory()
    for row in rows:
        row.peak = {name: memory.measure(step) for name, step in row.steps.items()}
    return rows


def report(rows: list[Row]) -> None:
    headers = ["config", "compile", "mode", "ours clip/s", "official clip/s", "ratio", "target", "ours MB",
               "official MB", "ours %mm", "official %mm", "compile s (ours/off.)"]
    table = []
    for row in rows:
        compile_cell = "{ours:.0f}/{official:.0f}".format(**row.compile_seconds) if row.compiled else "-"
        table.append([row.config, "yes" if row.compiled else "no", row.mode, f"{row.clips_per_second('ours'):.3f}",
                      f"{row.clips_per_second('official'):.3f}", f"{row.ratio:.2f}", f">= {TARGET_RATIO:.1f}",
                      format_mb(row.peak["ours"]), format_mb(row.peak["official"]),
                      f"{100 * row.matmul_share('ours'):.0f}", f"{100 * row.matmul_share('official'):.0f}",
                      compile_cell])
    print(format_table(headers, table))
    print("matmul FLOP/s (2048^2 float32, median per row): "
          + ", ".join(f"{median(r.times['matmul']) / 1e9:.0f}" for r in rows) + " GFLOP/s; " + load_note())
    worst, best = min(rows, key=lambda r: r.ratio), max(rows, key=lambda r: r.ratio)
    summary = [f"ours/official clips/s {worst.ratio:.2f}x worst ({worst.label()}) .. {best.ratio:.2f}x best "
               f"({best.label()}) over {len(rows)} rows (target >= {TARGET_RATIO:.1f}x in every row: "
               f"{'met' if worst.ratio >= TARGET_RATIO else 'MISSED'})"]
    for row in rows:
        if row.config == "base" and row.mode == "inference" and not row.compiled:
            ours, official = row.matmul_share("ours"), row.matmul_share("official")
            summary.append(f"hiera_base_16x224 eager forward at {100 * ours:.0f}% of matmul FLOP/s, official "
                           f"{100 * official:.0f}% (target >= {100 * TARGET_BASE_FORWARD_UTILISATION:.0f}%: "
                           f"{'met' if ours >= TARGET_BASE_FORWARD_UTILISATION else 'MISSED'})")
    print("summary: " + "; ".join(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny config, eager only, 2 repetitions")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["tiny", "base"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--repeats", type=int, default=None, help="repetitions per row (default: 20 tiny, 5/3 base)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    configs = ["tiny"] if args.smoke else args.configs
    compile_modes = [False] if args.smoke or args.no_compile else [False, True]
    repeats = {"tiny": {"inference": 20, "training": 10}, "base": {"inference": 5, "training": 3}}
    if args.smoke or args.repeats:
        repeats = {c: {m: 2 if args.smoke else args.repeats for m in ("inference", "training")} for c in CONFIGS}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_note()}", flush=True)
    report(run(configs, compile_modes, repeats))


if __name__ == "__main__":
    main()
