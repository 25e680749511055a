"""Print a model's parameters, GMACs (fvcore), activations and forward speed on this machine.

    python tools/model_info.py --model hiera_base_16x224
    python tools/model_info.py --model hiera_base_16x224 --frames 8 --size 160 --batch 2
    python tools/model_info.py --model mae_hiera_base_16x224          # MAE figures at mask ratio 0.9

GMACs and activations are per sample (batch 1); speed is clips (or images) per second at --batch.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from hiera_video.models import MaskedAutoencoderHiera, create_model, list_models, model_spec
from hiera_video.models.complexity import count_mactivations, count_params, gmacs_by_operator

MAE_MASK_RATIO = 0.9


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=list_models(), metavar="NAME", help="registered model name")
    parser.add_argument("--frames", type=int, help="clip length (video models; default: the model's)")
    parser.add_argument("--size", type=int, help="square input side in pixels (default: the model's)")
    parser.add_argument("--batch", type=int, default=1, help="batch size for the speed measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forward passes before timing")
    parser.add_argument("--iters", type=int, default=3, help="timed forward passes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def input_size_for(name: str, frames: int | None, size: int | None) -> Sequence[int]:
    """The model's default input size with --frames/--size applied."""
    default = list(model_spec(name).defaults["input_size"])
    if frames is not None:
        if len(default) != 3:
            raise SystemExit(f"--frames only applies to video models; {name} is an image model")
        default[0] = frames
    if size is not None:
        default[-2:] = [size, size]
    return tuple(default)


def clips_per_second(model: torch.nn.Module, shape: Sequence[int], warmup: int, iters: int, **kwargs) -> float:
    """Forward throughput in samples/s (no grad, eval mode)."""
    x = torch.randn(*shape)
    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x, **kwargs)
        start = time.perf_counter()
        for _ in range(iters):
            model(x, **kwargs)
        elapsed = time.perf_counter() - start
    return shape[0] * iters / elapsed


def format_split(split: dict[str, float]) -> str:
    return ", ".join(f"{op} {value:.1f}" for op, value in sorted(split.items()))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    input_size = input_size_for(args.model, args.frames, args.size)
    try:
        model = create_model(args.model, input_size=input_size)
    except ValueError as err:  # e.g. a size the mask units do not divide: show the message, not a traceback
        raise SystemExit(f"model_info: {err}") from err
    sample = (1, model.in_chans, *input_size)
    print(f"model        {args.model}  input {list(sample[1:])}")
    print(f"parameters   {count_params(model) / 1e6:.2f}M ({count_params(model):,})")
    if isinstance(model, MaskedAutoencoderHiera):
        kwargs = {"mask_ratio": MAE_MASK_RATIO}
        encoder = gmacs_by_operator(model, sample, method="forward_encoder", **kwargs)
        print(f"mask ratio   {MAE_MASK_RATIO}")
        print(f"GMACs        {sum(gmacs_by_operator(model, sample, **kwargs).values()):.1f} (encoder + decoder)")
        print(f"  encoder    {sum(encoder.values()):.1f} ({format_split(encoder)})")
    else:
        kwargs = {}
        split = gmacs_by_operator(model, sample)
        print(f"GMACs        {sum(split.values()):.1f} ({format_split(split)})")
    print(f"activations  {count_mactivations(model, sample, **kwargs):.1f}M")
    speed = clips_per_second(model, (args.batch, *sample[1:]), args.warmup, args.iters, **kwargs)
    print(f"speed        {speed:.2f} clips/s (batch {args.batch}, {torch.get_num_threads()} threads, forward only)")


if __name__ == "__main__":
    main()
