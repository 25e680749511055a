"""End-to-end training on real mp4 files: both tasks, exact resume, multi-view test, bad input."""
from __future__ import annotations

import logging
import os
import signal

import pytest
import torch

from hiera_video.engine.checkpoint import find_latest_checkpoint, load_checkpoint
from hiera_video.engine.logging import read_json_stats
from hiera_video.engine.preemption import StopRequested
from hiera_video.engine.runner import run
from hiera_video.engine.trainer import Trainer
from tiny_demo import tiny_cfg, write_tiny_demo
from video_factory import make_empty_file, make_truncated_video


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_demo(str(tmp_path_factory.mktemp("data") / "motion"))


def final_weights(output_dir):
    return load_checkpoint(find_latest_checkpoint(str(output_dir)))["model_state"]


def test_classification_trains_validates_and_tests(dataset, tmp_path, single_process):
    cfg = tiny_cfg(dataset, tmp_path / "run")
    results = run(single_process, cfg)
    assert results["num_videos"] == 4 and 0 <= results["top1_acc"] <= 100
    stats = read_json_stats(str(tmp_path / "run" / "json_stats.log"))
    kinds = [s.get("_type", s.get("split")) for s in stats]
    assert kinds.count("train_iter") == 4 and kinds.count("train_epoch") == 2 and kinds.count("val_epoch") == 2
    assert kinds[-1] == "test_final"
    train_iter = next(s for s in stats if s.get("_type") == "train_iter")
    for key in ("loss", "lr", "dt", "dt_data", "dt_net", "eta", "mem", "epoch", "iter", "top1_err"):
        assert key in train_iter
    assert train_iter["epoch"] == "1/2" and train_iter["iter"] == "1/2"
    lines = (tmp_path / "run" / "test_predictions.csv").read_text().splitlines()
    assert len(lines) == 5 and all(line.endswith(",6") for line in lines[1:])  # 2 temporal x 3 spatial views
    assert os.listdir(tmp_path / "run" / "tensorboard")
    assert "json_stats" in (tmp_path / "run" / "stdout.log").read_text()


def test_mae_pretraining_reports_reconstruction_loss(dataset, tmp_path, single_process):
    cfg = tiny_cfg(dataset, tmp_path / "mae", "TEST.ENABLE", "False", "AUG.NUM_SAMPLE", "2", task="mae")
    run(single_process, cfg)
    stats = read_json_stats(str(tmp_path / "mae" / "json_stats.log"))
    losses = [s["loss"] for s in stats if s.get("_type") == "train_iter"]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert any(s.get("_type") == "val_epoch" and s["loss"] > 0 for s in stats)
    state = final_weights(tmp_path / "mae")
    assert "decoder_pred.weight" in state and "mask_token" in state


def _interrupt_at(monkeypatch, step_to_break: int, action):
    """Makes the trainer call `action()` when it starts optimisation step number `step_to_break` (0-based)."""
    original = Trainer._optimisation_step
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        if calls["n"] == step_to_break:
            action()
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimisation_step", patched)


@pytest.mark.slow
@pytest.mark.parametrize("interruption", ["crash", "sigterm"])
def test_resume_mid_epoch_reaches_the_uninterrupted_weights(dataset, tmp_path, single_process, monkeypatch,
                                                            interruption):
    opts = ["SOLVER.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_ITER_PERIOD", "1", "TEST.ENABLE", "False",
            "TRAIN.EVAL_PERIOD", "0", "AUG.ENABLE", "True", "DATA.RANDOM_FLIP", "True", "HIERA.DROP_PATH_RATE", "0.1"]
    run(single_process, tiny_cfg(dataset, tmp_path / "straight", *opts))

    def crash():
        raise KeyboardInterrupt("simulated kill")

    def sigterm():
        os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        # A crash loses the step in flight; a signal lets it finish and stops before the next one.
        _interrupt_at(patch, 3, crash) if interruption == "crash" else _interrupt_at(patch, 2, sigterm)
        expected = KeyboardInterrupt if interruption == "crash" else StopRequested
        with pytest.raises(expected):
            run(single_process, tiny_cfg(dataset, tmp_path / "broken", *opts))
    latest = find_latest_checkpoint(str(tmp_path / "broken"))
    assert "_iter_" in os.path.basename(latest)  # stopped inside epoch 2
    # The resumed run uses a data worker: results must not depend on where decoding happens.
    run(single_process, tiny_cfg(dataset, tmp_path / "broken", *opts, "DATA_LOADER.NUM_WORKERS", "1"))
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "broken")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_bad_videos_are_skipped_named_once_and_counted(dataset, tmp_path, single_process, caplog):
    data = tmp_path / "with_bad"
    data.mkdir()
    lines = open(os.path.join(dataset, "train.csv")).read().splitlines()
    make_truncated_video(str(data / "truncated.mp4"), keep_fraction=0.3)
    make_empty_file(str(data / "empty.mp4"))
    lines = [f"{os.path.join(dataset, line.split()[0])} {line.split()[1]}" for line in lines]
    lines += [f"{data / 'truncated.mp4'} 0", f"{data / 'empty.mp4'} 1", f"{data / 'missing.mp4'} 1"]
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    for split in ("val", "test"):
        (data / f"{split}.csv").write_text("".join(f"{os.path.join(dataset, line)}\n" for line in
                                                   open(os.path.join(dataset, f"{split}.csv")).read().splitlines()))
    opts = ["DATA.PATH_PREFIX", "", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False", "SOLVER.MAX_EPOCH", "3",
            "DATA.MAX_BAD_FRACTION", "0.5"]
    with caplog.at_level(logging.WARNING):
        run(single_process, tiny_cfg(str(data), tmp_path / "out", *opts))
    stats = read_json_stats(str(tmp_path / "out" / "json_stats.log"))
    epochs = [s for s in stats if s.get("_type") == "train_epoch"]
    assert len(epochs) == 3 and sum(s["bad_videos"] for s in epochs) >= 1
    warned = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    for name in ("empty.mp4", "truncated.mp4", "missing.mp4"):  # every epoch draws them; each is named once
        assert len([w for w in warned if name in w]) == 1, (name, warned)
    with pytest.raises(RuntimeError, match="MAX_BAD_FRACTION"):
        run(single_process, tiny_cfg(str(data), tmp_path / "strict", *opts, "DATA.MAX_BAD_FRACTION", "0.0"))


