"""Models inside DistributedDataParallel / DataParallel / torch.compile wrappers: the bare model, and state dicts
without the `module.` prefix DistributedDataParallel puts on every key."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

DDP_PREFIX = "module."


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = getattr(model, "_orig_mod")
        else:
            return model


def strip_ddp_prefix(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A copy of a DDP state dict without the `module.` prefix (keys and version metadata); others unchanged."""
    if not (state and all(key.startswith(DDP_PREFIX) for key in state)):
        return state
    stripped: Any = copy.copy(state)  # torch's helper edits in place: never touch the caller's dict
    if hasattr(state, "_metadata"):
        stripped._metadata = dict(getattr(state, "_metadata"))
    consume_prefix_in_state_dict_if_present(stripped, DDP_PREFIX)
    return stripped
