"""Training-step speed and peak GPU memory of Hiera-B and Hiera-L 16x224, MAE pretraining and fine-tuning at bf16:
across torch.compile modes, activation checkpointing on and off, DDP against FSDP on all visible GPUs, and the
official model's step on the same batch.

    python benchmarks/gpu_speed.py                     # every row on all visible GPUs (long: max-autotune compiles)
    python benchmarks/gpu_speed.py --models hiera_base_16x224 --tasks mae --compile none default --batch 8
    python benchmarks/gpu_speed.py --smoke             # a tiny Hiera on 2 CPU processes: checks the script only

Without a CUDA device (and without --smoke) it says so and exits with status 0: there is nothing to measure.

One process per visible GPU (started like torchrun, by hiera_video.engine.launch), each with --batch clips of
16x224x224, random values; MAE at MAE.MASK_RATIO 0.9, fine-tuning with the 400-class head. A step is what the
trainer does: forward under the training autocast (TRAIN.MIXED_PRECISION, bfloat16), the task's loss, backward,
AdamW step (engine/optim.py). Per row (one JSON line each as soon as measured, a table at the end):
  impl         ours (hiera_video) or official (the hiera-transformer package, eager, DDP: its reference step)
  parallelism  ddp (DistributedDataParallel) or fsdp (TRAIN.PARALLELISM fsdp: engine/parallel.py); single on 1 GPU
  compile      none, or torch.compile(model, mode=..., dynamic=False) of the (sharded) model, as TRAIN.COMPILE
  act_ckpt     MODEL.ACT_CHECKPOINT on/off (rows with it on need a version of hiera_video that has the key)
  clips_per_s  clips of all GPUs per second over --steps timed steps after --warmup untimed ones (compilation)
  peak_mem_gb  the largest torch.cuda.max_memory_allocated of the processes over the timed steps
A row that runs out of memory is reported as "oom" and the next one runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from common import format_table
from hiera_video.config import get_cfg, load_config
from hiera_video.engine import launch, parallel
from hiera_video.engine.optim import build_optimizer
from hiera_video.models.build import model_overrides
from hiera_video.models.registry import model_spec
from hiera_video.tasks import build_task
from hiera_video.utils import distributed as du
from hiera_video.utils.amp import amp_context

MODELS = ("hiera_base_16x224", "hiera_large_16x224")
TASKS = ("mae", "finetune")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
MASK_RATIO = 0.9
# --smoke: a tiny Hiera of the released structure (4 stages, 2 q-pools, 1x8x8-token mask units) on 4x64x64 clips.
SMOKE_OPTS = ["HIERA.STAGES", "[1, 1, 1, 1]", "HIERA.EMBED_DIM", "16", "HIERA.NUM_HEADS", "1", "DATA.NUM_FRAMES",
              "4", "DATA.TRAIN_CROP_SIZE", "64", "MAE.DECODER_EMBED_DIM", "32", "MAE.DECODER_DEPTH", "1",
              "MAE.DECODER_NUM_HEADS", "1", "MODEL.NUM_CLASSES", "2", "MAE.MASK_RATIO", "0.5"]


@dataclass(frozen=True)
class Row:
    model: str
    task: str
    impl: str
    parallelism: str
    compile: str
    act_ckpt: bool


def act_checkpoint_available() -> bool:
    return "ACT_CHECKPOINT" in get_cfg().MODEL


def plan(args: argparse.Namespace, num_gpus: int) -> list[Row]:
    """The rows to measure: ours for every combination asked for, the official model once per model and task."""
    parallelisms = args.parallelism if num_gpus > 1 else ["single"]
    act_ckpts = [False, True] if act_checkpoint_available() else [False]
    rows = []
    for model in args.models:
        for task in args.tasks:
            rows += [Row(model, task, "ours", p, c, a) for p in parallelisms for c in args.compile for a in act_ckpts]
            if args.official:
                rows.append(Row(model, task, "official", "ddp" if num_gpus > 1 else "single", "none", False))
    return rows


def row_config(row: Row, args: argparse.Namespace, world_size: int):
    arch = f"mae_{row.model}" if row.task == "mae" else row.model
    opts = ["TASK", "mae" if row.task == "mae" else "classification", "MODEL.ARCH", arch,
            "TRAIN.BATCH_SIZE", str(args.batch * world_size), "TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE",
            "bfloat16", "TRAIN.PARALLELISM", "fsdp" if row.parallelism == "fsdp" else "ddp",
            "MAE.MASK_RATIO", str(MASK_RATIO), "NUM_GPUS", "0" if args.smoke else str(world_size)]
    if row.act_ckpt:
        opts += ["MODEL.ACT_CHECKPOINT", "True"]
    return load_config([], opts + (SMOKE_OPTS if args.smoke else []))


def official_model(cfg, row: Row, smoke: bool) -> nn.Module:
    """The hiera-transformer model of the row (for --smoke, built with the tiny config's sizes)."""
    import hiera
    from hiera.hiera_mae import MaskedAutoencoderHiera

    name = cfg.MODEL.ARCH
    if not smoke:
        return getattr(hiera, name)(pretrained=False)
    sizes = {**model_spec(name).defaults, **model_overrides(cfg), "mask_unit_size": (1, 8, 8), "sep_pos_embed": True}
    for ours_only in ("target", "act_checkpoint"):  # keys the official constructors do not take
        sizes.pop(ours_only, None)
    return MaskedAutoencoderHiera(**sizes) if row.task == "mae" else hiera.Hiera(**sizes)


def build_step(ctx: du.DistContext, row: Row, args: argparse.Namespace) -> Callable[[], None]:
    """One training step of the row on this process's batch."""
    cfg = row_config(row, args, ctx.world_size)
    torch.manual_seed(0)
    task = build_task(cfg, ctx)
    model = official_model(cfg, row, args.smoke) if row.impl == "official" else task.build_model()
    model = parallel.shard_model(model.to(ctx.device), cfg, ctx)
    optimizer = build_optimizer(model, "adamw", base_lr=1e-4, weight_decay=0.05)
    run_model: nn.Module = model
    if row.compile != "none":
        run_model = torch.compile(model, mode=row.compile, dynamic=False)  # type: ignore[assignment]
    if ctx.world_size > 1 and not parallel.is_sharded(model):
        run_model = DistributedDataParallel(run_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                            else None)
    size = cfg.DATA.TRAIN_CROP_SIZE
    video = torch.randn(args.batch, 3, cfg.DATA.NUM_FRAMES, size, size, device=ctx.device)
    batch = {"video": video, "label": torch.randint(0, cfg.MODEL.NUM_CLASSES, (args.batch,), device=ctx.device)}

    def loss() -> torch.Tensor:
        if row.impl == "ours":
            return task.loss(run_model, batch)[0]
        if row.task == "mae":
            return run_model(video, mask_ratio=cfg.MAE.MASK_RATIO)[0]
        return F.cross_entropy(run_model(video), batch["label"])

    def step() -> None:
        with amp_context(cfg, ctx.device):
            value = loss()
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    du.barrier()


def measure(ctx: du.DistContext, row: Row, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {**asdict(row), "gpus": ctx.world_size, "batch_per_gpu": args.batch}
    try:
        step = build_step(ctx, row, args)
        for _ in range(args.warmup):
            step()
        synchronize(ctx.device)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(ctx.device)
        seconds = (time.perf_counter() - start) / args.steps
        peak = torch.cuda.max_memory_allocated(ctx.device) / 1e9 if ctx.device.type == "cuda" else None
        peaks = [p for p in du.all_gather_object(peak) if p is not None]
        result.update(status="ok", step_ms=round(1000 * seconds, 2),
                      clips_per_s=round(args.batch * ctx.world_size / seconds, 2),
                      peak_mem_gb=round(max(peaks), 2) if peaks else None)
    except torch.cuda.OutOfMemoryError:
        result.update(status="oom")
    except Exception as error:
        raise RuntimeError(f"{row}: {type(error).__name__}: {error}") from error
    finally:
        step = None  # type: ignore[assignment]  # frees the row's model and optimizer before the next row
        gc.collect()
        torch._dynamo.reset()
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def measure_rows(ctx: du.DistContext, rows: list[Row], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs in every process; rank 0 prints each row's JSON line as soon as it is measured."""
    warnings.filterwarnings("ignore", category=UserWarning)
    results = []
    for row in rows:
        results.append(measure(ctx, row, args))
        if ctx.is_main:
            print(json.dumps(results[-1]), flush=True)
    return results


def table(results: list[dict[str, Any]]) -> str:
    headers = ["model", "task", "impl", "parallelism", "gpus", "compile", "act ckpt", "clips/s", "step ms",
               "peak GB", "status"]
    rows = [[r["model"], r["task"], r["impl"], r["parallelism"], r["gpus"], r["compile"], "on" if r["act_ckpt"]
             else "off", r.get("clips_per_s", "-"), r.get("step_ms", "-"),
             "n/a" if r.get("peak_mem_gb") is None else r["peak_mem_gb"], r["status"]] for r in results]
    return format_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--compile", nargs="+", default=list(COMPILE_MODES), choices=COMPILE_MODES)
    parser.add_argument("--parallelism", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"],
                        help="with more than one GPU (one GPU: single)")
    parser.add_argument("--no-official", dest="official", action="store_false", help="skip the official rows")
    parser.add_argument("--batch", type=int, default=8, help="clips per GPU and step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny Hiera on 2 CPU processes, eager, 1+1 steps: checks the script, measures nothing")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.compile, args.batch, args.warmup, args.steps = ["hiera_base_16x224"], ["none"], 1, 1, 1
        num_procs = 2
    elif not torch.cuda.is_available():
        print("gpu_speed: no CUDA device is visible, so there is nothing to measure (skipped). Run it on a GPU "
              "machine; --smoke checks the script on the CPU.")
        return
    else:
        num_procs = torch.cuda.device_count()
        print(f"torch {torch.__version__}, {num_procs} x {torch.cuda.get_device_name(0)}", flush=True)
    if not act_checkpoint_available():
        print("MODEL.ACT_CHECKPOINT is not a config key of this version: rows with activation checkpointing "
              "are left out", flush=True)
    if args.smoke:
        print("smoke: a tiny Hiera (hiera_base_16x224 shrunk, 4x64x64 clips) on 2 CPU processes; the numbers "
              "mean nothing", flush=True)
    rows = plan(args, num_procs)
    results = launch.launch_local(measure_rows, num_procs, args=(rows, args), use_cuda=not args.smoke,
                                  timeout_minutes=30)[0]
    print(table(results))


if __name__ == "__main__":
    main()
