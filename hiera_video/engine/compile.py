"""TRAIN.COMPILE: the training model through torch.compile."""
from __future__ import annotations

import logging
from typing import cast

import torch
from torch import nn

from hiera_video.config import check_choice

logger = logging.getLogger(__name__)

# "" trains eagerly; the others are torch.compile's modes ("reduce-overhead" adds CUDA graphs on a GPU).
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune")


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """`model` compiled in torch.compile `mode`, or `model` itself for "".

    Shapes are static (dynamic=False): training batches all have one shape, and inductor can spend many minutes on
    symbolic shapes once dynamo switches to them (benchmarks/RESULTS.md, "Compile hang"). The returned module shares
    `model`'s parameters; graphs are built on its first call.
    """
    check_choice("TRAIN.COMPILE", mode)
    if not mode:
        return model
    logger.info("TRAIN.COMPILE %s: torch.compile builds the training graphs in the first step", mode)
    return cast(nn.Module, torch.compile(model, mode=mode, dynamic=False))
