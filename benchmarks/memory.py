"""Peak memory and step time of a training step with and without activation checkpointing (MODEL.ACT_CHECKPOINT).

    python benchmarks/memory.py --threads 1         # hiera_large_16x224 fine-tuning, batch 1 at 16x224x224 (~10 min)
    python benchmarks/memory.py --threads 1 --mae   # and mae_hiera_large_16x224 pretraining (mask ratio 0.9)
    python benchmarks/memory.py --smoke --mae       # tiny models (seconds)

The step is the trainer's: forward, loss, backward, AdamW step (the config's weight decay and layer decay; fused on
CUDA, as engine/cuda_options.py decides), zero_grad. Configs: configs/Kinetics/HIERA_L_16x224.yaml (soft-target
cross-entropy with label smoothing, drop path 0.2) and HIERA_L_MAE.yaml; random weights and a random clip, batch 1.

Each setting runs in a fresh process of its own (this script with --child), so each peak is that setting's alone:
one warm-up step (which also creates the AdamW state), then --steps timed steps, then one more step for "step MB".
Columns:
  peak MB    on the CPU the child's ru_maxrss after the timed steps: everything resident (weights, gradients, AdamW
             state, activations, what the allocator keeps, torch's libraries); on CUDA torch.cuda.max_memory_allocated
  step MB    what one step needs above what is resident before it (gradients, activations, temporaries), measured
             with glibc returning large freed blocks at once (common.PeakMemory, as model_speed.py's "peak MB"); on
             CUDA max_memory_allocated during the step minus memory_allocated before it
  static MB  weights + gradients + AdamW's two moments (4 x the parameters' bytes), which no checkpointing reduces
Both settings start from the same seed, so their losses must agree (printed). With --rounds N the settings run N
times each, alternating which goes first, and the medians are reported.

Target: with checkpointing, peak memory <= 0.5x the plain step's at >= 0.7x its speed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from common import PeakMemory, format_mb, format_table, load_note

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"fine-tuning": REPO / "configs" / "Kinetics" / "HIERA_L_16x224.yaml",
           "mae": REPO / "configs" / "Kinetics" / "HIERA_L_MAE.yaml"}
# --smoke: the same configs shrunk to a 3-stage, 16-channel Hiera on 4-frame 32x32 clips (8 mask units: ratio 0.5).
SMOKE = ["HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32",
         "MAE.DECODER_EMBED_DIM", "32", "MAE.DECODER_DEPTH", "1", "MAE.DECODER_NUM_HEADS", "1", "MAE.MASK_RATIO", "0.5"]
TARGET_MEMORY = 0.5
TARGET_SPEED = 0.7


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("/proc/self/status has no VmRSS")


def child(spec: dict) -> dict:
    """One setting in this process: warm-up step, timed steps; returns times, losses and memory."""
    from hiera_video.config import load_config
    from hiera_video.engine.cuda_options import cuda_options
    from hiera_video.engine.optim import build_optimizer
    from hiera_video.models.build import build_model
    from hiera_video.tasks.classification import smoothed_one_hot, soft_target_cross_entropy
    from hiera_video.utils.amp import amp_context

    warnings.filterwarnings("ignore", category=UserWarning)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    libraries = _rss_bytes()
    cfg = load_config(str(CONFIGS[spec["model"]]), ["MODEL.ACT_CHECKPOINT", str(spec["act_checkpoint"]),
                                                   *(SMOKE if spec["smoke"] else [])])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(model, cfg.SOLVER.OPTIMIZING_METHOD, base_lr=cfg.SOLVER.BASE_LR,
                                weight_decay=cfg.SOLVER.WEIGHT_DECAY, betas=cfg.SOLVER.BETAS,
                                layer_decay=cfg.SOLVER.LAYER_DECAY, fused=cuda_options(device, 1).fused_adamw)
    size = cfg.DATA.TRAIN_CROP_SIZE
    clip = torch.randn(1, 3, cfg.DATA.NUM_FRAMES, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    target = smoothed_one_hot(torch.tensor([7], device=device), cfg.MODEL.NUM_CLASSES,
                              cfg.MIXUP.LABEL_SMOOTH_VALUE)

    def step() -> float:
        with amp_context(cfg, device):
            if spec["model"] == "mae":
                loss = model(clip, mask_ratio=cfg.MAE.MASK_RATIO)[0]
            else:
                loss = soft_target_cross_entropy(model(clip), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    times, losses = [], []
    for _ in range(1 + spec["steps"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        losses.append(step())
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        libraries = 0
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        losses.append(step())
        step_bytes: int | None = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kilobytes
        step_bytes = PeakMemory().measure(lambda: losses.append(step()))  # after the timings: it slows allocation
    static = sum(p.numel() * p.element_size() * (4 if p.requires_grad else 1) for p in model.parameters())
    return {"times": times[1:], "warmup": times[0], "losses": losses, "peak": peak, "libraries": libraries,
            "step": step_bytes, "static": static, "device": str(device), "arch": cfg.MODEL.ARCH,
            "input": f"{cfg.DATA.NUM_FRAMES}x{size}x{size}"}


def run_child(spec: dict) -> dict:
    """`child(spec)` in a new process; its last stdout line is the result."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(spec["threads"])} if spec["threads"] else {})}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        reason = " (killed: out of memory?)" if done.returncode < 0 else ""
        raise RuntimeError(f"the {spec} process failed with status {done.returncode}{reason}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median_or_none(values: list) -> float | None:
    return None if None in values else statistics.median(values)


def _ratio(numerator: float | None, denominator: float | None) -> float:
    return float("nan") if numerator is None or denominator is None else numerator / denominator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models")
    parser.add_argument("--mae", action="store_true", help="also the MAE pretraining step")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process after the warm-up step")
    parser.add_argument("--rounds", type=int, default=1, help="processes per setting (alternating order)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print(f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads; {load_note()}", flush=True)
    rows, ratios = [], []
    for model in ["fine-tuning"] + ["mae"] * args.mae:
        results: dict[bool, list[dict]] = {False: [], True: []}
        for round_index in range(args.rounds):
            for act_checkpoint in (False, True) if round_index % 2 == 0 else (True, False):
                spec = {"model": model, "act_checkpoint": act_checkpoint, "steps": args.steps,
                        "threads": args.threads, "smoke": args.smoke}
                results[act_checkpoint].append(run_child(spec))
        name = f"{results[False][0]['arch']} {model} {results[False][0]['input']}"
        seconds, memory = {}, {}
        for act_checkpoint, runs in results.items():
            times = [t for run in runs for t in run["times"]]
            seconds[act_checkpoint] = statistics.median(times)
            memory[act_checkpoint] = {key: _median_or_none([run[key] for run in runs])
                                      for key in ("peak", "step", "static", "libraries")}
            rows.append([name, "on" if act_checkpoint else "off", f"{seconds[act_checkpoint]:.2f}",
                         " ".join(f"{t:.2f}" for t in times),
                         *(format_mb(memory[act_checkpoint][key]) for key in ("peak", "step", "static", "libraries"))])
        loss_gap = max(abs(a - b) for plain, checkpointed in zip(results[False], results[True])
                       for a, b in zip(plain["losses"], checkpointed["losses"]))
        ratios.append((name, _ratio(memory[True]["peak"], memory[False]["peak"]),
                       _ratio(memory[True]["step"], memory[False]["step"]), seconds[False] / seconds[True], loss_gap))
    device = results[False][0]["device"]
    memory_kind = "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "ru_maxrss"
    print(f"device {device}; peak = {memory_kind} of the setting's own process")
    print(format_table(["model, input", "act checkpoint", "median s", "steps s", "peak MB", "step MB", "static MB",
                        "libraries MB"], rows))
    parts = []
    for name, peak, step, speed, loss_gap in ratios:
        print(f"{name}: checkpointed / plain peak memory {peak:.2f}, step memory {step:.2f}, speed {speed:.2f}; "
              f"|loss difference| {loss_gap:.1e}")
        parts.append(f"{name} with MODEL.ACT_CHECKPOINT: peak memory {peak:.2f}x (target <= {TARGET_MEMORY}: "
                     f"{'met' if peak <= TARGET_MEMORY else 'MISSED'}; step memory {step:.2f}x), speed {speed:.2f}x "
                     f"(target >= {TARGET_SPEED}: {'met' if speed >= TARGET_SPEED else 'MISSED'})")
    print(f"{load_note()}")
    print("summary: " + "; ".join(parts))


if __name__ == "__main__":
    main()
