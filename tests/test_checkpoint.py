"""Checkpoint naming, atomic saving, auto-resume lookup, weights_only loading and RNG state round trips."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    find_latest_checkpoint,
    keep_last,
    list_checkpoints,
    load_checkpoint,
    parse_checkpoint_name,
    restore_rng_state,
    save_checkpoint,
)
from hiera_video.engine.optim import build_optimizer
from hiera_video.utils.wrappers import unwrap_model


def _tiny_state(epoch: int = 1, iteration: int = 0) -> dict:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    return {"model_state": model.state_dict(), "epoch": epoch, "iter": iteration, "cfg": "SOLVER:\n  BASE_LR: 0.1\n"}


def _names(paths):
    return [os.path.basename(p) for p in paths]


def test_checkpoint_path_layout_and_parsing(tmp_path):
    out = str(tmp_path)
    assert checkpoint_path(out, 3) == os.path.join(out, "checkpoints", "checkpoint_epoch_00003.pyth")
    mid = checkpoint_path(out, 3, 250)
    assert mid == os.path.join(out, "checkpoints", "checkpoint_epoch_00003_iter_000250.pyth")
    assert parse_checkpoint_name(mid) == (3, 250)
    assert parse_checkpoint_name(checkpoint_path(out, 12)) == (12, 0)
    for other in (".checkpoint_epoch_00003.pyth.tmp-1-ab", "checkpoint_epoch_x.pyth", "model.pyth"):
        assert parse_checkpoint_name(other) is None


def test_save_then_load_round_trips_with_weights_only(tmp_path):
    path = checkpoint_path(str(tmp_path), 1)
    state = _tiny_state()
    state["rng_state"] = capture_rng_state()
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and loaded["cfg"] == state["cfg"]
    for key, value in state["model_state"].items():
        torch.testing.assert_close(loaded["model_state"][key], value)
    with open(path, "rb") as f:  # independently of load_checkpoint
        torch.load(f, weights_only=True)


def test_optimizer_state_with_lr_scales_survives_a_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, "adamw", base_lr=1e-3, weight_decay=0.05)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    path = checkpoint_path(str(tmp_path), 1)
    save_checkpoint(path, {"model_state": model.state_dict(), "optimizer_state": opt.state_dict()})
    fresh = build_optimizer(model, "adamw", base_lr=1e-3, weight_decay=0.05)
    fresh.load_state_dict(load_checkpoint(path)["optimizer_state"])
    assert [g["lr_scale"] for g in fresh.param_groups] == [g["lr_scale"] for g in opt.param_groups]
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_values_weights_only_cannot_load_are_refused_before_writing(tmp_path):
    path = checkpoint_path(str(tmp_path), 1)
    with pytest.raises(TypeError, match=r"state\['sampler_state'\]\['order'\].*numpy.ndarray"):
        save_checkpoint(path, {"epoch": 1, "sampler_state": {"order": np.arange(3)}})
    assert list_checkpoints(str(tmp_path)) == []


def test_ddp_prefix_is_not_saved(tmp_path, single_process_group):
    model = nn.Linear(3, 2)
    ddp = nn.parallel.DistributedDataParallel(model)
    assert unwrap_model(ddp) is model
    assert unwrap_model(torch.compile(ddp)) is model
    path = checkpoint_path(str(tmp_path), 1)
    ddp_state = ddp.state_dict()
    save_checkpoint(path, {"model_state": ddp_state})
    loaded = load_checkpoint(path)["model_state"]
    assert sorted(loaded) == ["bias", "weight"]
    assert sorted(ddp_state) == ["module.bias", "module.weight"]  # the caller's dict is left alone
    nn.Linear(3, 2).load_state_dict(loaded)


def test_crash_while_writing_keeps_previous_latest(tmp_path, monkeypatch):
    out = str(tmp_path)
    save_checkpoint(checkpoint_path(out, 1), _tiny_state(1))
    seen_mid_write = {}

    def save_half_then_fail(obj, f):
        f.write(b"PK\x03\x04 partial data")
        f.flush()
        # What a resuming job would see if the machine died right now.
        seen_mid_write["listed"] = _names(list_checkpoints(out))
        seen_mid_write["latest"] = find_latest_checkpoint(out)
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(checkpoint_path(out, 2), _tiny_state(2))
    monkeypatch.undo()
    assert seen_mid_write == {"listed": ["checkpoint_epoch_00001.pyth"], "latest": checkpoint_path(out, 1)}
    # The failed save cleans up its temporary file.
    assert os.listdir(os.path.join(out, "checkpoints")) == ["checkpoint_epoch_00001.pyth"]
    assert find_latest_checkpoint(out) == checkpoint_path(out, 1)


def test_leftover_temp_and_truncated_files_are_never_the_latest(tmp_path, caplog):
    out = str(tmp_path)
    good = checkpoint_path(out, 2)
    save_checkpoint(good, _tiny_state(2))
    folder = os.path.dirname(good)
    # A process killed mid-write leaves its hidden temp file; a partial copy leaves a truncated archive.
    with open(good, "rb") as f:
        data = f.read()
    with open(os.path.join(folder, ".checkpoint_epoch_00003.pyth.tmp-999-deadbeef"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(checkpoint_path(out, 4), "wb") as f:
        f.write(data[: len(data) // 2])
    assert _names(list_checkpoints(out)) == ["checkpoint_epoch_00002.pyth", "checkpoint_epoch_00004.pyth"]
    assert find_latest_checkpoint(out) == good
    assert "checkpoint_epoch_00004.pyth" in caplog.text
    load_checkpoint(find_latest_checkpoint(out))


def test_overwriting_a_checkpoint_replaces_it(tmp_path):
    path = checkpoint_path(str(tmp_path), 1)
    save_checkpoint(path, _tiny_state(epoch=1, iteration=0))
    save_checkpoint(path, _tiny_state(epoch=1, iteration=7))
    assert load_checkpoint(path)["iter"] == 7
    assert os.listdir(os.path.dirname(path)) == ["checkpoint_epoch_00001.pyth"]


def test_latest_is_ordered_by_epoch_then_iteration(tmp_path):
    out = str(tmp_path)
    assert find_latest_checkpoint(out) is None
    for epoch, iteration in [(1, None), (2, 100), (2, None), (1, 900), (2, 20)]:
        save_checkpoint(checkpoint_path(out, epoch, iteration), _tiny_state(epoch))
    open(os.path.join(out, "checkpoints", "notes.txt"), "w").close()
    assert _names(list_checkpoints(out)) == [
        "checkpoint_epoch_00001.pyth", "checkpoint_epoch_00001_iter_000900.pyth", "checkpoint_epoch_00002.pyth",
        "checkpoint_epoch_00002_iter_000020.pyth", "checkpoint_epoch_00002_iter_000100.pyth"]
    assert find_latest_checkpoint(out) == checkpoint_path(out, 2, 100)
    save_checkpoint(checkpoint_path(out, 3), _tiny_state(3))
    assert find_latest_checkpoint(out) == checkpoint_path(out, 3)


def test_keep_last_prunes_only_old_mid_epoch_checkpoints(tmp_path):
    out = str(tmp_path)
    for epoch, iteration in [(1, None), (1, 10), (1, 20), (2, None), (2, 10), (2, 20)]:
        save_checkpoint(checkpoint_path(out, epoch, iteration), _tiny_state(epoch))
    removed = keep_last(out, 1)
    assert _names(removed) == ["checkpoint_epoch_00001_iter_000010.pyth", "checkpoint_epoch_00001_iter_000020.pyth",
                               "checkpoint_epoch_00002_iter_000010.pyth"]
    assert _names(list_checkpoints(out)) == ["checkpoint_epoch_00001.pyth", "checkpoint_epoch_00002.pyth",
                                             "checkpoint_epoch_00002_iter_000020.pyth"]


def test_missing_and_corrupt_files_raise_naming_the_path(tmp_path):
    missing = str(tmp_path / "nope.pyth")
    with pytest.raises(FileNotFoundError, match="nope.pyth"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pyth"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt.pyth"):
        load_checkpoint(str(corrupt))


def test_unsafe_pickles_are_rejected_by_load(tmp_path):
    path = tmp_path / "unsafe.pyth"
    torch.save({"sampler": np.arange(3)}, path)  # written by someone else's torch.save, not save_checkpoint
    with pytest.raises(RuntimeError, match="unsafe.pyth"):
        load_checkpoint(str(path))


def _draws():
    random.gauss(0, 1)  # exercises Python's cached second Gaussian
    return ([random.random() for _ in range(3)] + [random.gauss(0, 1)], np.random.rand(3).tolist(),
            np.random.randn(1).tolist(), torch.rand(3).tolist())


def test_rng_state_restore_reproduces_random_numbers_after_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)
    np.random.randn(1)  # leaves a cached Gaussian in NumPy's state
    path = checkpoint_path(str(tmp_path), 1)
    save_checkpoint(path, {"rng_state": capture_rng_state()})
    expected = _draws()
    _draws()
    restore_rng_state(load_checkpoint(path)["rng_state"])
    assert _draws() == expected


def test_restore_rng_state_reports_missing_parts():
    with pytest.raises(KeyError, match="numpy"):
        restore_rng_state({"python": capture_rng_state()["python"], "torch": torch.get_rng_state()})
