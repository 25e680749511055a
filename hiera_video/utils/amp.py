"""Mixed precision: the one autocast that training and evaluation share."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

AMP_DTYPES = ("bfloat16", "float16")


def amp_context(cfg: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to TRAIN.AMP_DTYPE on CUDA when TRAIN.MIXED_PRECISION is set; nothing on the CPU. Evaluation runs
    under the same context as training, so validation numbers describe the model as it trains."""
    if device.type == "cuda" and cfg.TRAIN.MIXED_PRECISION:
        return torch.autocast("cuda", dtype=getattr(torch, cfg.TRAIN.AMP_DTYPE))
    return contextlib.nullcontext()
