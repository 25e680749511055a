"""Configuration: defaults, YAML files with `_BASE_` inheritance, and command-line overrides, all validated.

Keys that name a registered thing (TASK, the datasets, backends, targets, layouts, ...) take the values their owner
registers with `register_choices`: the module that reads the key, above this layer, hands over its registry (the
live collection, so a later `register_dataset` or `register_task` counts too). load_config checks every key whose
owner is imported, which the command-line tools import before loading a config; the owners check again at build
time with the same message (`check_choice`).
"""
from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import yaml
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr

from hiera_video.config.defaults import get_defaults

__all__ = ["CfgNode", "ConfigError", "check_choice", "get_cfg", "load_config", "register_choices"]


class ConfigError(ValueError):
    """A configuration file or override that does not fit the declared keys."""


# Config key -> its allowed values (a registry's live keys or a tuple), from the module that reads the key.
_CHOICES: dict[str, Collection[str]] = {}


def register_choices(key: str, allowed: Collection[str]) -> None:
    """Declares the values of config key `key` ("GROUP.LEAF"); `allowed` is read at every check."""
    _CHOICES[key] = allowed


def check_choice(key: str, value: Any) -> None:
    """Raises ConfigError naming `key` and its allowed values unless `value` is one of them."""
    allowed = _CHOICES[key]
    if value not in allowed:
        names = ", ".join(name if name else '""' for name in allowed)  # "" (off) must show
        raise ConfigError(f"{key} must be one of {names}; got {value!r}")


def get_cfg() -> CfgNode:
    """The default configuration (a fresh, mutable copy)."""
    return get_defaults()


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = prefix + name
        keys.append(full)
        if isinstance(value, CfgNode):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key_error(key: str, cfg: CfgNode, source: str) -> ConfigError:
    known = _all_keys(cfg)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not close:  # a mistyped leaf inside a right group: compare the last component within that group
        group, _, leaf = key.rpartition(".")
        siblings = [k for k in known if k.rpartition(".")[0] == group]
        close = [group + "." + c if group else c for c in difflib.get_close_matches(
            leaf, [s.rpartition(".")[2] for s in siblings], n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"Unknown config key '{key}' in {source}{hint}")


def _check_keys(loaded: dict, cfg: CfgNode, source: str, prefix: str = "") -> None:
    """Unknown keys fail with suggestions; whole numbers given for float keys become floats (`2` for 2.0)."""
    for name, value in loaded.items():
        full = prefix + name
        if name not in cfg:
            raise _unknown_key_error(full, get_defaults(), source)
        if isinstance(cfg[name], float) and isinstance(value, int) and not isinstance(value, bool):
            loaded[name] = float(value)
        if isinstance(cfg[name], CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key '{full}' in {source} is a group; got the value {value!r}")
            _check_keys(value, cfg[name], source, full + ".")


def _merge_file(cfg: CfgNode, path: str) -> None:
    if not g_pathmgr.isfile(path):
        raise ConfigError(f"Config file not found: {path}")
    with g_pathmgr.open(path, "r") as f:
        if yaml.safe_load(f) is None:  # an empty file changes nothing (fvcore cannot read one)
            return
    loaded = CfgNode.load_yaml_with_base(path, allow_unsafe=False)
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {path} does not hold a mapping of keys")
    _check_keys(loaded, cfg, path)
    try:
        cfg.merge_from_other_cfg(CfgNode(loaded))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _merge_opts(cfg: CfgNode, opts: Sequence[str]) -> None:
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd number of items: {list(opts)}")
    opts = list(opts)
    for i, key in enumerate(opts[0::2]):
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, CfgNode) or part not in node:
                raise _unknown_key_error(key, get_defaults(), "the command-line overrides")
            node = node[part]
        if isinstance(node, float) and str(opts[2 * i + 1]).lstrip("-").isdigit():
            opts[2 * i + 1] = str(float(opts[2 * i + 1]))  # `2` for a float key means 2.0
    try:
        cfg.merge_from_list(opts)
    except ValueError as exc:
        raise ConfigError(f"command-line overrides: {exc}") from exc


def load_config(paths: str | Iterable[str], opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then each YAML file in turn (with `_BASE_`), then KEY VALUE overrides; returns a frozen config.

    Raises ConfigError naming the file and the key for unknown keys (with the closest valid names) and for values
    of the wrong type.
    """
    cfg = get_cfg()
    for path in [paths] if isinstance(paths, str) else list(paths):
        _merge_file(cfg, path)
    _merge_opts(cfg, opts)
    _check_values(cfg)
    cfg.freeze()
    return cfg


def _check_values(cfg: CfgNode) -> None:
    for key in _CHOICES:
        group, _, leaf = key.rpartition(".")
        check_choice(key, (cfg[group] if group else cfg)[leaf])
    positive = ["TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "DATA.NUM_FRAMES", "DATA.SAMPLING_RATE",
                "TRAIN.ACCUM_ITER", "AUG.NUM_SAMPLE", "NUM_SHARDS", "NUM_CPU_PROCS"]
    for key in positive:
        group, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        value = (cfg[group] if group else cfg)[leaf]
        if value < 1:
            raise ConfigError(f"{key} must be at least 1; got {value}")
    if not 0.0 <= cfg.MODEL_EMA.DECAY < 1.0:
        raise ConfigError(f"MODEL_EMA.DECAY must be in [0, 1); got {cfg.MODEL_EMA.DECAY}")
    if cfg.MODEL_EMA.WARMUP_STEPS < 0:
        raise ConfigError(f"MODEL_EMA.WARMUP_STEPS must be >= 0; got {cfg.MODEL_EMA.WARMUP_STEPS}")
    if not 0.0 <= cfg.MAE.MASK_RATIO < 1.0:
        raise ConfigError(f"MAE.MASK_RATIO must be in [0, 1); got {cfg.MAE.MASK_RATIO}")
    if cfg.TRAIN.ENABLE and not 0 <= cfg.SOLVER.WARMUP_EPOCHS < cfg.SOLVER.MAX_EPOCH:
        raise ConfigError(f"SOLVER.WARMUP_EPOCHS ({cfg.SOLVER.WARMUP_EPOCHS}) must be in [0, SOLVER.MAX_EPOCH "
                          f"({cfg.SOLVER.MAX_EPOCH}))")
    if (cfg.TASK == "mae") != cfg.MODEL.ARCH.startswith("mae_"):
        raise ConfigError(f"TASK {cfg.TASK} does not fit MODEL.ARCH {cfg.MODEL.ARCH}: MAE pretraining uses the "
                          f"mae_* models, the other tasks the plain ones")
    if not 0 <= cfg.SHARD_ID < cfg.NUM_SHARDS:
        raise ConfigError(f"SHARD_ID must be in [0, NUM_SHARDS={cfg.NUM_SHARDS}); got {cfg.SHARD_ID}")
