"""Model size and cost with fvcore: parameters, GMACs (fvcore "flops" are multiply-accumulates) and activations.

fvcore has no handle for `aten::scaled_dot_product_attention`; `sdpa_macs` adds it (q @ k^T and attn @ v; the
softmax is not counted, like every other elementwise op in fvcore).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore.nn scripts its focal loss at import, which torch >= 2.9 reports as deprecated; not our concern here.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

SDPA_OP = "aten::scaled_dot_product_attention"
# LayerNorm is elementwise work, not multiply-accumulates; leaving it out reproduces the paper's split for
# Hiera-B 16x224 (conv 1.1 + linear 70.1 + attention 30.6 = 101.7 GMACs). fvcore would add 0.2.
NOT_MACS = ("aten::layer_norm",)


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: MACs of SDPA with q [..., L, E], k [..., S, E], v [..., S, Ev] = batch * L * S * (E + Ev)."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = math.prod(q_shape[:-2])
    return batch * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def sdpa_activations(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore activation handle for SDPA: the elements of its output."""
    return math.prod(get_shape(outputs[0]))


def _not_counted(inputs: list[Any], outputs: list[Any]) -> int:
    return 0


class _BoundCall(nn.Module):
    """Traces `model.<method>(x, **kwargs)` (jit tracing only passes tensors)."""

    def __init__(self, model: nn.Module, method: str, kwargs: dict[str, Any]):
        super().__init__()
        self.model = model
        self.method = method
        self.kwargs = kwargs

    def forward(self, x: torch.Tensor) -> Any:
        return getattr(self.model, self.method)(x, **self.kwargs)


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(*input_shape, generator=generator, dtype=param.dtype).to(param.device)


@contextlib.contextmanager
def _analysis(analysis_cls, handle, model: nn.Module, input_shape: Sequence[int], method: str,
              kwargs: dict[str, Any]) -> Iterator[Any]:
    """An fvcore analysis of one call in eval mode without gradients or warnings; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = analysis_cls(_BoundCall(model, method, kwargs), (_example_input(model, input_shape),))
            analysis.set_op_handle(SDPA_OP, handle)
            for op in NOT_MACS:
                # A handle of None would not remove fvcore's default handle (fvcore 0.1.5), so count zero instead.
                analysis.set_op_handle(op, _not_counted)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
            yield analysis
    finally:
        model.train(was_training)


def count_params(model: nn.Module) -> int:
    """Number of parameter values (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())


def gmacs_by_operator(
    model: nn.Module, input_shape: Sequence[int], method: str = "forward", **method_kwargs: Any
) -> dict[str, float]:
    """GMACs of one call `model.<method>(x, **method_kwargs)` with x of `input_shape`, per operator type."""
    with _analysis(FlopCountAnalysis, sdpa_macs, model, input_shape, method, method_kwargs) as analysis:
        return {op: count / 1e9 for op, count in analysis.by_operator().items() if count}


def count_gmacs(model: nn.Module, input_shape: Sequence[int], method: str = "forward", **method_kwargs: Any) -> float:
    """Total GMACs (fvcore GFLOPs) of one call, e.g. `count_gmacs(model, (1, 3, 16, 224, 224))`."""
    return sum(gmacs_by_operator(model, input_shape, method, **method_kwargs).values())


def count_mactivations(
    model: nn.Module, input_shape: Sequence[int], method: str = "forward", **method_kwargs: Any
) -> float:
    """Millions of activations (outputs of conv/linear/matmul/attention ops, fvcore's definition) of one call."""
    with _analysis(ActivationCountAnalysis, sdpa_activations, model, input_shape, method, method_kwargs) as analysis:
        return analysis.total() / 1e6
