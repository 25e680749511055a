"""Initialise a model from pretrained weights: official Hiera classifier or MAE files, or our checkpoints.

All of them are dicts `{"model_state": state_dict, ...}` (a bare state dict is accepted too). Loading is by name:
matching tensors are copied, a classification head of another size is left at its fresh init, and the position
embeddings are resized when the file was trained at another clip length or resolution (hiera issue #24).
"""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from iopath.common.file_io import g_pathmgr
from torch import nn

from hiera_video.models.hiera import HieraBackbone
from hiera_video.models.pretrained import resolve_weights
from hiera_video.utils.dcp_folders import read_dcp_folder
from hiera_video.utils.wrappers import strip_ddp_prefix, unwrap_model

# The checkpoint entry holding the weight EMA (MODEL_EMA), loadable like `model_state`.
EMA_STATE_KEY = "model_ema_state"

RESIZABLE_KEYS = ("pos_embed_spatial", "pos_embed_temporal", "pos_embed")
Shape = tuple[int, ...]


@dataclasses.dataclass
class LoadReport:
    """What `load_pretrained` did, key by key."""

    loaded: list[str]
    new_keys: list[str]  # in the model, not in the file: left at their fresh init
    unused_keys: list[str]  # in the file, not in the model: ignored
    reinitialised: list[str]  # head.* of another shape (other num_classes): left at their fresh init
    interpolated: dict[str, tuple[Shape, Shape]]  # key -> (file shape, model shape)

    def summary(self) -> str:
        """Multi-line human-readable summary; key lists are grouped by top-level module."""
        lines = [f"loaded {len(self.loaded)} tensors"]
        for label, keys in (
            ("new (fresh init)", self.new_keys),
            ("unused from file", self.unused_keys),
            ("re-initialised head (shape differs)", self.reinitialised),
        ):
            if keys:
                lines.append(f"{label}: {len(keys)} tensors in {_group_by_module(keys)}")
        for key, (source, target) in self.interpolated.items():
            lines.append(f"interpolated {key}: {list(source)} -> {list(target)}")
        return "\n".join(lines)


def _group_by_module(keys: list[str]) -> str:
    counts = Counter(key.split(".")[0] for key in keys)
    return ", ".join(f"{name} ({count})" for name, count in counts.items())


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a torch file on the CPU with `weights_only=True`; errors name the path.

    `path`: any iopath path, or an official name MODEL:CHECKPOINT (`hiera_base_16x224:mae_k400_ft_k400`),
    downloaded once into the torch hub cache (pretrained.resolve_weights). A sharded checkpoint folder (`.dcp`,
    written with TRAIN.PARALLELISM fsdp) is read whole into the same dict (utils/dcp_folders.py).
    """
    spec, path = os.fspath(path), resolve_weights(path)
    if g_pathmgr.isdir(path):
        return read_dcp_folder(path)
    try:
        with g_pathmgr.open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"weights file not found: {path}") from err
    except Exception as err:  # unpickling/format errors come in many types; add the path to any of them
        again = f" (the download of {spec}: delete it to download it again)" if path != spec else ""
        raise ValueError(f"cannot read {path}{again} as a weights-only torch file: {err}") from err


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model state of a checkpoint dict (`model_state` key) or a bare state dict, without a DDP prefix."""
    state = checkpoint["model_state"] if "model_state" in checkpoint else checkpoint
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            "expected a state dict of tensors or a checkpoint with a 'model_state' state dict; "
            f"got top-level keys {sorted(checkpoint)[:10]}"
        )
    return dict(strip_ddp_prefix(state))


def _source_grid(num_tokens: int, target_grid: Sequence[int], key: str) -> tuple[int, int]:
    """The (h, w) grid of a flattened spatial embedding, assuming the model's aspect ratio."""
    height = round((num_tokens * target_grid[0] / target_grid[1]) ** 0.5)
    if height == 0 or num_tokens % height:
        raise ValueError(f"{key}: cannot infer a {target_grid[0]}:{target_grid[1]} grid for {num_tokens} tokens")
    return height, num_tokens // height


def _resize_grid(embed: torch.Tensor, source: tuple[int, ...], target: tuple[int, ...]) -> torch.Tensor:
    """[1, prod(source), C] -> [1, prod(target), C] by (bi)linear interpolation over the token grid."""
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(target)]
    grid = embed.transpose(1, 2).reshape(1, embed.shape[-1], *source)
    resized = F.interpolate(grid.float(), size=target, mode=mode, align_corners=False).to(embed.dtype)
    return resized.flatten(2).transpose(1, 2)


def resize_position_embedding(key: str, embed: torch.Tensor, model: HieraBackbone) -> torch.Tensor:
    """Resize an official position embedding to `model`'s token grid: temporal linearly, spatial (H x W grid)
    bilinearly (trilinear over a one-frame volume is the same), an image `pos_embed` bilinearly."""
    grid = model.tokens_spatial_shape
    if key == "pos_embed_temporal":
        return _resize_grid(embed, (embed.shape[1],), (grid[0],))
    if key == "pos_embed_spatial" or (key == "pos_embed" and len(grid) == 2):
        target = tuple(grid[-2:])
        return _resize_grid(embed, _source_grid(embed.shape[1], target, key), target)
    raise ValueError(f"{key}: cannot resize a joint space-time position embedding {list(embed.shape)}")


def load_pretrained(
    model: nn.Module,
    state_dict_or_checkpoint: Mapping[str, Any] | str | os.PathLike,
    copy: Callable[[dict[str, torch.Tensor]], object] | None = None,
) -> LoadReport:
    """Copy pretrained weights into `model` (fine-tuning init) and report what happened.

    Accepts an official classifier/MAE file dict, our checkpoint dict (optionally with a DDP `module.` prefix),
    a bare state dict, or a path to any of them. Keys absent on either side are reported, a `head.*` of another
    shape is dropped, position embeddings of another grid are interpolated; any other shape mismatch, or a file
    sharing no key with the model, raises ValueError. `copy` puts the chosen tensors into the model (default:
    `load_state_dict(strict=False)`; a sharded model needs torch.distributed.checkpoint's loader).
    """
    if isinstance(state_dict_or_checkpoint, (str, os.PathLike)):
        state_dict_or_checkpoint = load_state_file(state_dict_or_checkpoint)
    source = extract_state_dict(state_dict_or_checkpoint)
    target = unwrap_model(model)
    model_state = target.state_dict()

    to_load: dict[str, torch.Tensor] = {}
    unused, reinitialised, interpolated = [], [], {}
    for key, value in source.items():
        if key not in model_state:
            unused.append(key)
            continue
        expected = tuple(model_state[key].shape)
        if tuple(value.shape) == expected:
            to_load[key] = value
        elif key.startswith("head."):
            reinitialised.append(key)
        elif key in RESIZABLE_KEYS and isinstance(target, HieraBackbone):
            to_load[key] = resize_position_embedding(key, value, target)
            interpolated[key] = (tuple(value.shape), expected)
        else:
            raise ValueError(f"{key}: the file has shape {list(value.shape)}, the model expects {list(expected)}")
    if not to_load:
        raise ValueError(
            f"no tensor of the file matches the model: file keys start {sorted(source)[:5]}, "
            f"model keys start {sorted(model_state)[:5]}"
        )
    if copy is None:
        target.load_state_dict(to_load, strict=False)
    else:
        copy(to_load)
    new_keys = [k for k in model_state if k not in to_load and k not in reinitialised]
    return LoadReport(list(to_load), new_keys, unused, reinitialised, interpolated)
