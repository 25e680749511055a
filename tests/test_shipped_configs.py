"""Every shipped config loads, and builds its model (on the meta device: no memory for Hiera-H's weights)."""
from __future__ import annotations

import glob
import os

import pytest
import torch

from hiera_video.config import load_config
from hiera_video.tasks import build_task
from hiera_video.utils.distributed import DistContext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*", "*.yaml"))
                 if not os.path.basename(p).startswith("_"))


def test_every_config_folder_ships_configs():
    folders = {os.path.basename(os.path.dirname(p)) for p in CONFIGS}
    assert {"Demo", "Kinetics"} <= folders


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs")))
def test_config_loads_and_builds_its_model(path):
    cfg = load_config(path)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"),
                      backend=None, launcher="single")
    task = build_task(cfg, ctx)
    with torch.device("meta"):
        model = task.build_model()
    assert sum(p.numel() for p in model.parameters()) > 0
    if cfg.TASK == "classification":
        assert model.head.projection.out_features == cfg.MODEL.NUM_CLASSES
    assert cfg.TRAIN.BATCH_SIZE % max(1, cfg.NUM_GPUS) == 0
