"""Models from a config: build_model(cfg) (the named constructor of MODEL.ARCH with the config's overrides) and
build_detector(cfg) (that model's backbone under an ROI action head)."""
from __future__ import annotations

import inspect
from typing import Any

from fvcore.common.config import CfgNode
from torch import nn

from hiera_video.config import register_choices
from hiera_video.models.heads import HieraActionDetector
from hiera_video.models.hiera import Hiera
from hiera_video.models.mae import TARGETS
from hiera_video.models.registry import constructor_parameters, create_model, model_spec

# HIERA config key -> constructor argument; unset values (-1 or []) keep the constructor's default.
_HIERA_OVERRIDES = {
    "EMBED_DIM": "embed_dim", "NUM_HEADS": "num_heads", "STAGES": "stages", "Q_POOL": "q_pool",
    "Q_STRIDE": "q_stride", "MASK_UNIT_SIZE": "mask_unit_size", "MASK_UNIT_ATTN": "mask_unit_attn",
    "PATCH_KERNEL": "patch_kernel", "PATCH_STRIDE": "patch_stride", "PATCH_PADDING": "patch_padding",
    "MLP_RATIO": "mlp_ratio",
}
_MAE_OVERRIDES = {"DECODER_EMBED_DIM": "decoder_embed_dim", "DECODER_DEPTH": "decoder_depth",
                  "DECODER_NUM_HEADS": "decoder_num_heads"}
register_choices("MAE.TARGET", TARGETS)


def _is_set(value: Any) -> bool:
    return value != -1 and value != [] and value != -1.0


def _default(arch: str, arg: str) -> Any:
    spec = model_spec(arch)
    if arg in spec.defaults:
        return spec.defaults[arg]
    parameter = constructor_parameters(spec.cls).get(arg)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise KeyError(f"{arch} has no default for {arg}")
    return parameter.default


def _fit_to_stage_count(arch: str, overrides: dict[str, Any]) -> None:
    """With HIERA.STAGES changing the number of stages, adapt the per-stage settings the user did not set:
    mask-unit attention keeps the constructor's pattern (windowed first stages), and q-pooling still stops the
    same number of transitions before the end."""
    num_stages = len(overrides["stages"])
    default_stages = len(_default(arch, "stages"))
    if "mask_unit_attn" not in overrides:
        pattern = tuple(_default(arch, "mask_unit_attn"))
        overrides["mask_unit_attn"] = (pattern + (False,) * num_stages)[:num_stages]
    if "q_pool" not in overrides:
        overrides["q_pool"] = max(0, _default(arch, "q_pool") - (default_stages - num_stages))


def model_overrides(cfg: CfgNode) -> dict[str, Any]:
    """Constructor keyword arguments implied by the config (input size, classes, activation checkpointing, HIERA.*,
    MAE.*)."""
    size = cfg.DATA.TRAIN_CROP_SIZE
    overrides: dict[str, Any] = {"input_size": (cfg.DATA.NUM_FRAMES, size, size),
                                 "drop_path_rate": cfg.HIERA.DROP_PATH_RATE,
                                 "act_checkpoint": cfg.MODEL.ACT_CHECKPOINT}
    for key, arg in _HIERA_OVERRIDES.items():
        if _is_set(cfg.HIERA[key]):
            value = cfg.HIERA[key]
            overrides[arg] = tuple(value) if isinstance(value, list) else value
    if "stages" in overrides:
        _fit_to_stage_count(cfg.MODEL.ARCH, overrides)
    if cfg.MODEL.ARCH.startswith("mae_"):
        overrides["target"] = cfg.MAE.TARGET
        overrides.update({arg: cfg.MAE[key] for key, arg in _MAE_OVERRIDES.items() if _is_set(cfg.MAE[key])})
    else:
        overrides["num_classes"] = cfg.MODEL.NUM_CLASSES
        overrides["head_dropout"] = cfg.MODEL.DROPOUT_RATE
    return overrides


def build_model(cfg: CfgNode) -> nn.Module:
    """The model of MODEL.ARCH, sized by DATA.NUM_FRAMES x DATA.TRAIN_CROP_SIZE, with HIERA/MAE overrides (and a
    frozen backbone for linear probing with MODEL.FREEZE_BACKBONE)."""
    model = create_model(cfg.MODEL.ARCH, **model_overrides(cfg))
    if cfg.MODEL.FREEZE_BACKBONE:
        if not isinstance(model, Hiera):
            raise ValueError(f"MODEL.FREEZE_BACKBONE trains a classifier's head; {cfg.MODEL.ARCH} has none")
        model.freeze_backbone()
    return model


def build_detector(cfg: CfgNode) -> HieraActionDetector:
    """The Hiera video model of MODEL.ARCH (with the config's overrides) as backbone of an ROI action detector
    reading stage AVA.HEAD_STAGE with AVA.ROI_RESOLUTION."""
    spec = model_spec(cfg.MODEL.ARCH)
    if not issubclass(spec.cls, Hiera):
        raise ValueError(f"TASK detection needs a Hiera classifier architecture (hiera_*_16x224) as MODEL.ARCH to "
                         f"take the backbone from; got {cfg.MODEL.ARCH}")
    args = {**spec.defaults, **model_overrides(cfg)}
    args.pop("head_init_scale", None)
    return HieraActionDetector(head_stage=cfg.AVA.HEAD_STAGE, roi_resolution=cfg.AVA.ROI_RESOLUTION, **args)
