"""Training checkpoints: naming, atomic saving, finding the newest for auto-resume, safe loading, RNG state.

Layout: OUTPUT_DIR/checkpoints/checkpoint_epoch_%05d.pyth after `epoch` completed epochs, and
checkpoint_epoch_%05d_iter_%06d.pyth after `iter` more iterations of the following epoch (mid-epoch, for
preemption). Files are written to a hidden temporary name and renamed, so a crash never leaves a truncated file
under a checkpoint name. Everything saved must load with `torch.load(weights_only=True)`.

A run with TRAIN.PARALLELISM fsdp writes folders of the same names ending in `.dcp` instead (sharded, by every rank:
engine/sharded_checkpoint.py, layout in utils/dcp_folders.py). Auto-resume takes the newest complete checkpoint of
either kind, and `load_checkpoint` reads either as the same dict.
"""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from iopath.common.file_io import g_pathmgr as PathManager

from hiera_video.utils import dcp_folders
from hiera_video.utils import distributed as du
from hiera_video.utils.atomic import atomic_open
from hiera_video.utils.wrappers import strip_ddp_prefix

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
_NAME_PATTERN = re.compile(r"^checkpoint_epoch_(\d+)(?:_iter_(\d+))?\.(?:pyth|dcp)$")
# Types torch.load(weights_only=True) reconstructs without extra allow-listing.
_WEIGHTS_ONLY_TYPES = (torch.Tensor, str, bytes, bytearray, bool, int, float, complex, type(None), torch.Size,
                       torch.dtype, torch.device)


class CheckpointName(NamedTuple):
    """Position of a checkpoint in training: completed epochs, then iterations into the next epoch."""

    epoch: int
    iteration: int


def checkpoint_dir(output_dir: str) -> str:
    """The folder holding the checkpoints of a run."""
    return os.path.join(output_dir, CHECKPOINT_SUBDIR)


def checkpoint_path(output_dir: str, epoch: int, iteration: int | None = None, sharded: bool = False) -> str:
    """Path of the checkpoint after `epoch` completed epochs (plus `iteration` iterations, mid-epoch): a .pyth
    file, or with `sharded` a .dcp folder."""
    if epoch < 0 or (iteration is not None and iteration < 0):
        raise ValueError(f"epoch and iteration must be >= 0, got epoch={epoch}, iteration={iteration}")
    name = f"checkpoint_epoch_{epoch:05d}" + ("" if iteration is None else f"_iter_{iteration:06d}") + \
        (dcp_folders.SUFFIX if sharded else ".pyth")
    return os.path.join(checkpoint_dir(output_dir), name)


def parse_checkpoint_name(path: str) -> CheckpointName | None:
    """(epoch, iter) encoded in a checkpoint file or folder name (iter 0 for end-of-epoch ones); None for other
    names."""
    match = _NAME_PATTERN.match(os.path.basename(path))
    if match is None:
        return None
    return CheckpointName(int(match.group(1)), int(match.group(2) or 0))


def _ordering_key(path: str) -> tuple[int, int, bool, str]:
    name = parse_checkpoint_name(path)
    if name is None:
        raise ValueError(f"{path} is not named like a checkpoint")
    epoch, iteration = name
    # On a tie (an `_iter_000000` file next to the epoch file) the end-of-epoch file counts as newer; a .pyth
    # file and a .dcp folder of the same position are ordered by name, so the choice does not depend on listing.
    return epoch, iteration, "_iter_" not in os.path.basename(path), os.path.basename(path)


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoint files and folders of a run, oldest first; temporary names and other names are ignored."""
    folder = checkpoint_dir(output_dir)
    if not PathManager.isdir(folder):
        return []
    paths = [os.path.join(folder, name) for name in PathManager.ls(folder) if parse_checkpoint_name(name)]
    return sorted(paths, key=_ordering_key)


def _is_complete(path: str) -> bool:
    if PathManager.isdir(path):
        return dcp_folders.is_complete(path)
    # torch.save writes a zip archive whose directory sits at the end: a truncated file has none.
    try:
        with PathManager.open(path, "rb") as f:
            return zipfile.is_zipfile(f)
    except OSError:
        return False


def find_latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint by (epoch, iter), or None when the run has none."""
    for path in reversed(list_checkpoints(output_dir)):
        if _is_complete(path):
            return path
        logger.warning("Skipping incomplete checkpoint %s (a save that did not finish)", path)
    return None