@pytest.mark.parametrize("task", ["classification", "mae"])
def test_a_broken_validation_video_is_named_once_counted_and_held_to_the_bad_fraction(dataset, tmp_path,
                                                                                    single_process, caplog, task):
    data = tmp_path / "bad_val"
    data.mkdir()
    make_truncated_video(str(data / "truncated.mp4"), keep_fraction=0.3)
    for split in ("train", "val", "test"):
        lines = [f"{os.path.join(dataset, line)}\n" for line in open(os.path.join(dataset, f"{split}.csv"))
                 .read().splitlines()]
        if split == "val":
            lines.append(f"{data / 'truncated.mp4'} 1\n")
        (data / f"{split}.csv").write_text("".join(lines))
    opts = ["DATA.PATH_PREFIX", "", "TEST.ENABLE", "False", "DATA.MAX_BAD_FRACTION", "0.5"]
    with caplog.at_level(logging.WARNING):
        run(single_process, tiny_cfg(str(data), tmp_path / "out", *opts, task=task))
    val_epochs = [s for s in read_json_stats(str(tmp_path / "out" / "json_stats.log")) if s.get("_type") == "val_epoch"]
    assert [s["bad_videos"] for s in val_epochs] == [1, 1]  # validated after each of the 2 epochs
    named = [r.getMessage() for r in caplog.records if "A val video failed to decode" in r.getMessage()]
    assert len(named) == 1 and "truncated.mp4" in named[0]
    with pytest.raises(RuntimeError, match="of the val split failed to decode.*MAX_BAD_FRACTION=0.1"):
        run(single_process, tiny_cfg(str(data), tmp_path / "strict", *opts, "DATA.MAX_BAD_FRACTION", "0.1",
                                     task=task))


def test_unparseable_csv_line_names_file_and_line(dataset, tmp_path, single_process):
    data = tmp_path / "csv"
    data.mkdir()
    (data / "train.csv").write_text("a.mp4 0\nb.mp4 zero\n")
    with pytest.raises(ValueError, match=r"train\.csv:2"):
        run(single_process, tiny_cfg(str(data), tmp_path / "out"))


