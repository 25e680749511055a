"""The class names of a config, in label order: what predictions, result files and analyses show next to indices.

In order of precedence:
1. MODEL.CLASS_NAMES: a shipped list (kinetics400, kinetics600, kinetics700) or a file with one name per line;
2. the names of the test dataset (TEST.DATASET), when its file exists: the SSv2 labels json, the AVA label map
   (AVA.LABEL_MAP_FILE; ids missing from it are named by their id), or for Kinetics-format data
   DATA.PATH_TO_DATA_DIR/classes.txt (as `tools/prepare_data.py csv` and the demo dataset write it);
3. none: callers show the class indices.
"""
from __future__ import annotations

import os

from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr

from hiera_video.config import ConfigError
from hiera_video.data.class_names import CLASSES_FILE, read_class_names, shipped_class_names, shipped_lists
from hiera_video.data.ssv2 import LABELS_FILE, class_names_by_id, read_label_map
from hiera_video.evaluation.ava.readers import read_labelmap


def _configured(value: str) -> tuple[list[str], str]:
    shipped = shipped_lists()
    if value in shipped:
        return shipped_class_names(value), f"MODEL.CLASS_NAMES {value} (a shipped list)"
    if g_pathmgr.isfile(value):
        return read_class_names(value), f"MODEL.CLASS_NAMES file {value}"
    raise ConfigError(f"MODEL.CLASS_NAMES {value!r} is neither a file nor a shipped list ({', '.join(shipped)})")


def _ava_names(path: str, num_classes: int) -> list[str]:
    """Output i is action id i + 1; ids missing from the label map are named by their id."""
    labelmap, ids = read_labelmap(path)
    if max(ids) > num_classes:
        raise ConfigError(f"{path} names action ids up to {max(ids)} but MODEL.NUM_CLASSES is {num_classes}")
    by_id = {entry["id"]: entry["name"] for entry in labelmap}
    return [by_id.get(index + 1, str(index + 1)) for index in range(num_classes)]


def _from_dataset(cfg: CfgNode) -> tuple[list[str], str] | None:
    """The test dataset's own names, when its file is there."""
    if cfg.TEST.DATASET == "ssv2":
        path = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, LABELS_FILE)
        exists = g_pathmgr.isfile(path)
        return (class_names_by_id(read_label_map(path, cfg.MODEL.NUM_CLASSES)), path) if exists else None
    if cfg.TEST.DATASET == "ava":
        path = os.path.join(cfg.AVA.ANNOTATION_DIR, cfg.AVA.LABEL_MAP_FILE)
        return (_ava_names(path, cfg.MODEL.NUM_CLASSES), path) if g_pathmgr.isfile(path) else None
    path = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, CLASSES_FILE)
    return (read_class_names(path), path) if g_pathmgr.isfile(path) else None


def class_names(cfg: CfgNode) -> list[str] | None:
    """MODEL.NUM_CLASSES names in label order, or None when neither the config nor the dataset names the classes.

    A list of another length fails, naming where it came from and both numbers.
    """
    value = cfg.MODEL.CLASS_NAMES.strip()
    found = _configured(value) if value else _from_dataset(cfg)
    if found is None:
        return None
    names, source = found
    if len(names) != cfg.MODEL.NUM_CLASSES:
        raise ConfigError(f"{source} lists {len(names)} class names but MODEL.NUM_CLASSES is "
                          f"{cfg.MODEL.NUM_CLASSES}; set MODEL.CLASS_NAMES to a list of {cfg.MODEL.NUM_CLASSES} names")
    return names
