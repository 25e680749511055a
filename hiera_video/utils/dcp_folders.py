"""Sharded checkpoint folders (torch.distributed.checkpoint, "DCP"), as TRAIN.PARALLELISM fsdp writes them: their
layout, whether one is complete, and reading one whole, on one process, as the dict a single-file checkpoint holds.

Layout of e.g. `checkpoint_epoch_00002_iter_000010.dcp/`:
- `.metadata` and `__<rank>_<n>.distcp`: DCP's files, every rank's shards of the entries that hold sharded tensors
  (`model_state`, and `optimizer_state` keyed by parameter name as torch.distributed.checkpoint.state_dict has it);
- `trainer_state.pyth`: every other entry (epoch, iter, the RNG states of every rank, best, eval_pending, cfg, the
  scaler state), one torch.save file that loads with weights_only=True, plus `sharded_keys` naming the DCP entries;
- `COMPLETE`: written last, once every rank's shards and DCP's metadata are on disk. A folder without it is an
  interrupted save and is never read.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

SUFFIX = ".dcp"
METADATA = ".metadata"
TRAINER_STATE = "trainer_state.pyth"
COMPLETE_MARKER = "COMPLETE"


def is_complete(path: str) -> bool:
    """Whether `path` is a sharded checkpoint folder whose save finished (DCP metadata, trainer state, marker)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in (METADATA, TRAINER_STATE, COMPLETE_MARKER))


def optimizer_state_by_position(state: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed.checkpoint.state_dict's format) numbered by
    position instead, as `optimizer.state_dict()` numbers it: across the groups in order, from 0."""
    order = [name for group in state["param_groups"] for name in group["params"]]
    index = {name: i for i, name in enumerate(order)}
    return {"state": {index[name]: value for name, value in state["state"].items()},
            "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                             for group in state["param_groups"]]}


def optimizer_state_by_name(state: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The inverse of `optimizer_state_by_position`: `names[i]` is the name of the optimizer's i-th parameter."""
    return {"state": {names[i]: value for i, value in state["state"].items()},
            "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                             for group in state["param_groups"]]}


def is_keyed_by_name(optimizer_state: Mapping[str, Any]) -> bool:
    """Whether an optimizer state names its parameters (DCP's format) rather than numbering them."""
    return any(isinstance(p, str) for group in optimizer_state["param_groups"] for p in group["params"])


def _set_path(root: dict[str, Any], path: Sequence[Any], value: Any) -> None:
    """Puts `value` at `path` of the nested dicts and lists under `root` (an int in the path indexes a list, as in
    an optimizer state's param_groups), creating what is missing."""
    node: Any = root
    for key, next_key in zip(path, [*path[1:], None]):
        if isinstance(node, list):
            node.extend([None] * (key + 1 - len(node)))
        if next_key is None:
            node[key] = value
        elif isinstance(node, list) and node[key] is None or isinstance(node, dict) and key not in node:
            node[key] = [] if isinstance(next_key, int) else {}
        node = node[key]


def read_dcp_folder(path: str) -> dict[str, Any]:
    """The checkpoint in the complete folder `path` as one dict of whole tensors on the CPU, in the format of a
    single-file checkpoint (optimizer state numbered by position). Reads every shard: meant for one process.

    Raises ValueError when the folder is not a complete sharded checkpoint.
    """
    if not is_complete(path):
        raise ValueError(f"{path} is not a complete sharded checkpoint folder: it lacks one of {METADATA}, "
                         f"{TRAINER_STATE}, {COMPLETE_MARKER} (a save that did not finish, or not a checkpoint)")
    state = torch.load(os.path.join(path, TRAINER_STATE), map_location="cpu", weights_only=True)
    state.pop("sharded_keys", None)
    reader = dcp.FileSystemReader(path)
    metadata = reader.read_metadata()
    # DCP fills the entries of the dict it is given: one empty whole tensor per saved tensor (its shards are read
    # into it), None for the other values. torch's own dcp_to_torch_save does the same through private helpers.
    flat: dict[str, Any] = {
        key: torch.empty(item.size, dtype=item.properties.dtype) if isinstance(item, TensorStorageMetadata) else None
        for key, item in metadata.state_dict_metadata.items()}
    with warnings.catch_warnings():  # no_dist=True warns that it reads on one process, which is the point here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(flat, storage_reader=reader, no_dist=True)
    nesting = metadata.planner_data or {}  # flattened key -> its path in the saved nested dict
    for key, value in flat.items():
        _set_path(state, nesting.get(key, (key,)), value)
    optimizer_state = state.get("optimizer_state")
    if optimizer_state and is_keyed_by_name(optimizer_state):
        state["optimizer_state"] = optimizer_state_by_position(optimizer_state)
    return state
