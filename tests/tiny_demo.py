"""The tiny demo run shared by the training tests: a 2-class demo dataset of 16-frame 32x32 videos and the demo
config shrunk to a 4-frame 32x32 clip and a 3-stage, 16-channel Hiera."""
from __future__ import annotations

import os

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CFG = os.path.join(REPO, "configs", "Demo", "HIERA_DEMO.yaml")


def write_tiny_demo(root: str) -> str:
    """Writes the tiny demo dataset under `root`; returns `root`."""
    write_demo_dataset(root, num_classes=2, train_per_class=4, val_per_class=2, test_per_class=2, num_frames=16,
                       size=32)
    return root


def tiny_cfg(dataset_root, output_dir, *opts, task="classification"):
    """The tiny config of `task` on `dataset_root`, writing to `output_dir`, with `opts` (KEY VALUE) on top."""
    arch = "mae_hiera_base_16x224" if task == "mae" else "hiera_base_16x224"
    base = ["TASK", task, "MODEL.ARCH", arch, "OUTPUT_DIR", str(output_dir), "DATA.PATH_TO_DATA_DIR", dataset_root,
            "DATA.PATH_PREFIX", dataset_root, "MODEL.NUM_CLASSES", "2", "HIERA.STAGES", "[1, 1, 1]",
            "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4", "DATA.SAMPLING_RATE", "2", "DATA.TRAIN_CROP_SIZE",
            "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH",
            "2", "SOLVER.WARMUP_EPOCHS", "1.0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1",
            "TRAIN.EVAL_PERIOD", "1", "MAE.MASK_RATIO", "0.5", "MAE.DECODER_EMBED_DIM", "32", "MAE.DECODER_DEPTH",
            "1", "MAE.DECODER_NUM_HEADS", "1", "TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3"]
    return load_config(DEMO_CFG, base + list(opts))
