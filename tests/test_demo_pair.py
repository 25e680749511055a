"""The MAE demo pair at reduced size: HIERA_DEMO_FINETUNE.yaml fine-tunes exactly what HIERA_DEMO_MAE.yaml
pretrains, and that beats the same fine-tuning from scratch (README, "Does MAE pretraining help? (demo)")."""
from __future__ import annotations

import logging
import os

import pytest

from hiera_video.config import load_config
from hiera_video.data.demo import write_demo_dataset
from hiera_video.engine.runner import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAE_CONFIG = os.path.join(REPO, "configs/Demo/HIERA_DEMO_MAE.yaml")
FINETUNE_CONFIG = os.path.join(REPO, "configs/Demo/HIERA_DEMO_FINETUNE.yaml")
FAST = ["TRAIN.EVAL_PERIOD", "0", "DATA_LOADER.NUM_WORKERS", "0"]
# Half the fine-tuning epochs and one test view.
FINETUNE = FAST + ["SOLVER.MAX_EPOCH", "75", "SOLVER.WARMUP_EPOCHS", "7.0",
                   "TRAIN.CHECKPOINT_PERIOD", "75", "TEST.NUM_ENSEMBLE_VIEWS", "1"]
# Fine-tuning seeds (label subset, head init, clips). One pair's gap varies too much to assert alone: +7.5 to +49
# points over seeds 0-4, and +12.5 to +31 for seed 0 between machines, whose float rounding differs. The mean of
# these three measured +24.4 to +26.5 on each of six float paths (README).
SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_fine_tuning_from_the_mae_demo_beats_training_from_scratch(tmp_path, monkeypatch, single_process, caplog):
    monkeypatch.chdir(tmp_path)  # both configs use their default, relative output and data folders
    # The demo's 256 training videos (the MAE's, unlabelled), and 160 test videos instead of 80 for a finer
    # estimate. The MAE runs in full: with half its steps, fine-tuning from it lost to scratch on 2 of 3 seeds (README).
    write_demo_dataset("demo_data/plaid", num_classes=8, val_per_class=1, test_per_class=20, pattern="plaid",
                       noise=60.0)
    run(single_process, load_config(MAE_CONFIG, FAST))
    gaps = []
    for seed in SEEDS:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            pretrained = run(single_process, load_config(FINETUNE_CONFIG, FINETUNE + [
                "RNG_SEED", str(seed), "OUTPUT_DIR", f"output/demo_finetune_{seed}"]))
        report = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised from"))
        assert "output/demo_mae/checkpoints/checkpoint_epoch_00012.pyth" in report  # the config's default path
        new = next(line for line in report.splitlines() if line.startswith("new"))
        assert new == "new (fresh init): 4 tensors in norm (2), head (2)"  # no stage left at its random init
        scratch = run(single_process, load_config(FINETUNE_CONFIG, FINETUNE + [
            "RNG_SEED", str(seed), "TRAIN.CHECKPOINT_FILE_PATH", "", "OUTPUT_DIR", f"output/demo_scratch_{seed}"]))
        assert pretrained["num_videos"] == scratch["num_videos"] == 160
        gaps.append(pretrained["top1_acc"] - scratch["top1_acc"])
    assert sum(gaps) / len(gaps) >= 10, gaps
