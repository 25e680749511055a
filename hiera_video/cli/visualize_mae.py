"""Show what an MAE checkpoint reconstructs: one PNG per clip with three rows over the target frames:
the input, the input with the hidden mask units blanked, and the reconstruction (pixel target only).

    python tools/visualize_mae.py --cfg configs/Demo/HIERA_DEMO_MAE.yaml \\
        --checkpoint output/demo_mae/checkpoints/checkpoint_epoch_00012.pyth --num-clips 4 --out mae_vis

Clips are the deterministic centre clips of the validation split; masks use MAE.MASK_RATIO and --seed.
"""
from __future__ import annotations

import argparse
import os

import torch
from torchvision.utils import make_grid, save_image

from hiera_video.config import load_config
from hiera_video.data.build import build_dataset
from hiera_video.models.build import build_model
from hiera_video.models.weights import load_pretrained, load_state_file


def unnormalise(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """[..., C, H, W] in normalised units -> [0, 1] pixels."""
    shape = (-1, 1, 1)
    return (frames * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0, 1)


def visualise(cfg, checkpoint: str, num_clips: int, out_dir: str, seed: int, split: str = "val") -> list[str]:
    """Writes <out_dir>/clip_<k>.png for the first `num_clips` clips of `split`; returns the paths."""
    model = build_model(cfg).eval()
    print(load_pretrained(model, load_state_file(checkpoint)).summary())
    dataset = build_dataset(cfg, split)
    generator = torch.Generator().manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for k in range(min(num_clips, len(dataset))):
        video = dataset[k]["video"][:1]
        keep = int(model.num_mask_units * (1 - cfg.MAE.MASK_RATIO))
        order = torch.randperm(model.num_mask_units, generator=generator)
        mask = torch.zeros(1, model.num_mask_units, dtype=torch.bool)
        mask[0, order[:keep]] = True
        frames, masked, reconstruction = model.reconstruct(video, mask)
        rows = torch.cat([frames[0], masked[0], reconstruction[0]])
        grid = make_grid(unnormalise(rows, cfg.DATA.MEAN, cfg.DATA.STD), nrow=frames.shape[1], padding=2)
        path = os.path.join(out_dir, f"clip_{k:03d}.png")
        save_image(grid, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="the MAE config the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True, help="MAE checkpoint: ours, an official mae_* file, or its name "
                        "(mae_hiera_base_16x224:mae_k400)")
    parser.add_argument("--num-clips", type=int, default=4)
    parser.add_argument("--out", default="mae_visualisation", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts)
    if cfg.TASK != "mae":
        raise SystemExit(f"{args.cfg} is not an MAE config (TASK {cfg.TASK})")
    for path in visualise(cfg, args.checkpoint, args.num_clips, args.out, args.seed):
        print(f"Wrote {path}")


if __name__ == "__main__":
    main()
