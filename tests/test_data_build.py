"""hiera_video.data.build: the dataset registry, whose names are the valid TRAIN.DATASET / TEST.DATASET values."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from hiera_video.config import ConfigError, get_cfg, load_config
from hiera_video.data.build import DATASETS, build_dataset, register_dataset
from hiera_video.data.loader import SampleKey
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.runner import run

TINY = ["MODEL.NUM_CLASSES", "2", "HIERA.STAGES", "[1, 1, 1]", "HIERA.EMBED_DIM", "16", "DATA.NUM_FRAMES", "4",
        "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4",
        "SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0", "DATA_LOADER.NUM_WORKERS", "0", "TEST.ENABLE",
        "False"]


class BrightOrDark(Dataset):
    """Random 4x32x32 clips; class 1 is brighter. Noise comes from the sample's seed, as the loader expects."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: SampleKey) -> dict:
        label = key.index % 2
        noise = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(key.seed))
        return {"video": noise + 2.0 * label, "view": torch.arange(1), "label": label, "index": key.index,
                "bad_files": []}


@pytest.fixture
def bright_or_dark():
    register_dataset("bright_or_dark", lambda cfg, split: BrightOrDark(8 if split == "train" else 4))
    yield "bright_or_dark"
    del DATASETS["bright_or_dark"]


def test_an_unregistered_dataset_is_refused_naming_the_key_and_the_registered_ones():
    with pytest.raises(ConfigError, match="TRAIN.DATASET must be one of kinetics, ssv2, ava; got 'bright_or_dark'"):
        load_config([], ["TRAIN.DATASET", "bright_or_dark"])
    cfg = get_cfg()  # not validated at load: the build refuses it with the same message
    cfg.TEST.DATASET = "bright_or_dark"
    with pytest.raises(ConfigError, match="TEST.DATASET must be one of kinetics, ssv2, ava; got 'bright_or_dark'"):
        build_dataset(cfg, "test")


@pytest.mark.slow
def test_a_registered_dataset_is_a_config_value_and_trains(bright_or_dark, tmp_path, single_process):
    cfg = load_config([], ["TRAIN.DATASET", bright_or_dark, "TEST.DATASET", bright_or_dark,
                           "OUTPUT_DIR", str(tmp_path), *TINY])
    assert len(build_dataset(cfg, "train")) == 8 and len(build_dataset(cfg, "val")) == 4
    run(single_process, cfg)
    val = [s for s in read_json_stats(str(tmp_path / "json_stats.log")) if s["_type"] == "val_epoch"]
    assert [s["num_clips"] for s in val] == [4, 4]
