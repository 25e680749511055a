"""Kinetics-400/600/700, and any dataset in the same format: `{train,val,test}.csv` with `path label` lines."""
from __future__ import annotations

import os

import numpy as np
import torch
from fvcore.common.config import CfgNode
from iopath.common.file_io import g_pathmgr

from hiera_video.data import sampling, transforms
from hiera_video.data.clip_dataset import ClipDataset, ClipTransform, VideoRecord, ViewPlanner
from hiera_video.data.subset import class_balanced_indices, log_subset
from hiera_video.data.video_io import VideoReader, resolve_decoding


def read_video_list(csv_path: str, path_prefix: str, separator: str, num_classes: int) -> list[VideoRecord]:
    """Parses a PySlowFast-format list (`path<sep>label` per line, no header); errors name the file and line."""
    if not g_pathmgr.exists(csv_path):
        raise FileNotFoundError(f"Video list not found: {csv_path}")
    records = []
    with g_pathmgr.open(csv_path, "r") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(separator, 1) if separator.strip() else line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit():
                raise ValueError(f"{csv_path}:{line_number}: expected 'path{separator}label' with an integer "
                                 f"label, got {line!r}")
            path, label = parts[0].strip(), int(parts[1])
            if not 0 <= label < num_classes:
                raise ValueError(f"{csv_path}:{line_number}: label {label} is outside [0, MODEL.NUM_CLASSES="
                                 f"{num_classes})")
            full_path = os.path.join(path_prefix, path) if path_prefix else path
            records.append(VideoRecord(full_path, label, path))
    if not records:
        raise ValueError(f"Video list {csv_path} is empty")
    return records


def clip_planner(cfg: CfgNode, split: str, num_train_clips: int):
    """Frame indices per view: random clips (train), the centre clip (val), uniform views (test)."""
    args = dict(num_frames=cfg.DATA.NUM_FRAMES, sampling_rate=cfg.DATA.SAMPLING_RATE, target_fps=cfg.DATA.TARGET_FPS)

    def plan(reader: VideoReader, rng: np.random.Generator) -> list[np.ndarray]:
        common = dict(video_len=reader.num_frames, video_fps=reader.fps, **args)
        if split == "train":
            return [sampling.random_clip_indices(rng=rng, **common) for _ in range(num_train_clips)]
        if split == "val":
            return [sampling.center_clip_indices(**common)]
        return sampling.uniform_view_indices(num_views=cfg.TEST.NUM_ENSEMBLE_VIEWS, **common)

    return plan


def clip_transform(cfg: CfgNode, split: str, allow_flip: bool = True):
    """uint8 frames [T,H,W,3] -> clips [K,C,T,H,W]: one augmented clip (train), one centre crop (val), or
    TEST.NUM_SPATIAL_CROPS crops (test)."""
    if split == "train":
        relative = list(cfg.DATA.TRAIN_JITTER_SCALES_RELATIVE)
        train = transforms.build_train_transform(
            crop_size=cfg.DATA.TRAIN_CROP_SIZE,
            scale=tuple(relative) if relative else None,
            aspect=tuple(cfg.DATA.TRAIN_JITTER_ASPECT_RELATIVE),
            jitter_scales=None if relative else tuple(cfg.DATA.TRAIN_JITTER_SCALES),
            flip=cfg.DATA.RANDOM_FLIP and allow_flip,
            rand_augment=(cfg.AUG.RAND_AUG_NUM_OPS, cfg.AUG.RAND_AUG_MAGNITUDE) if cfg.AUG.ENABLE else None,
            rand_augment_std=cfg.AUG.RAND_AUG_MAGNITUDE_STD,
            random_erasing_prob=cfg.AUG.RE_PROB if cfg.AUG.ENABLE else 0.0,
            mean=tuple(cfg.DATA.MEAN),
            std=tuple(cfg.DATA.STD),
        )
        return lambda frames: train(frames).unsqueeze(0)
    if split == "val":
        center = transforms.build_eval_transform(cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE,
                                                 tuple(cfg.DATA.MEAN), tuple(cfg.DATA.STD))
        return lambda frames: center(frames).unsqueeze(0)
    mean, std = tuple(cfg.DATA.MEAN), tuple(cfg.DATA.STD)
    return lambda frames: torch.stack([
        transforms.normalize(crop, mean, std)
        for crop in transforms.spatial_crops(frames, cfg.DATA.TEST_CROP_SIZE, cfg.TEST.NUM_SPATIAL_CROPS)])


def kinetics_views(cfg: CfgNode, split: str) -> tuple[ViewPlanner, ClipTransform]:
    """How the `split` turns one video into its clips: the frame indices of each view and their transform."""
    num_clips = cfg.AUG.NUM_SAMPLE if split == "train" else 1
    return clip_planner(cfg, split, num_clips), clip_transform(cfg, split)


def build_kinetics(cfg: CfgNode, split: str) -> ClipDataset:
    """The `split` ("train", "val" or "test") of a Kinetics-format dataset."""
    csv_path = os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{split}.csv")
    records = read_video_list(csv_path, cfg.DATA.PATH_PREFIX, cfg.DATA.PATH_LABEL_SEPARATOR, cfg.MODEL.NUM_CLASSES)
    if split == "train" and cfg.DATA.TRAIN_FRACTION < 1.0:
        kept = class_balanced_indices([r.label for r in records], cfg.DATA.TRAIN_FRACTION, cfg.RNG_SEED)
        log_subset(csv_path, len(records), len(kept), cfg.DATA.TRAIN_FRACTION, cfg.RNG_SEED)
        records = [records[i] for i in kept]
    backend, device = resolve_decoding(cfg.DATA.DECODING_BACKEND, cfg.DATA.DECODE_DEVICE)
    return ClipDataset(records, *kinetics_views(cfg, split), backend=backend, replace_randomly=split == "train",
                       name=csv_path, device=device)
