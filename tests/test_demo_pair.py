"""The MAE demo pair: HIERA_DEMO_FINETUNE.yaml fine-tunes exactly what HIERA_DEMO_MAE.yaml pretrains."""
from __future__ import annotations

import logging
import os

import pytest

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.runner import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "4", "DATA_LOADER.NUM_WORKERS", "0", "TRAIN.EVAL_PERIOD", "0"]


@pytest.mark.slow
def test_fine_tuning_config_loads_every_backbone_tensor_of_the_mae_demo(tmp_path, monkeypatch, single_process,
                                                                      caplog):
    monkeypatch.chdir(tmp_path)  # both configs use their default, relative output and data folders
    write_demo_dataset("demo_data/plaid", num_classes=8, train_per_class=1, val_per_class=1, test_per_class=1,
                       num_frames=24, pattern="plaid", noise=60.0)  # the pair's data, smaller
    run(single_process, load_config(os.path.join(REPO, "configs/Demo/HIERA_DEMO_MAE.yaml"), SHORT))
    with caplog.at_level(logging.INFO):
        run(single_process, load_config(os.path.join(REPO, "configs/Demo/HIERA_DEMO_FINETUNE.yaml"),
                                        SHORT + ["SOLVER.MAX_EPOCH", "2", "SOLVER.WARMUP_EPOCHS", "1.0"]))
    report = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised from"))
    assert "output/demo_mae/checkpoints/checkpoint_epoch_00012.pyth" in report
    new = next(line for line in report.splitlines() if line.startswith("new"))
    assert new == "new (fresh init): 4 tensors in norm (2), head (2)"  # no stage left at its random init
    assert os.path.exists("output/demo_finetune/test_predictions.csv")
