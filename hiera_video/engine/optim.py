"""Optimizers and learning-rate schedules: AdamW/SGD parameter groups with weight-decay exclusions and layer-wise
learning-rate decay, the linear scaling rule, and warmup + cosine (or constant) schedules."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from hiera_video.utils.wrappers import unwrap_model

# `blocks.<i>.` at the start of a name or after a dot, so a backbone nested as `backbone.blocks.3` still counts
# while `decoder_blocks.3` (the MAE decoder) does not.
_BLOCK_PATTERN = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
OPTIMIZERS = ("adamw", "sgd")
LR_POLICIES = ("cosine", "constant")
# Parameters in front of the first block: they get the strongest layer decay (layer id 0).
_EMBEDDING_PATTERN = re.compile(r"(?:^|\.)(?:pos_embed[^.]*|patch_embed\..*|mask_token)$")


def _declared_no_weight_decay(model: nn.Module) -> set[str]:
    """Full names of parameters that any submodule lists in its `no_weight_decay()` (timm/Hiera convention)."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            prefix = module_name + "." if module_name else ""
            names.update(prefix + name for name in declared())
    return names


def _is_no_decay(name: str, param: torch.Tensor, declared: set[str], no_decay_names: Sequence[str]) -> bool:
    if param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name:
        return True
    if any(name == d or name.startswith(d + ".") for d in declared):
        return True
    return any(extra in name for extra in no_decay_names)


def _layer_id(name: str, num_layers: int) -> int:
    block = _BLOCK_PATTERN.search(name)
    if block:
        return int(block.group(1)) + 1
    if _EMBEDDING_PATTERN.search(name):
        return 0
    return num_layers + 1


def _count_blocks(names: Iterable[str]) -> int:
    return len({int(m.group(1)) for m in map(_BLOCK_PATTERN.search, names) if m})


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 no_decay_names: Sequence[str] = ()) -> list[dict]:
    """Optimizer parameter groups with weight-decay exclusions and layer-wise learning-rate decay.

    No weight decay for 1-D parameters (norms), biases, names containing `pos_embed`, names a submodule lists in
    `no_weight_decay()`, and names containing any of `no_decay_names`. Layer ids: 0 for `pos_embed*`,
    `patch_embed.*`, `mask_token`; i+1 for `blocks.<i>.*`; num_layers+1 for the rest (final norm, head). Each group
    has `lr_scale = layer_decay ** (num_layers + 1 - layer_id)`, `weight_decay`, and `param_names`. Frozen
    parameters are skipped; names are the bare model's (inside DDP or torch.compile wrappers).
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    model = unwrap_model(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    declared = _declared_no_weight_decay(model)
    # Frozen blocks still count, so freezing part of the network does not shift the scales of the rest.
    num_layers = _count_blocks(n for n, _ in model.named_parameters())

    groups: dict[tuple[bool, float], dict] = {}
    for name, param in named:
        decay = not _is_no_decay(name, param, declared, no_decay_names)
        scale = layer_decay ** (num_layers + 1 - _layer_id(name, num_layers))
        group = groups.setdefault((decay, scale), {
            "params": [], "param_names": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale})
        group["params"].append(param)
        group["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, name: str, base_lr: float, weight_decay: float,
                    betas: Sequence[float] = (0.9, 0.999), momentum: float = 0.9, layer_decay: float = 1.0,
                    no_decay_names: Sequence[str] = (), fused: bool = False) -> torch.optim.Optimizer:
    """AdamW or SGD over `param_groups(model, ...)`; each group starts at base_lr * lr_scale. `fused`: AdamW's fused
    kernel (CUDA; see engine/cuda_options.py), otherwise torch's default implementation."""
    groups = param_groups(model, weight_decay, layer_decay, no_decay_names)
    for group in groups:
        group["lr"] = base_lr * group["lr_scale"]
    name = name.lower()
    if name == "adamw":
        # Only an explicit True: fused=False would also turn off torch's default foreach implementation on CUDA.
        return torch.optim.AdamW(groups, lr=base_lr, betas=(betas[0], betas[1]), weight_decay=weight_decay,
                                 **({"fused": True} if fused else {}))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer '{name}': expected one of {', '.join(OPTIMIZERS)}")


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int = 256) -> float:
    """Linear scaling rule: base_lr is the rate for `reference_batch` samples per step."""
    if global_batch <= 0 or reference_batch <= 0:
        raise ValueError(f"Batch sizes must be positive, got global_batch={global_batch}, "
                         f"reference_batch={reference_batch}")
    return base_lr * global_batch / reference_batch


def lr_at(epoch: float, base_lr: float, max_epoch: float, warmup_epochs: float, warmup_start_lr: float,
          end_lr: float, policy: str = "cosine") -> float:
    """Learning rate at a fractional epoch: linear warmup from warmup_start_lr to base_lr, then the policy.

    "cosine" decays from base_lr to end_lr over the epochs after warmup (PySlowFast COSINE_AFTER_WARMUP);
    "constant" stays at base_lr. Epochs past max_epoch keep the final value.
    """
    if policy not in LR_POLICIES:
        raise ValueError(f"Unknown LR policy '{policy}': expected one of {', '.join(LR_POLICIES)}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if not 0 <= warmup_epochs < max_epoch:
        raise ValueError(f"Need 0 <= warmup_epochs < max_epoch, got warmup_epochs={warmup_epochs}, "
                         f"max_epoch={max_epoch}")
    if epoch < warmup_epochs:
        return warmup_start_lr + (base_lr - warmup_start_lr) * epoch / warmup_epochs
    if policy == "constant":
        return base_lr
    progress = min(epoch - warmup_epochs, max_epoch - warmup_epochs) / (max_epoch - warmup_epochs)
    return end_lr + (base_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's rate to lr * group["lr_scale"] (1 when a group has no scale)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
