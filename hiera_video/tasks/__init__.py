"""Tasks by name (the TASK config key)."""
from __future__ import annotations

from fvcore.common.config import CfgNode

from hiera_video.utils.distributed import DistContext
from hiera_video.tasks.base import Task
from hiera_video.tasks.classification import ClassificationTask
from hiera_video.tasks.detection import DetectionTask
from hiera_video.tasks.mae import MaeTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "mae": MaeTask,
                                 "detection": DetectionTask}


def build_task(cfg: CfgNode, ctx: DistContext) -> Task:
    """The task named by cfg.TASK."""
    if cfg.TASK not in TASKS:
        raise KeyError(f"TASK {cfg.TASK!r} is not available; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[cfg.TASK](cfg, ctx)
