"""Official Hiera weights by name: `hiera_base_16x224:mae_k400_ft_k400` (MODEL:CHECKPOINT) -> a local file.

The table is the official release: facebookresearch/hiera v0.1.4 (`hiera/hiera.py`, `hiera/hiera_mae.py`), the
checkpoints each model's `pretrained_model` decorator lists, its default first. Meta publishes no SHA-256 for
these files, so none is recorded (`sha256=None`); an entry with a hash is verified, and every download is checked
for its full length. Files are downloaded once into the torch hub cache, `torch.hub.get_dir()/checkpoints`
($TORCH_HOME/hub/checkpoints), under the URL's file name: where torch.hub.load_state_dict_from_url, and so the
official package, keeps them, so either reuses the other's download.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re

import torch.hub

from hiera_video.utils.download import DownloadError, download_once

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/hiera/"
# A mirror of the official files (same file names under one base URL: http(s)://... or file:///shared/folder/).
BASE_URL_ENV = "HIERA_VIDEO_WEIGHTS_URL"


@dataclasses.dataclass(frozen=True)
class OfficialWeights:
    """One released file: its name under the base URL, and its SHA-256 when one is known (none is published)."""

    file_name: str
    sha256: str | None = None


W = OfficialWeights
# model -> checkpoint -> file; the first checkpoint is the model's default (pretrained=True).
# mae_in1k / mae_k400: MAE pretraining on ImageNet-1k / Kinetics-400 (encoder + decoder; loaded into a classifier
# it gives the encoder, head and final norm start fresh). *_ft_*: that MAE model fine-tuned on the same dataset.
OFFICIAL_WEIGHTS: dict[str, dict[str, OfficialWeights]] = {
    "hiera_tiny_224": {"mae_in1k_ft_in1k": W("hiera_tiny_224.pth"), "mae_in1k": W("mae_hiera_tiny_224.pth")},
    "hiera_small_224": {"mae_in1k_ft_in1k": W("hiera_small_224.pth"), "mae_in1k": W("mae_hiera_small_224.pth")},
    "hiera_base_224": {"mae_in1k_ft_in1k": W("hiera_base_224.pth"), "mae_in1k": W("mae_hiera_base_224.pth")},
    "hiera_base_plus_224": {"mae_in1k_ft_in1k": W("hiera_base_plus_224.pth"),
                            "mae_in1k": W("mae_hiera_base_plus_224.pth")},
    "hiera_large_224": {"mae_in1k_ft_in1k": W("hiera_large_224.pth"), "mae_in1k": W("mae_hiera_large_224.pth")},
    "hiera_huge_224": {"mae_in1k_ft_in1k": W("hiera_huge_224.pth"), "mae_in1k": W("mae_hiera_huge_224.pth")},
    "hiera_base_16x224": {"mae_k400_ft_k400": W("hiera_base_16x224.pth"),
                          "mae_k400": W("mae_hiera_base_16x224.pth")},
    "hiera_base_plus_16x224": {"mae_k400_ft_k400": W("hiera_base_plus_16x224.pth"),
                               "mae_k400": W("mae_hiera_base_plus_16x224.pth")},
    "hiera_large_16x224": {"mae_k400_ft_k400": W("hiera_large_16x224.pth"),
                           "mae_k400": W("mae_hiera_large_16x224.pth")},
    "hiera_huge_16x224": {"mae_k400_ft_k400": W("hiera_huge_16x224.pth"),
                          "mae_k400": W("mae_hiera_huge_16x224.pth")},
    "mae_hiera_tiny_224": {"mae_in1k": W("mae_hiera_tiny_224.pth")},
    "mae_hiera_small_224": {"mae_in1k": W("mae_hiera_small_224.pth")},
    "mae_hiera_base_224": {"mae_in1k": W("mae_hiera_base_224.pth")},
    "mae_hiera_base_plus_224": {"mae_in1k": W("mae_hiera_base_plus_224.pth")},
    "mae_hiera_large_224": {"mae_in1k": W("mae_hiera_large_224.pth")},
    "mae_hiera_huge_224": {"mae_in1k": W("mae_hiera_huge_224.pth")},
    "mae_hiera_base_16x224": {"mae_k400": W("mae_hiera_base_16x224.pth")},
    "mae_hiera_base_plus_16x224": {"mae_k400": W("mae_hiera_base_plus_16x224.pth")},
    "mae_hiera_large_16x224": {"mae_k400": W("mae_hiera_large_16x224.pth")},
    "mae_hiera_huge_16x224": {"mae_k400": W("mae_hiera_huge_16x224.pth")},
}
del W

_NAME = re.compile(r"^(\w+):(\w+)$")  # MODEL:CHECKPOINT; never a path (no '/', '.' or '://')


def _checkpoints_of(model: str) -> dict[str, OfficialWeights]:
    if model not in OFFICIAL_WEIGHTS:
        close = difflib.get_close_matches(model, OFFICIAL_WEIGHTS, n=3)
        hint = f"did you mean {close}?" if close else f"models with official weights: {sorted(OFFICIAL_WEIGHTS)}"
        raise ValueError(f"no official weights for model {model!r}; {hint}")
    return OFFICIAL_WEIGHTS[model]


def checkpoint_names(model: str) -> list[str]:
    """The official checkpoints of `model`, its default first; ValueError naming close models when unknown."""
    return list(_checkpoints_of(model))


def default_checkpoint(model: str) -> str:
    """The checkpoint `create_model(model, pretrained=True)` loads (the official package's default)."""
    return checkpoint_names(model)[0]


def _describe_checkpoints(model: str) -> str:
    names = checkpoint_names(model)
    return ", ".join([f"{model}:{names[0]} (default)"] + [f"{model}:{name}" for name in names[1:]])


def official_weights(model: str, checkpoint: str) -> OfficialWeights:
    """The table entry of MODEL:CHECKPOINT; ValueError listing the model's checkpoints when unknown."""
    checkpoints = _checkpoints_of(model)
    if checkpoint not in checkpoints:
        raise ValueError(f"{model} has no official checkpoint {checkpoint!r}; its checkpoints: "
                         f"{_describe_checkpoints(model)}")
    return checkpoints[checkpoint]


def weights_url(model: str, checkpoint: str) -> str:
    """The download URL of MODEL:CHECKPOINT: the official one, or under $HIERA_VIDEO_WEIGHTS_URL when set."""
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + "/" + official_weights(model, checkpoint).file_name


def cache_path(model: str, checkpoint: str) -> str:
    """Where MODEL:CHECKPOINT is kept: torch.hub.get_dir()/checkpoints/<file name> (set the folder with $TORCH_HOME)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", official_weights(model, checkpoint).file_name)


def download_weights(model: str, checkpoint: str, progress: bool = True) -> str:
    """The local file of MODEL:CHECKPOINT, downloaded into the torch hub cache the first time (with a progress bar,
    atomically, verified); DownloadError saying what to download and where to put it when that fails."""
    entry = official_weights(model, checkpoint)
    url, path = weights_url(model, checkpoint), cache_path(model, checkpoint)
    try:
        return download_once(url, path, sha256=entry.sha256, progress=progress)
    except DownloadError as err:
        raise DownloadError(
            f"{err}\nTo use {model}:{checkpoint} on a machine without internet access:\n"
            f"  1. download {DEFAULT_BASE_URL}{entry.file_name} on a machine with internet access,\n"
            f"  2. copy the file to {path}\n"
            f"     (the torch hub cache; $TORCH_HOME moves it),\n"
            f"or give the downloaded file's path instead of the name (a local path always works). "
            f"{BASE_URL_ENV}=<base URL> downloads from a mirror."
        ) from err


def parse_weights_name(spec: str) -> tuple[str, str] | None:
    """(model, checkpoint) when `spec` is written MODEL:CHECKPOINT, else None (a path)."""
    match = _NAME.match(spec)
    return (match.group(1), match.group(2)) if match else None


def resolve_weights(spec: str | os.PathLike, progress: bool = True) -> str:
    """A weights argument as a readable file: an existing path (or any iopath URI) as it is, an official name
    MODEL:CHECKPOINT (`hiera_base_16x224:mae_k400_ft_k400`) as its cached download (downloaded if missing).

    A file of that exact name wins over the official name. Unknown names raise ValueError listing the valid ones,
    a missing path FileNotFoundError, a failed download DownloadError with instructions for offline machines.
    """
    spec = os.fspath(spec)
    if "://" in spec or os.path.exists(spec):
        return spec
    name = parse_weights_name(spec)
    if name is not None:
        return download_weights(*name, progress=progress)
    hint = ""
    if spec in OFFICIAL_WEIGHTS:
        hint = f"; official weights of that model are named {_describe_checkpoints(spec)}"
    raise FileNotFoundError(f"weights file not found: {spec} (give a local path, or an official name "
                            f"MODEL:CHECKPOINT such as hiera_base_16x224:mae_k400_ft_k400{hint})")


def pretrained_weights(model: str, pretrained: bool | str, progress: bool = True) -> str:
    """The file `create_model(model, pretrained=...)` loads: True = the model's default official checkpoint, a
    checkpoint name of the model (`"mae_k400"`), or any weights argument resolve_weights takes (a path,
    MODEL:CHECKPOINT)."""
    if pretrained is True:
        return download_weights(model, default_checkpoint(model), progress)
    if not isinstance(pretrained, str):
        raise TypeError(f"pretrained must be True, a checkpoint name or a path, got {pretrained!r}")
    if pretrained in OFFICIAL_WEIGHTS.get(model, {}):
        return download_weights(model, pretrained, progress)
    if parse_weights_name(pretrained) is None and "/" not in pretrained and not os.path.exists(pretrained):
        official_weights(model, pretrained)  # raises: no such checkpoint, listing the model's checkpoints
    return resolve_weights(pretrained, progress)