def check_weights_only_loadable(value: Any, where: str) -> None:
    """Raises TypeError naming the entry of `value` (`where`: its name) that torch.load(weights_only=True) could
    not load."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_weights_only_loadable(key, f"{where} key {key!r}")
            check_weights_only_loadable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            check_weights_only_loadable(item, f"{where}[{i}]")
    elif not isinstance(value, _WEIGHTS_ONLY_TYPES):
        raise TypeError(f"Checkpoint {where} has type {type(value).__module__}.{type(value).__qualname__}, which "
                        "torch.load(weights_only=True) cannot load; convert it to tensors or plain Python values")


def save_checkpoint(path: str, state: dict) -> None:
    """Write `state` atomically to `path` (temporary file in the same folder, fsync, rename).

    `state` holds e.g. (the trainer's) model_state, optimizer_state, scaler_state, epoch, iter, world_size,
    rng_states (one per rank), best (the tracked minima) and cfg (YAML string); a `module.` prefix on every
    model_state key is removed. Raises TypeError naming the entry
    when a value would not load with weights_only=True.
    """
    if "model_state" in state:
        state = {**state, "model_state": strip_ddp_prefix(state["model_state"])}
    check_weights_only_loadable(state, "state")
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    logger.info("Saved checkpoint %s", path)


def load_checkpoint(path: str) -> dict:
    """Load a checkpoint dict onto the CPU with torch.load(weights_only=True); errors name the file. A sharded
    (.dcp) folder is read whole into the same format (utils/dcp_folders.py)."""
    if PathManager.isdir(path):
        return dcp_folders.read_dcp_folder(path)
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    try:
        with PathManager.open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"Cannot load checkpoint {path}: {type(error).__name__}: {error}") from error
    if not isinstance(state, dict):
        raise RuntimeError(f"Checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def keep_last(output_dir: str, n: int) -> list[str]:
    """Delete all but the newest `n` mid-epoch checkpoints (end-of-epoch files are kept); returns removed paths."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    mid_epoch = [p for p in list_checkpoints(output_dir) if "_iter_" in os.path.basename(p)]
    removed = mid_epoch[:max(0, len(mid_epoch) - n)]
    for path in removed:
        if PathManager.isdir(path):
            shutil.rmtree(path)  # a sharded folder (written on a local or mounted file system: DCP's own writer)
        else:
            PathManager.rm(path)
    return removed


def capture_rng_state(device: torch.device | None = None) -> dict:
    """RNG states of Python `random`, NumPy's global generator, torch CPU and, for a CUDA `device`, that device
    (this process's only: another process owns each other device), as tensors and plain values (loadable with
    weights_only=True)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    state = {
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = _cuda_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Restore the generators captured by `capture_rng_state`; the CUDA state goes to this process's `device`,
    whichever device captured it, so a changed GPU layout cannot hand one process another's stream."""
    missing = {"python", "numpy", "torch"} - set(state)
    if missing:
        raise KeyError(f"RNG state lacks {sorted(missing)}; it has {sorted(state)}")
    py, np_state = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda_state = state.get("cuda")
    if device is None or device.type != "cuda" or cuda_state is None:
        return
    if isinstance(cuda_state, torch.Tensor):
        _set_cuda_rng_state(cuda_state, device)
    else:
        logger.warning("The checkpoint holds the CUDA RNG states of every visible device (an older format): the "
                       "CUDA RNG of %s restarts", device)


# CUDA only, so not run on CPU-only machines (the tests mock torch.cuda's two calls).
def _cuda_rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device)


def _set_cuda_rng_state(state: torch.Tensor, device: torch.device) -> None:
    torch.cuda.set_rng_state(state, device)


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Loads a gradient scaler's state. A checkpoint written without fp16 (bf16, the CPU) has an empty one: an fp16
    run resuming from it starts with a fresh scale instead of failing."""
    if scaler.is_enabled() and not state:
        logger.info("The checkpoint has no gradient-scaler state (written without fp16): starting with a fresh scale")
        return
    scaler.load_state_dict(state)


def agreed_latest_checkpoint(output_dir: str, is_main: bool) -> str | None:
    """Rank 0's `find_latest_checkpoint`, on every rank (a collective): ranks scanning a network filesystem can
    see different newest files, and must all resume from the same one."""
    return du.broadcast_object(find_latest_checkpoint(output_dir) if is_main else None)
