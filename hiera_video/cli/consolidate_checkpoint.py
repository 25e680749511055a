"""Turn a sharded checkpoint folder (what TRAIN.PARALLELISM fsdp writes: OUTPUT_DIR/checkpoints/*.dcp) into one
.pyth file, the format of a DDP run's checkpoints.

    python tools/consolidate_checkpoint.py output/checkpoints/checkpoint_epoch_00010.dcp model.pyth

Every entry is kept: the model and optimizer state as whole tensors (the optimizer's parameters numbered as
optimizer.state_dict() numbers them), epoch, iteration, the RNG states of every rank, cfg. The file loads with
torch.load(weights_only=True), e.g. as TRAIN.CHECKPOINT_FILE_PATH, TEST.CHECKPOINT_FILE_PATH, tools/predict.py
--weights, or as a checkpoint a DDP run resumes from. One process on the CPU, holding the whole checkpoint in memory.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from hiera_video.engine.checkpoint import load_checkpoint, save_checkpoint


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a sharded checkpoint folder (checkpoint_epoch_*.dcp)")
    parser.add_argument("out", help="the .pyth file to write (written atomically; an existing file is replaced)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not os.path.isdir(args.folder):
        raise SystemExit(f"consolidate_checkpoint: {args.folder} is not a folder; sharded checkpoints are "
                         f"checkpoint_epoch_*.dcp folders")
    try:
        state = load_checkpoint(args.folder)
    except ValueError as err:  # incomplete or not a checkpoint: the message names the folder and what is missing
        raise SystemExit(f"consolidate_checkpoint: {err}") from err
    save_checkpoint(args.out, state)
    model_state = state["model_state"]
    values = sum(tensor.numel() for tensor in model_state.values())
    optimizer = "with" if state.get("optimizer_state") else "without (saved before the first step)"
    print(f"Wrote {args.out}: epoch {state['epoch']}, iteration {state['iter']}, {len(model_state)} model tensors "
          f"({values / 1e6:.2f}M values), {optimizer} optimizer state")


if __name__ == "__main__":
    main()