def nan_loss_at_call(monkeypatch, bad_call: int) -> dict[str, int]:
    """Makes the classification loss NaN at its `bad_call`-th call (counted from 1); returns the call count."""
    from hiera_video.tasks.classification import ClassificationTask

    original = ClassificationTask.loss
    calls = {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        value, stats = original(self, model, batch)
        return (value * float("nan") if calls["n"] == bad_call else value), stats

    monkeypatch.setattr(ClassificationTask, "loss", loss)
    return calls


def test_nan_loss_stops_with_iteration_and_last_checkpoint(dataset, tmp_path, single_process, monkeypatch):
    nan_loss_at_call(monkeypatch, 3)
    cfg = tiny_cfg(dataset, tmp_path / "nan", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
                   "TRAIN.CHECKPOINT_PERIOD", "1")
    with pytest.raises(FloatingPointError) as err:
        run(single_process, cfg)
    message = str(err.value)
    assert "epoch 2, iteration 1" in message and "checkpoint_epoch_00001.pyth" in message


@pytest.mark.parametrize("read_at", ["log line", "checkpoint"])
def test_nan_loss_between_reads_stops_at_the_next_read_naming_the_first_bad_iteration(
        dataset, tmp_path, single_process, monkeypatch, read_at):
    """Steps never read the loss on the host: a NaN is found at the next log line or mid-epoch checkpoint, which
    names the iteration it came from; no checkpoint keeps the weights it spoilt."""
    calls = nan_loss_at_call(monkeypatch, 2)
    opts = ["TRAIN.BATCH_SIZE", "2", "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0.5", "LOG_PERIOD", "4",
            "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False"]  # 4 steps, one log line after the 4th
    if read_at == "checkpoint":
        opts += ["TRAIN.CHECKPOINT_ITER_PERIOD", "3"]
    with pytest.raises(FloatingPointError, match="Loss is nan on rank 0 at epoch 1, iteration 2; last good "
                                                 "checkpoint: none yet"):
        run(single_process, tiny_cfg(dataset, tmp_path / "nan", *opts))
    assert calls["n"] == (4 if read_at == "log line" else 3)
    assert find_latest_checkpoint(str(tmp_path / "nan")) is None


@pytest.mark.slow
def test_two_gloo_processes_step_like_one_process_on_the_union_batch(dataset, tmp_path):
    from hiera_video.engine.runner import launch

    opts = ["SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "8", "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0",
            "AUG.ENABLE", "False", "MIXUP.LABEL_SMOOTH_VALUE", "0.0", "SOLVER.WARMUP_EPOCHS", "0.0",
            "TRAIN.CHECKPOINT_PERIOD", "1"]
    launch(tiny_cfg(dataset, tmp_path / "one", *opts))
    launch(tiny_cfg(dataset, tmp_path / "two", *opts, "NUM_CPU_PROCS", "2"))
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=0), key
    for run_dir in ("one", "two"):  # exactly one optimisation step each
        stats = read_json_stats(str(tmp_path / run_dir / "json_stats.log"))
        assert [s["iter"] for s in stats if s.get("_type") == "train_iter"] == ["1/1"]


def test_test_views_are_decoded_once_per_video(dataset, tmp_path, single_process, monkeypatch):
    from hiera_video.data import clip_dataset

    opened, original = [], clip_dataset.open_video

    def counting_open(source, **kwargs):
        opened.append(source)
        return original(source, **kwargs)

    monkeypatch.setattr(clip_dataset, "open_video", counting_open)
    cfg = tiny_cfg(dataset, tmp_path / "views", "TRAIN.ENABLE", "False", "TEST.NUM_ENSEMBLE_VIEWS", "4")
    results = run(single_process, cfg)
    assert results["num_videos"] == 4 and results["videos_with_missing_views"] == 0
    assert len(opened) == len(set(opened)) == 4  # 4 videos x 12 views, each video opened once
    lines = (tmp_path / "views" / "test_predictions.csv").read_text().splitlines()[1:]
    assert all(line.endswith(",12") for line in lines)


def test_fine_tuning_starts_from_an_mae_checkpoint(dataset, tmp_path, single_process, caplog):
    run(single_process, tiny_cfg(dataset, tmp_path / "mae", "TEST.ENABLE", "False", "TRAIN.EVAL_PERIOD", "0",
                                 "SOLVER.MAX_EPOCH", "2", task="mae"))
    mae_checkpoint = find_latest_checkpoint(str(tmp_path / "mae"))
    mae_state = load_checkpoint(mae_checkpoint)["model_state"]
    with caplog.at_level(logging.INFO):
        run(single_process, tiny_cfg(dataset, tmp_path / "ft", "TRAIN.CHECKPOINT_FILE_PATH", mae_checkpoint,
                                     "SOLVER.MAX_EPOCH", "3", "TRAIN.EVAL_PERIOD", "0", "TEST.ENABLE", "False",
                                     "SOLVER.BASE_LR", "0.0", "SOLVER.WARMUP_START_LR", "0.0",
                                     "SOLVER.COSINE_END_LR", "0.0", "SOLVER.WEIGHT_DECAY", "0.0"))
    report = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised from"))
    new = next(line for line in report.splitlines() if line.startswith("new"))
    unused = next(line for line in report.splitlines() if line.startswith("unused"))
    assert "head (2)" in new and "norm (2)" in new  # the classifier's head and final norm start fresh
    assert "decoder_pred (2)" in unused and "mask_token (1)" in unused
    stats = read_json_stats(str(tmp_path / "ft" / "json_stats.log"))
    assert [s["epoch"] for s in stats if s.get("_type") == "train_epoch"] == ["1/3", "2/3", "3/3"]  # epoch reset
    tuned = final_weights(tmp_path / "ft")
    for key in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "pos_embed_spatial"):
        assert torch.equal(tuned[key], mae_state[key]), key  # lr 0: the encoder is exactly the MAE's
