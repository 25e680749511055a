"""Hiera models: backbone/classifier, video MAE, named constructors, official weights by name, pretrained-weight
loading."""
from __future__ import annotations

from hiera_video.models.hiera import (
    Hiera,
    HieraBackbone,
    hiera_base_16x224,
    hiera_base_224,
    hiera_base_plus_16x224,
    hiera_base_plus_224,
    hiera_huge_16x224,
    hiera_huge_224,
    hiera_large_16x224,
    hiera_large_224,
    hiera_small_224,
    hiera_tiny_224,
)
from hiera_video.models.mae import (
    MaskedAutoencoderHiera,
    mae_hiera_base_16x224,
    mae_hiera_base_224,
    mae_hiera_base_plus_16x224,
    mae_hiera_base_plus_224,
    mae_hiera_huge_16x224,
    mae_hiera_huge_224,
    mae_hiera_large_16x224,
    mae_hiera_large_224,
    mae_hiera_small_224,
    mae_hiera_tiny_224,
)
from hiera_video.models.pretrained import OFFICIAL_WEIGHTS, checkpoint_names, default_checkpoint, resolve_weights
from hiera_video.models.registry import create_model, list_models, model_spec, register_model
from hiera_video.models.weights import LoadReport, load_pretrained, load_state_file

__all__ = [
    "OFFICIAL_WEIGHTS",
    "Hiera",
    "HieraBackbone",
    "LoadReport",
    "MaskedAutoencoderHiera",
    "checkpoint_names",
    "create_model",
    "default_checkpoint",
    "hiera_base_16x224",
    "hiera_base_224",
    "hiera_base_plus_16x224",
    "hiera_base_plus_224",
    "hiera_huge_16x224",
    "hiera_huge_224",
    "hiera_large_16x224",
    "hiera_large_224",
    "hiera_small_224",
    "hiera_tiny_224",
    "list_models",
    "load_pretrained",
    "load_state_file",
    "mae_hiera_base_16x224",
    "mae_hiera_base_224",
    "mae_hiera_base_plus_16x224",
    "mae_hiera_base_plus_224",
    "mae_hiera_huge_16x224",
    "mae_hiera_huge_224",
    "mae_hiera_large_16x224",
    "mae_hiera_large_224",
    "mae_hiera_small_224",
    "mae_hiera_tiny_224",
    "model_spec",
    "register_model",
    "resolve_weights",
]
