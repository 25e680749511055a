"""MODEL_EMA: the average's arithmetic, its evaluations (ema_* keys and files), checkpoints and exact resume."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import tiny_demo
from hiera_video.config import ConfigError, get_cfg, load_config
from hiera_video.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from hiera_video.engine.ema import ModelEma, build_model_ema
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.runner import run
from hiera_video.evaluation.score_file import load_test_scores
from hiera_video.inference import Predictor
from tiny_demo import write_tiny_demo

# ---------------------------------------------------------------------------------------------------------------
# The average
# ---------------------------------------------------------------------------------------------------------------


def test_decay_warms_up_linearly_from_a_copy():
    ema = ModelEma(nn.Linear(2, 2), decay=0.99, warmup_steps=4)
    assert [ema.decay_at(t) for t in range(6)] == pytest.approx([0.0, 0.2475, 0.495, 0.7425, 0.99, 0.99])
    no_warmup = ModelEma(nn.Linear(2, 2), decay=0.99, warmup_steps=0)
    assert [no_warmup.decay_at(t) for t in range(3)] == [0.0, 0.99, 0.99]


def test_updates_follow_the_recurrence_for_parameters_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    ema = ModelEma(model, decay=0.9, warmup_steps=3)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    expected = None
    for step in range(6):
        out = model(torch.randn(8, 3, dtype=torch.float64))  # also moves the BatchNorm statistics
        (out * torch.arange(4.0, dtype=torch.float64)).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
        current = {k: v.clone() for k, v in model.state_dict().items()}
        decay = 0.9 * min(1.0, step / 3)
        expected = dict(current) if expected is None else {
            k: decay * expected[k] + (1 - decay) * v if v.is_floating_point() else v for k, v in current.items()}
        ema.update(model)
        for key, value in ema.module.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-12, msg=key)
    # The average lags the weights, and the batch counter is copied, not averaged.
    assert not torch.allclose(ema.module[0].weight, model[0].weight)
    assert int(ema.module[1].num_batches_tracked) == 6


def test_checkpoint_entries_restore_the_average_and_a_file_without_them_restarts_it(caplog):
    model = nn.Linear(3, 2)
    ema = ModelEma(model, decay=0.5, warmup_steps=0)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
    entries = ema.to_checkpoint()
    assert set(entries) == {"model_ema_state", "model_ema_updates"} and entries["model_ema_updates"] == 3
    restored = ModelEma(nn.Linear(3, 2), decay=0.5)
    restored.from_checkpoint(entries, "ckpt.pyth")
    assert restored.updates == 3 and torch.equal(restored.module.weight, ema.module.weight)
    with caplog.at_level(logging.WARNING):
        restored.from_checkpoint({"model_state": model.state_dict()}, "old.pyth")
    assert restored.updates == 0 and "old.pyth holds no EMA weights" in caplog.text
    restored.update(model)  # the restarted average starts from the weights
    assert torch.equal(restored.module.weight, model.weight)


def test_bad_decay_and_warmup_name_the_key():
    with pytest.raises(ConfigError, match=r"MODEL_EMA\.DECAY must be in \[0, 1\); got 1\.0"):
        load_config([], ["MODEL_EMA.DECAY", "1.0"])
    with pytest.raises(ConfigError, match="MODEL_EMA.WARMUP_STEPS must be >= 0; got -1"):
        load_config([], ["MODEL_EMA.WARMUP_STEPS", "-1"])


# ---------------------------------------------------------------------------------------------------------------
# In training, on real mp4 files
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_demo(str(tmp_path_factory.mktemp("data") / "motion"))


EMA_OPTS = ("TEST.NUM_ENSEMBLE_VIEWS", "1", "TEST.NUM_SPATIAL_CROPS", "1", "MODEL_EMA.ENABLE", "True",
            "MODEL_EMA.DECAY", "0.5", "MODEL_EMA.WARMUP_STEPS", "2")


def tiny_cfg(dataset_root, output_dir, *opts, task="classification"):
    """The shared tiny config with single-view testing and the EMA on."""
    return tiny_demo.tiny_cfg(dataset_root, output_dir, *EMA_OPTS, *opts, task=task)


def latest_state(output_dir):
    return load_checkpoint(find_latest_checkpoint(str(output_dir)))


def test_validation_and_test_report_the_ema_beside_the_weights(dataset, tmp_path, single_process):
    results = run(single_process, tiny_cfg(dataset, tmp_path / "run"))
    assert {"top1_acc", "ema_top1_acc", "num_videos", "ema_num_videos"} <= set(results)
    stats = read_json_stats(str(tmp_path / "run" / "json_stats.log"))
    val = [s for s in stats if s.get("_type") == "val_epoch"]
    assert len(val) == 2 and all({"top1_err", "ema_top1_err", "min_ema_top1_err", "ema_num_clips"} <= set(s)
                                 for s in val)
    assert {"ema_top1_acc", "ema_top5_acc"} <= set(stats[-1]) and stats[-1]["split"] == "test_final"
    for name in ("test_predictions.csv", "test_scores.npz"):  # the EMA's files beside the weights' own
        assert (tmp_path / "run" / name).is_file() and (tmp_path / "run" / f"ema_{name}").is_file()
    state = latest_state(tmp_path / "run")
    assert state["model_ema_state"].keys() == state["model_state"].keys() and state["model_ema_updates"] == 4
    key = "blocks.0.attn.qkv.weight"
    assert not torch.equal(state["model_ema_state"][key], state["model_state"][key])
    scores = {name: np.load(tmp_path / "run" / name)["scores"] for name in ("test_scores.npz", "ema_test_scores.npz")}
    assert not np.array_equal(scores["test_scores.npz"], scores["ema_test_scores.npz"])

    # Testing the checkpoint alone (TRAIN.ENABLE False) tests both weights again, with the same scores.
    again = run(single_process, tiny_cfg(dataset, tmp_path / "run", "TRAIN.ENABLE", "False"))
    assert again["ema_top1_acc"] == results["ema_top1_acc"] and again["top1_acc"] == results["top1_acc"]
    np.testing.assert_allclose(np.load(tmp_path / "run" / "ema_test_scores.npz")["scores"],
                               scores["ema_test_scores.npz"], rtol=0, atol=1e-6)


def test_the_predictor_scores_with_the_weights_or_their_ema_as_the_test_did(dataset, tmp_path, single_process):
    cfg = tiny_cfg(dataset, tmp_path / "run")
    run(single_process, cfg)
    checkpoint = find_latest_checkpoint(str(tmp_path / "run"))
    for ema, name in ((False, "test_scores.npz"), (True, "ema_test_scores.npz")):
        tested = load_test_scores(str(tmp_path / "run" / name))
        predictor = Predictor(cfg, checkpoint, ema=ema)
        for path, row in zip(tested.paths, tested.scores):
            np.testing.assert_allclose(predictor.predict(path).scores, row, atol=1e-5, rtol=0, err_msg=f"{name} {path}")


def test_with_decay_0_the_ema_is_the_weights(dataset, tmp_path, single_process):
    """The EMA evaluation evaluates exactly the averaged weights: with decay 0 they are the trained ones."""
    run(single_process, tiny_cfg(dataset, tmp_path / "mae", "MODEL_EMA.DECAY", "0.0", "TEST.ENABLE", "False",
                                 task="mae"))
    val = [s for s in read_json_stats(str(tmp_path / "mae" / "json_stats.log")) if s.get("_type") == "val_epoch"]
    assert len(val) == 2 and all(s["ema_loss"] == s["loss"] > 0 and "min_ema_loss" in s for s in val)
    state = latest_state(tmp_path / "mae")
    for key, value in state["model_state"].items():
        assert torch.equal(state["model_ema_state"][key], value), key


def test_testing_a_checkpoint_without_ema_weights_warns_and_tests_the_weights(dataset, tmp_path, single_process,
                                                                             caplog):
    run(single_process, tiny_cfg(dataset, tmp_path / "plain", "MODEL_EMA.ENABLE", "False", "SOLVER.MAX_EPOCH", "1",
                                 "SOLVER.WARMUP_EPOCHS", "0.0",
                                 "TEST.ENABLE", "False"))
    with caplog.at_level(logging.WARNING):
        results = run(single_process, tiny_cfg(dataset, tmp_path / "plain", "TRAIN.ENABLE", "False"))
    assert "top1_acc" in results and not any(key.startswith("ema_") for key in results)
    assert "holds no EMA weights (model_ema_state): testing without them" in caplog.text
    with pytest.raises(ValueError, match=r"holds no EMA weights \(model_ema_state\); train with MODEL_EMA.ENABLE"):
        Predictor(tiny_cfg(dataset, tmp_path / "plain"), find_latest_checkpoint(str(tmp_path / "plain")), ema=True)


@pytest.mark.slow
def test_resume_mid_epoch_reaches_the_uninterrupted_average(dataset, tmp_path, single_process, monkeypatch):
    opts = ["SOLVER.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_ITER_PERIOD", "1", "TEST.ENABLE", "False",
            "TRAIN.EVAL_PERIOD", "0", "AUG.ENABLE", "True", "HIERA.DROP_PATH_RATE", "0.1", "MODEL_EMA.DECAY", "0.8",
            "MODEL_EMA.WARMUP_STEPS", "4"]
    run(single_process, tiny_cfg(dataset, tmp_path / "straight", *opts))

    original, calls = ModelEma.update, {"n": 0}

    def crash_at_the_fourth_update(self, model):
        calls["n"] += 1
        if calls["n"] == 4:  # after optimiser step 4 (epoch 2, iteration 2), before its checkpoint
            raise KeyboardInterrupt("simulated kill")
        original(self, model)

    with monkeypatch.context() as patch:
        patch.setattr(ModelEma, "update", crash_at_the_fourth_update)
        with pytest.raises(KeyboardInterrupt):
            run(single_process, tiny_cfg(dataset, tmp_path / "broken", *opts))
    interrupted = latest_state(tmp_path / "broken")
    assert (interrupted["epoch"], interrupted["iter"], interrupted["model_ema_updates"]) == (1, 1, 3)
    run(single_process, tiny_cfg(dataset, tmp_path / "broken", *opts))
    straight, resumed = latest_state(tmp_path / "straight"), latest_state(tmp_path / "broken")
    assert straight["model_ema_updates"] == resumed["model_ema_updates"] == 6
    for key, value in straight["model_ema_state"].items():
        assert torch.equal(resumed["model_ema_state"][key], value), key
        assert torch.equal(resumed["model_state"][key], straight["model_state"][key]), key
    assert not torch.equal(straight["model_ema_state"]["head.projection.weight"],
                           straight["model_state"]["head.projection.weight"])


@pytest.mark.slow
def test_two_gloo_processes_average_like_one_process_on_the_union_batch(dataset, tmp_path):
    """Under DDP each rank keeps the average without communicating; rank 0's (the checkpoint's) is one process's."""
    from hiera_video.engine.runner import launch

    opts = ["SOLVER.MAX_EPOCH", "1", "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0", "AUG.ENABLE", "False",
            "MIXUP.LABEL_SMOOTH_VALUE", "0.0", "SOLVER.WARMUP_EPOCHS", "0.0", "MODEL_EMA.WARMUP_STEPS", "0"]
    launch(tiny_cfg(dataset, tmp_path / "one", *opts))
    launch(tiny_cfg(dataset, tmp_path / "two", *opts, "NUM_CPU_PROCS", "2"))
    one, two = latest_state(tmp_path / "one"), latest_state(tmp_path / "two")
    assert one["model_ema_updates"] == two["model_ema_updates"] == 2
    for key, value in one["model_ema_state"].items():
        assert torch.allclose(two["model_ema_state"][key], value, atol=1e-5, rtol=0), key
    key = "head.projection.weight"
    assert not torch.equal(one["model_ema_state"][key], one["model_state"][key])


def test_the_ema_refuses_sharded_training_by_naming_both_keys():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL_EMA.ENABLE", "True", "TRAIN.PARALLELISM", "fsdp"])
    with pytest.raises(ConfigError, match="MODEL_EMA.ENABLE.*TRAIN.PARALLELISM fsdp"):
        build_model_ema(cfg, torch.nn.Linear(2, 2))
