"""Sharded (FSDP) checkpoints in one process: the folder format both ways (a sharded model resumes from a .dcp
folder or a .pyth file, a whole model from either), the consolidation command, and auto-resume never picking a
sharded save that did not finish. The multi-process runs are tests/test_fsdp.py."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import fully_shard

from hiera_video.cli import consolidate_checkpoint
from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine import parallel, sharded_checkpoint
from hiera_video.engine.optim import build_optimizer
from hiera_video.engine.sharded_checkpoint import ShardedCheckpointWriter, read_checkpoint
from hiera_video.models.weights import load_pretrained, load_state_file
from hiera_video.utils import dcp_folders


def tiny_model(shard: bool) -> nn.Module:
    """The same small network every time; with `shard`, FSDP2 over this process's group (layer, then root)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    if shard:
        fully_shard(model[0])
        fully_shard(model)
    return model


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    inputs = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
    model(inputs).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def whole_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's whole tensors (gathered from the shards of a sharded model)."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    wa, wb = whole_weights(a), whole_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6, msg=key)


def trained_pair() -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, torch.optim.Optimizer]:
    """A whole and a sharded copy of the model, each with AdamW (layer-decay groups), after the same two steps."""
    plain, sharded = tiny_model(shard=False), tiny_model(shard=True)
    plain_opt = build_optimizer(plain, "adamw", base_lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    sharded_opt = build_optimizer(sharded, "adamw", base_lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    for seed in (1, 2):
        train_step(plain, plain_opt, seed)
        train_step(sharded, sharded_opt, seed)
    assert_same_weights(plain, sharded)
    return plain, plain_opt, sharded, sharded_opt


def save_sharded(writer: ShardedCheckpointWriter, path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                 epoch: int) -> None:
    model_state, optimizer_state = parallel.training_state(model, optimizer)
    writer.save(path, {"model_state": model_state, "optimizer_state": optimizer_state, "epoch": epoch, "iter": 0,
                       "rng_states": [ckpt.capture_rng_state()], "cfg": "TRAIN:\n  PARALLELISM: fsdp\n"})
    writer.wait()


def test_sharded_folders_resume_sharded_and_whole_models_and_consolidate(tmp_path, single_process_group, capsys):
    plain, plain_opt, sharded, sharded_opt = trained_pair()
    path = ckpt.checkpoint_path(str(tmp_path), 1, sharded=True)
    save_sharded(ShardedCheckpointWriter(is_main=True), path, sharded, sharded_opt, epoch=1)
    assert os.path.basename(path) == "checkpoint_epoch_00001.dcp"
    assert {dcp_folders.COMPLETE_MARKER, dcp_folders.TRAINER_STATE, ".metadata"} <= set(os.listdir(path))
    assert os.listdir(tmp_path / "checkpoints") == ["checkpoint_epoch_00001.dcp"]  # no temporary folder left
    assert ckpt.find_latest_checkpoint(str(tmp_path)) == path

    # Whole: the single-file format, loadable by any model and optimizer (and by load_state_file).
    whole = ckpt.load_checkpoint(path)
    assert whole["epoch"] == 1 and whole["cfg"].startswith("TRAIN") and len(whole["rng_states"]) == 1
    for key, value in plain.state_dict().items():
        assert torch.equal(whole["model_state"][key], value), key
    expected = plain_opt.state_dict()
    assert [g["params"] for g in whole["optimizer_state"]["param_groups"]] == \
        [g["params"] for g in expected["param_groups"]]
    for index, values in expected["state"].items():
        for name, value in values.items():
            torch.testing.assert_close(whole["optimizer_state"]["state"][index][name], value, rtol=0, atol=0)
    assert load_state_file(path)["model_state"].keys() == whole["model_state"].keys()

    # Every way of resuming continues like the uninterrupted plain model.
    train_step(plain, plain_opt, 3)
    resumed = []
    for source in ("sharded folder", "whole state"):
        model = tiny_model(shard=True)
        optimizer = build_optimizer(model, "adamw", base_lr=1e-2, weight_decay=0.05, layer_decay=0.5)
        state = read_checkpoint(path, model, optimizer) if source == "sharded folder" else whole
        assert parallel.holds_dtensors(state["model_state"]) == (source == "sharded folder")
        parallel.load_model_state(model, state["model_state"])
        parallel.load_optimizer_state(model, optimizer, state["optimizer_state"])
        resumed.append((model, optimizer))
    plain_resumed = tiny_model(shard=False)
    plain_resumed_opt = build_optimizer(plain_resumed, "adamw", base_lr=1e-2, weight_decay=0.05, layer_decay=0.5)
    state = read_checkpoint(path, plain_resumed, plain_resumed_opt)
    parallel.load_model_state(plain_resumed, state["model_state"])
    parallel.load_optimizer_state(plain_resumed, plain_resumed_opt, state["optimizer_state"])
    resumed.append((plain_resumed, plain_resumed_opt))
    for model, optimizer in resumed:
        train_step(model, optimizer, 3)
        assert_same_weights(plain, model)

    # The consolidation command writes that dict as one weights-only file.
    out = tmp_path / "model.pyth"
    consolidate_checkpoint.main([path, str(out)])
    assert capsys.readouterr().out.strip() == \
        f"Wrote {out}: epoch 1, iteration 0, 6 model tensors (0.00M values), with optimizer state"
    single = torch.load(out, weights_only=True)
    assert single.keys() == whole.keys()
    for key, value in whole["model_state"].items():
        assert torch.equal(single["model_state"][key], value), key


def test_a_checkpoint_before_the_first_step_keeps_the_optimizer_fresh(tmp_path, single_process_group):
    # Asking torch for the optimizer state of a sharded model before any step would take a step of zero gradients
    # (AdamW's step count 1), and a resumed run would then differ from one that never stopped.
    model = tiny_model(shard=True)
    optimizer = build_optimizer(model, "adamw", base_lr=1e-2, weight_decay=0.05)
    path = ckpt.checkpoint_path(str(tmp_path), 0, 0, sharded=True)
    save_sharded(ShardedCheckpointWriter(is_main=True), path, model, optimizer, epoch=0)
    assert not optimizer.state
    assert ckpt.load_checkpoint(path)["optimizer_state"] is None
    fresh = tiny_model(shard=True)
    fresh_optimizer = build_optimizer(fresh, "adamw", base_lr=1e-2, weight_decay=0.05)
    state = read_checkpoint(path, fresh, fresh_optimizer)
    parallel.load_optimizer_state(fresh, fresh_optimizer, state["optimizer_state"])
    assert not fresh_optimizer.state


def test_sharded_saves_that_did_not_finish_are_never_resumed_from(tmp_path, single_process_group, monkeypatch,
                                                                 capsys):
    out = str(tmp_path)
    model = tiny_model(shard=True)
    optimizer = build_optimizer(model, "adamw", base_lr=1e-2, weight_decay=0.05)
    train_step(model, optimizer, 1)
    writer = ShardedCheckpointWriter(is_main=True)
    good = ckpt.checkpoint_path(out, 1, sharded=True)
    save_sharded(writer, good, model, optimizer, epoch=1)

    # A save that fails before it is complete leaves only a hidden folder, and says so.
    def full_disk(folder: str, path: str) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(sharded_checkpoint, "_publish", full_disk)
        with pytest.raises(RuntimeError, match="Could not complete the checkpoint: .*No space left"):
            save_sharded(writer, ckpt.checkpoint_path(out, 2, sharded=True), model, optimizer, epoch=2)
    folder = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(folder)) == [".checkpoint_epoch_00002.dcp.partial", "checkpoint_epoch_00001.dcp"]
    # Folders under checkpoint names that are not complete: no marker (as a copy cut short would leave), no
    # DCP metadata, no trainer state.
    for name, missing in (("checkpoint_epoch_00003_iter_000001.dcp", dcp_folders.COMPLETE_MARKER),
                          ("checkpoint_epoch_00004.dcp", ".metadata"),
                          ("checkpoint_epoch_00005.dcp", dcp_folders.TRAINER_STATE)):
        shutil.copytree(good, os.path.join(folder, name))
        os.remove(os.path.join(folder, name, missing))
    assert ckpt.find_latest_checkpoint(out) == good
    with pytest.raises(ValueError, match="checkpoint_epoch_00004.dcp is not a complete sharded checkpoint folder"):
        ckpt.load_checkpoint(os.path.join(folder, "checkpoint_epoch_00004.dcp"))
    with pytest.raises(SystemExit, match="consolidate_checkpoint: .*checkpoint_epoch_00005.dcp is not a complete"):
        consolidate_checkpoint.main([os.path.join(folder, "checkpoint_epoch_00005.dcp"), str(tmp_path / "x.pyth")])
    assert not (tmp_path / "x.pyth").exists()

    # Single files and folders are ordered by position alike; a later save over the leftover folder completes.
    single = ckpt.checkpoint_path(out, 1, 4)
    ckpt.save_checkpoint(single, ckpt.load_checkpoint(good))
    assert ckpt.find_latest_checkpoint(out) == single
    second = ckpt.checkpoint_path(out, 2, sharded=True)
    save_sharded(writer, second, model, optimizer, epoch=2)
    assert ckpt.find_latest_checkpoint(out) == second
    assert not os.path.exists(os.path.join(folder, ".checkpoint_epoch_00002.dcp.partial"))
    # Pruning mid-epoch checkpoints removes folders as it removes files.
    assert [os.path.basename(p) for p in ckpt.keep_last(out, 0)] == ["checkpoint_epoch_00001_iter_000004.pyth",
                                                                       "checkpoint_epoch_00003_iter_000001.dcp"]
    assert sorted(n for n in os.listdir(folder) if not n.startswith(".")) == [
        "checkpoint_epoch_00001.dcp", "checkpoint_epoch_00002.dcp", "checkpoint_epoch_00004.dcp",
        "checkpoint_epoch_00005.dcp"]


def test_pretrained_weights_initialise_a_sharded_model_by_name(single_process_group):
    # TRAIN.CHECKPOINT_FILE_PATH with fsdp: load_pretrained copies the file's matching tensors into the shards and
    # leaves the model's other tensors (here the last layer, which the file lacks) at their own initialisation.
    model = tiny_model(shard=True)
    own = whole_weights(model)
    torch.manual_seed(1)
    source = {k: v for k, v in nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8)).state_dict().items()}
    source["decoder.weight"] = torch.ones(2)
    report = load_pretrained(model, {"model_state": {f"module.{k}": v for k, v in source.items()}},
                             copy=lambda tensors: parallel.load_model_state(model, tensors, strict=False))
    assert sorted(report.loaded) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert (report.new_keys, report.unused_keys) == (["2.weight", "2.bias"], ["decoder.weight"])
    after = whole_weights(model)
    for key in report.loaded:
        assert torch.equal(after[key], source[key]), key
    assert not torch.equal(own["0.weight"], source["0.weight"])  # another initialisation: the copy did something
    for key in report.new_keys:
        assert torch.equal(after[key], own[key]), key
