"""Datasets by name, and the train / evaluation loaders built from the config for this process."""
from __future__ import annotations

from typing import Callable

from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, Dataset

from hiera_video.config import check_choice, register_choices
from hiera_video.data.ava import build_ava
from hiera_video.data.clip_dataset import ClipTransform, ViewPlanner
from hiera_video.data.kinetics import build_kinetics, kinetics_views
from hiera_video.data.loader import MP_CONTEXTS, ResumableSampler, build_loader, collate_samples
from hiera_video.data.ssv2 import build_ssv2, ssv2_views
from hiera_video.data.video_io import BACKEND_CHOICES, DECODE_DEVICES, DECODER_LOG_LEVELS
from hiera_video.utils.distributed import DistContext

# Dataset name (TRAIN.DATASET / TEST.DATASET) -> builder(cfg, split).
DATASETS: dict[str, Callable[[CfgNode, str], Dataset]] = {"kinetics": build_kinetics, "ssv2": build_ssv2,
                                                             "ava": build_ava}
# Dataset name -> views(cfg, split): how that dataset turns any one video into its clips (frame indices per view
# and their transform), which prediction on files outside the dataset uses. Datasets of whole-video labels have
# one; AVA (boxes at keyframes) has none.
ViewPipeline = Callable[[CfgNode, str], tuple[ViewPlanner, ClipTransform]]
VIDEO_VIEWS: dict[str, ViewPipeline] = {"kinetics": kinetics_views, "ssv2": ssv2_views}
register_choices("TRAIN.DATASET", DATASETS)
register_choices("TEST.DATASET", DATASETS)
register_choices("DATA.DECODING_BACKEND", BACKEND_CHOICES)
register_choices("DATA.DECODE_DEVICE", DECODE_DEVICES)
register_choices("DATA.DECODER_LOG_LEVEL", DECODER_LOG_LEVELS)
register_choices("DATA_LOADER.MP_CONTEXT", MP_CONTEXTS)


def register_dataset(name: str, builder: Callable[[CfgNode, str], Dataset], views: ViewPipeline | None = None) -> None:
    """Makes `builder(cfg, split)` available as TRAIN.DATASET / TEST.DATASET `name`; `views(cfg, split)` (the
    planner and transform its builder uses) lets hiera_video.inference predict on any video the same way."""
    DATASETS[name] = builder
    if views is not None:
        VIDEO_VIEWS[name] = views


def video_views(cfg: CfgNode) -> tuple[ViewPlanner, ClipTransform]:
    """The multi-view test of TEST.DATASET for one video: its views' frame indices and their transform."""
    check_choice("TEST.DATASET", cfg.TEST.DATASET)
    if cfg.TEST.DATASET not in VIDEO_VIEWS:
        raise ValueError(f"TEST.DATASET {cfg.TEST.DATASET} has no per-video test views (datasets with them: "
                         f"{', '.join(VIDEO_VIEWS)}); prediction on video files needs a classification dataset")
    return VIDEO_VIEWS[cfg.TEST.DATASET](cfg, "test")


def build_dataset(cfg: CfgNode, split: str) -> Dataset:
    """The `split` of the dataset named by TRAIN.DATASET (train, val) or TEST.DATASET (test)."""
    key = "TEST.DATASET" if split == "test" else "TRAIN.DATASET"
    name = cfg.TEST.DATASET if split == "test" else cfg.TRAIN.DATASET
    check_choice(key, name)
    return DATASETS[name](cfg, split)


def dataset_collate(dataset: Dataset) -> Callable:
    """The dataset's own `collate` (e.g. AVA's boxes) when it has one, else collate_samples."""
    return getattr(dataset, "collate", collate_samples)


def per_process_batch(global_batch: int, world_size: int, accum_iter: int, key: str) -> int:
    """Splits a global batch over processes and accumulation steps; errors say what to change."""
    parts = world_size * accum_iter
    if global_batch % parts:
        example = max(parts, global_batch - global_batch % parts)
        raise ValueError(f"{key}={global_batch} is not divisible by {world_size} processes x TRAIN.ACCUM_ITER="
                         f"{accum_iter}: use a multiple of {parts}, e.g. {example}")
    return global_batch // parts


def build_train_loader(cfg: CfgNode, ctx: DistContext) -> tuple[DataLoader, ResumableSampler]:
    """Shuffled, padded, resumable loader of the training split; batches are micro-batches."""
    dataset = build_dataset(cfg, "train")
    batch = per_process_batch(cfg.TRAIN.BATCH_SIZE, ctx.world_size, cfg.TRAIN.ACCUM_ITER, "TRAIN.BATCH_SIZE")
    sampler = ResumableSampler(len(dataset), ctx.rank, ctx.world_size, shuffle=True, seed=cfg.RNG_SEED)
    loader = build_loader(dataset, sampler, batch, cfg.DATA_LOADER.NUM_WORKERS, cfg.DATA_LOADER.PIN_MEMORY,
                          drop_last=True, collate_fn=dataset_collate(dataset), mp_context=cfg.DATA_LOADER.MP_CONTEXT)
    if len(loader) == 0:
        raise ValueError(f"The training split has {len(dataset)} videos, fewer than one batch per process "
                         f"({batch} x {ctx.world_size} processes): lower TRAIN.BATCH_SIZE")
    return loader, sampler


def build_eval_loader(cfg: CfgNode, ctx: DistContext, split: str) -> DataLoader:
    """In-order loader of `split` ("val" or "test"), sharded without padding so no video is counted twice."""
    dataset = build_dataset(cfg, split)
    batch = max(1, cfg.TEST.BATCH_SIZE // ctx.world_size)
    sampler = ResumableSampler(len(dataset), ctx.rank, ctx.world_size, shuffle=False, seed=cfg.RNG_SEED, pad=False)
    return build_loader(dataset, sampler, batch, cfg.DATA_LOADER.NUM_WORKERS, cfg.DATA_LOADER.PIN_MEMORY,
                        drop_last=False, collate_fn=dataset_collate(dataset), mp_context=cfg.DATA_LOADER.MP_CONTEXT)
