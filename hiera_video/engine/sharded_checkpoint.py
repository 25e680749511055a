"""Checkpoints of a sharded (FSDP) model: every rank writes its own shards in parallel, in the background, into a
hidden folder that becomes the checkpoint only once all of it is on disk; resuming reads each rank's shards only.

Layout of the folder: utils/dcp_folders.py. The guarantee is the one a .pyth file has (engine/checkpoint.py): a
folder under a checkpoint name is complete, so auto-resume never picks a save that was cut short.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from concurrent.futures import Future
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

from hiera_video.engine import checkpoint as ckpt
from hiera_video.engine.parallel import holds_dtensors, is_sharded
from hiera_video.utils import dcp_folders
from hiera_video.utils.atomic import atomic_open, fsync_directory

logger = logging.getLogger(__name__)


def _publish(folder: str, path: str) -> None:
    """Marks the written `folder` complete and renames it to `path` (replacing a checkpoint of the same name, which
    a run stopped again right after resuming writes)."""
    with atomic_open(os.path.join(folder, dcp_folders.COMPLETE_MARKER), "w") as f:
        f.write("every rank's shards and the metadata are written\n")
    parent = os.path.dirname(path)
    replaced = None
    if os.path.exists(path):
        replaced = os.path.join(parent, f".{os.path.basename(path)}.replaced-{uuid.uuid4().hex[:8]}")
        os.rename(path, replaced)
    os.rename(folder, path)
    fsync_directory(parent)
    if replaced:
        shutil.rmtree(replaced)


class ShardedCheckpointWriter:
    """Writes sharded checkpoints with torch.distributed.checkpoint's async_save. Every rank creates one (a
    collective: it makes the process group the saves use) and calls `save` and `wait` together."""

    def __init__(self, is_main: bool) -> None:
        self.is_main = is_main
        # async_save runs its collectives in a background thread: on a CPU group of their own, never interleaved
        # with the training's (NCCL or gloo) collectives.
        group = dist.new_group(backend="gloo")
        assert isinstance(group, dist.ProcessGroup)  # every rank is a member
        self.group = group
        self._future: Future | None = None
        self._published = threading.Event()
        self._error: BaseException | None = None

    def save(self, path: str, state: dict[str, Any], on_complete: Callable[[], object] | None = None) -> None:
        """Starts saving `state` as the folder `path` and returns once it is copied to host memory (training may
        change the weights from then on). Entries holding DTensors (the model and optimizer shards) go through DCP,
        the rest into the folder's trainer state file, by rank 0, which also renames the folder into place and
        then calls `on_complete` (e.g. deleting old checkpoints). Waits for the previous save first."""
        self.wait()
        sharded = {key: value for key, value in state.items() if holds_dtensors(value)}
        others = {key: value for key, value in state.items() if key not in sharded}
        folder = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
        if self.is_main:
            if os.path.exists(folder):  # left by a run killed while saving here
                shutil.rmtree(folder)
            os.makedirs(folder)
            others["sharded_keys"] = sorted(sharded)
            ckpt.check_weights_only_loadable(others, "state")
            with atomic_open(os.path.join(folder, dcp_folders.TRAINER_STATE), "wb") as f:
                torch.save(others, f)
        dist.barrier(group=self.group)
        self._published.clear()
        self._error = None
        future = dcp.async_save(sharded, checkpoint_id=folder, process_group=self.group)
        assert isinstance(future, Future)  # a plain future without a stager of our own
        self._future = future
        if self.is_main:
            # DCP's coordinator (rank 0) finishes only after every rank reported its shards written.
            future.add_done_callback(lambda done: self._finish(done, folder, path, on_complete))

    def _finish(self, done: Future, folder: str, path: str, on_complete: Callable[[], object] | None) -> None:
        try:
            done.result()
            _publish(folder, path)
            logger.info("Saved checkpoint %s", path)
            if on_complete is not None:
                on_complete()
        except BaseException as error:  # reported by wait() in the training thread
            self._error = error
        finally:
            self._published.set()

    def wait(self) -> None:
        """Blocks until the last save is complete under its name (all ranks call it); raises if it failed."""
        if self._future is None:
            return
        future, self._future = self._future, None
        future.result()
        if self.is_main:
            self._published.wait()
            if self._error is not None:
                raise RuntimeError(f"Could not complete the checkpoint: {self._error}") from self._error


def read_checkpoint(path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The checkpoint `path` (a .pyth file or a .dcp folder) as a dict, to resume `model` and `optimizer` from
    (all ranks call it). A sharded model reading a sharded folder gets its own DTensor shards of `model_state` and
    `optimizer_state` (each rank reads only its part); otherwise the whole state (`ckpt.load_checkpoint`)."""
    if not (is_sharded(model) and os.path.isdir(path)):
        return ckpt.load_checkpoint(path)
    state = ckpt.load_checkpoint(os.path.join(path, dcp_folders.TRAINER_STATE))
    sharded_keys = state.pop("sharded_keys")
    templates: dict[str, Any] = {}
    for key in sharded_keys:
        if key == "model_state":
            templates[key] = get_model_state_dict(model)
        elif key == "optimizer_state":
            templates[key] = get_optimizer_state_dict(model, optimizer)
        else:
            raise ValueError(f"{path} holds a sharded entry {key!r} that this trainer cannot restore")
    dcp.load(templates, checkpoint_id=path)
    return {**state, **templates}
