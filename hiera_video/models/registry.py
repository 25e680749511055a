"""Named model constructors: `create_model("hiera_base_16x224", num_classes=174)` or `hiera_base_16x224(...)`.

Every released model is a function named after it (hiera.py, mae.py), registered with `@register_model(cls,
**defaults)`: the model class plus its default hyper-parameters. Any hyper-parameter the class accepts can be
overridden by keyword, so tiny test/demo models come from the same code as the full ones.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
from typing import Any, Callable, TypeVar

from torch import nn

from hiera_video.models.pretrained import pretrained_weights

logger = logging.getLogger(__name__)

Constructor = TypeVar("Constructor", bound=Callable[..., nn.Module])


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class and default keyword arguments."""

    name: str
    cls: type[nn.Module]
    defaults: dict[str, Any]


_MODELS: dict[str, ModelSpec] = {}


def register_model(cls: type[nn.Module], **defaults: Any) -> Callable[[Constructor], Constructor]:
    """Decorator registering a constructor under its function name as `cls(**defaults, **overrides)`.

    Names are unique; every default must be a keyword `cls` accepts. The function itself stays as written (it
    calls create_model with its own name).
    """
    unknown = set(defaults) - accepted_keywords(cls)

    def register(constructor: Constructor) -> Constructor:
        name = constructor.__name__
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        if unknown:
            raise TypeError(f"{name}: {cls.__name__} does not accept {sorted(unknown)}")
        _MODELS[name] = ModelSpec(name, cls, dict(defaults))
        return constructor

    return register


def constructor_parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    """The keyword parameters of cls.__init__, following `**kwargs` up the class hierarchy (the first class that
    declares a name gives its default)."""
    parameters: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is nn.Module:
            continue
        params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                parameters.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return parameters


def accepted_keywords(cls: type[nn.Module]) -> set[str]:
    """Keyword arguments accepted by cls.__init__, following `**kwargs` up the class hierarchy."""
    return set(constructor_parameters(cls))


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered spec of `name`; KeyError with close matches when unknown."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f"; did you mean {close}?" if close else f"; available: {list_models()}"
        raise KeyError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def create_model(name: str, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build the registered model `name`, with keyword overrides of any hyper-parameter.

    `pretrained`: True loads the model's default official weights, a string one of its official checkpoints
    (`"mae_k400"`), a path or any MODEL:CHECKPOINT name (downloaded once into the torch hub cache; see
    pretrained.py). Loading goes through weights.load_pretrained, so a head of another `num_classes` starts fresh.
    An override the model does not accept raises TypeError naming it (and the closest valid names).
    """
    spec = model_spec(name)
    valid = accepted_keywords(spec.cls)
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {close}?" if close else f"; valid: {sorted(valid)}"
            raise TypeError(f"{name}: unknown override {key!r}{hint}")
    model = spec.cls(**{**spec.defaults, **overrides})
    if pretrained is not False:
        from hiera_video.models.weights import load_pretrained  # here: weights.py imports hiera.py, which imports us

        path = pretrained_weights(name, pretrained)
        logger.info("%s: weights from %s: %s", name, path, load_pretrained(model, path).summary())
    return model
