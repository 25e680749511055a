"""Tasks by name (the TASK config key): register a new one with `register_task`."""
from __future__ import annotations

from fvcore.common.config import CfgNode

from hiera_video.config import check_choice, register_choices
from hiera_video.tasks.base import Task
from hiera_video.tasks.classification import ClassificationTask
from hiera_video.tasks.detection import DetectionTask
from hiera_video.tasks.mae import MaeTask
from hiera_video.utils.distributed import DistContext

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "mae": MaeTask,
                                 "detection": DetectionTask}
register_choices("TASK", TASKS)


def register_task(name: str, task: type[Task]) -> None:
    """Makes `task` available as TASK `name`."""
    TASKS[name] = task


def build_task(cfg: CfgNode, ctx: DistContext) -> Task:
    """The task named by cfg.TASK."""
    check_choice("TASK", cfg.TASK)
    return TASKS[cfg.TASK](cfg, ctx)
