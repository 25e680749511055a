"""Predict the classes of any video file with a trained classifier, scored exactly as the multi-view test scores a
test video.

The clips come from the test split's own planner and transform (data.build.video_views, the functions the test
dataset is built from) through clip_dataset.decode_clips; the per-view scores from tasks.classification.view_scores;
the ensemble from evaluation.MultiViewAggregator. Nothing here re-implements a step of the evaluation, so a
prediction cannot drift from what `tools/run_net.py` reports for the same video.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fvcore.common.config import CfgNode

from hiera_video.config import load_config
from hiera_video.data.build import video_views
from hiera_video.data.clip_dataset import decode_clips
from hiera_video.data.video_io import open_video, resolve_decoding
from hiera_video.data.windows import Window, sliding_windows, window_clips
from hiera_video.evaluation.classification import MultiViewAggregator
from hiera_video.models.build import build_model
from hiera_video.models.registry import model_spec
from hiera_video.models.weights import EMA_STATE_KEY, LoadReport, load_pretrained, load_state_file
from hiera_video.tasks.class_names import class_names as config_class_names
from hiera_video.tasks.classification import view_scores
from hiera_video.utils.amp import amp_context

logger = logging.getLogger(__name__)

# The official Hiera evaluation (paper Sec. 4, Tab. 4): 5 temporal x 3 spatial views, for models given by name.
OFFICIAL_TEST_VIEWS = ("TEST.NUM_ENSEMBLE_VIEWS", "5", "TEST.NUM_SPATIAL_CROPS", "3")


@dataclass(frozen=True)
class ClassScore:
    """One class of a prediction: its index, name and score (mean probability over the views)."""

    label: int
    name: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """Class scores [num_classes] of a video, or of the window [start, end) seconds of it."""

    path: str
    start: float
    end: float
    scores: np.ndarray
    class_names: Sequence[str]

    def top_k(self, k: int = 5) -> list[ClassScore]:
        """The `k` best classes, best first."""
        order = np.argsort(-self.scores, kind="stable")[: max(0, k)]
        return [ClassScore(int(i), self.class_names[i], float(self.scores[i])) for i in order]


def index_names(num_classes: int) -> list[str]:
    """Class names when none are known: the indices."""
    return [str(i) for i in range(num_classes)]


def _check_complete(report: LoadReport, weights_name: str, cfg: CfgNode, state: Mapping[str, Any]) -> None:
    """Prediction needs every weight of the classifier: refuse files that leave any part at its random init."""
    if report.reinitialised:
        head = state.get("head.projection.weight")
        found = f"{head.shape[0]} classes" if head is not None else "another head shape"
        raise ValueError(f"{weights_name}: its classifier head has {found} but MODEL.NUM_CLASSES is "
                         f"{cfg.MODEL.NUM_CLASSES}; set MODEL.NUM_CLASSES to match the weights")
    if report.new_keys:
        raise ValueError(f"{weights_name} does not hold a complete {cfg.MODEL.ARCH} classifier: "
                         f"{len(report.new_keys)} tensors missing, e.g. {', '.join(report.new_keys[:4])} "
                         f"(pretraining weights have no classifier head; fine-tune them first)")


class Predictor:
    """A classifier ready to score video files: `Predictor(cfg, weights).predict("clip.mp4").top_k(5)`.

    `cfg` is a loaded config (TASK classification; TEST.DATASET picks the test views); `weights` a weights file
    (ours or an official one) or a state dict; None keeps the model as built (random weights, with a warning).
    `device` defaults to CUDA when available (autocast as TRAIN.MIXED_PRECISION says, as in the test loop), else
    the CPU. `batch_size` is clips per forward pass (default: the views of one video). `class_names` default to
    the config's (MODEL.CLASS_NAMES, else the dataset's), else the indices; `weights_name` names a state-dict
    `weights` in messages. A weights file may be an official name, MODEL:CHECKPOINT (models.pretrained). `ema`
    predicts with the checkpoint's weight EMA (MODEL_EMA; what the test loop reports as ema_*) instead.
    """

    def __init__(self, cfg: CfgNode, weights: str | os.PathLike | Mapping[str, Any] | None = None,
                 device: str | torch.device | None = None, batch_size: int | None = None,
                 class_names: Sequence[str] | None = None, weights_name: str | None = None,
                 ema: bool = False) -> None:
        if cfg.TASK != "classification":
            raise ValueError(f"Predictor needs a classification config; got TASK {cfg.TASK}")
        self.cfg = cfg
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.plan_views, self.transform = video_views(cfg)
        self.backend, self.decode_device = resolve_decoding(cfg.DATA.DECODING_BACKEND, cfg.DATA.DECODE_DEVICE)
        self.num_views = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
        self.batch_size = batch_size or self.num_views
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = build_model(cfg)
        self.weights = self._load(weights, weights_name, ema)
        self.model.to(self.device).eval()
        if class_names is None:
            class_names = config_class_names(cfg) or index_names(cfg.MODEL.NUM_CLASSES)
        self.class_names = list(class_names)
        if len(self.class_names) != cfg.MODEL.NUM_CLASSES:
            raise ValueError(f"{len(self.class_names)} class names for MODEL.NUM_CLASSES {cfg.MODEL.NUM_CLASSES}")

    def _load(self, weights: str | os.PathLike | Mapping[str, Any] | None, name: str | None, ema: bool) -> str:
        if weights is None:
            if ema:
                raise ValueError("ema=True needs weights: a checkpoint holding EMA weights")
            logger.warning("Predictor without weights: the model keeps its random initialisation")
            return ""
        if name is None:
            name = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "the given state dict"
        state = load_state_file(weights) if isinstance(weights, (str, os.PathLike)) else weights
        if ema:
            if EMA_STATE_KEY not in state:
                raise ValueError(f"{name} holds no EMA weights ({EMA_STATE_KEY}); train with MODEL_EMA.ENABLE True, "
                                 f"or predict with the weights themselves (without ema/--ema)")
            state, name = state[EMA_STATE_KEY], f"the EMA weights of {name}"
        elif EMA_STATE_KEY in state:
            logger.info("%s also holds EMA weights; ema=True (tools/predict.py --ema) predicts with them", name)
        report = load_pretrained(self.model, state)
        model_state = state.get("model_state", state)
        _check_complete(report, name, self.cfg, model_state)
        logger.info("Predicting with %s: %s", name, report.summary())
        return name

    @classmethod
    def from_config(cls, cfg_file: str, weights: str | os.PathLike | Mapping[str, Any] | None = None,
                    opts: Sequence[str] = (), **kwargs: Any) -> Predictor:
        """The config file `cfg_file` with KEY VALUE `opts` (as tools/run_net.py reads them)."""
        return cls(load_config(cfg_file, opts), weights, **kwargs)

    @classmethod
    def from_model(cls, name: str, weights: str | os.PathLike | Mapping[str, Any] | None = None,
                   opts: Sequence[str] = (), **kwargs: Any) -> Predictor:
        """A released video model by name (`hiera_base_16x224`) with the default config's Kinetics sampling and
        normalisation, its input size, the official 5x3-view test, and as many classes as the weights' head has;
        `opts` (KEY VALUE) override any of it."""
        input_size = model_spec(name).defaults.get("input_size", ())
        if len(input_size) != 3:
            raise ValueError(f"{name} is not a video classifier (input size {input_size}); choose one of the "
                             f"*_16x224 models")
        num_frames, size, _ = input_size
        derived = ["MODEL.ARCH", name, "DATA.NUM_FRAMES", str(num_frames), "DATA.TRAIN_CROP_SIZE", str(size),
                   "DATA.TEST_CROP_SIZE", str(size), *OFFICIAL_TEST_VIEWS]
        state = load_state_file(weights) if isinstance(weights, (str, os.PathLike)) else weights
        head = None if state is None else state.get("model_state", state).get("head.projection.weight")
        if head is not None:
            derived += ["MODEL.NUM_CLASSES", str(head.shape[0])]
        weights_name = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else None
        return cls(load_config([], [*derived, *opts]), state, weights_name=weights_name, **kwargs)

    # ------------------------------------------------------------------------------------------------ scoring
    def _ensemble(self, clip_groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-group class scores [G, C] of G groups of clips (the views of a video or window), ensembled as the
        test ensembles a video's views, in forward passes of at most `batch_size` clips."""
        counts = torch.tensor([len(group) for group in clip_groups])
        clips = torch.cat(list(clip_groups))
        group_index = torch.repeat_interleave(torch.arange(len(clip_groups)), counts)
        view_index = torch.cat([torch.arange(int(n)) for n in counts])
        aggregator = MultiViewAggregator(len(clip_groups), self.cfg.MODEL.NUM_CLASSES,
                                         ensemble=self.cfg.TEST.ENSEMBLE_METHOD)
        with torch.no_grad():
            for start in range(0, len(clips), self.batch_size):
                part = slice(start, start + self.batch_size)
                scores = view_scores(self.model, clips[part], self.device, amp_context(self.cfg, self.device))
                aggregator.update(scores, group_index[part], view_index[part])
        groups, scores = aggregator.video_scores()
        assert len(groups) == len(clip_groups)  # every group has views
        return scores

    def predict(self, path: str) -> Prediction:
        """Class scores of the video file (or frame folder) `path`: the test views, decoded in one pass, scored and
        ensembled as the test does. Raises data.video_io.VideoDecodeError when it cannot be decoded."""
        with open_video(path, backend=self.backend, device=self.decode_device) as reader:
            clips = decode_clips(reader, self.plan_views, self.transform, np.random.default_rng(0))
            duration = reader.duration
        scores = self._ensemble([clips])[0].numpy()
        return Prediction(os.fspath(path), 0.0, duration, scores, self.class_names)

    def predict_windows(self, path: str, window: float, stride: float) -> Iterator[Prediction]:
        """Predictions of consecutive windows of `window` seconds every `stride` seconds (data.windows), each
        scored like a whole test video, yielded in order as they are computed.

        Streaming: only the frames of the windows in flight are held, and the video is read forward once with PyAV
        whatever DATA.DECODING_BACKEND says: the random-access decoders seek for every window, and decord's memory
        grew with the length of the video when the overlay's decoder ran in the same process (PyAV's stayed flat).
        The decoders give the same frames for common H.264 video."""
        with open_video(path, backend="pyav") as reader:
            windows = sliding_windows(reader.num_frames, reader.fps, window, stride)
            pending: list[tuple[Window, torch.Tensor]] = []
            for item in window_clips(reader, windows, self.plan_views, self.transform, np.random.default_rng(0)):
                pending.append(item)
                if sum(len(clips) for _, clips in pending) >= self.batch_size:
                    yield from self._window_predictions(path, pending)
                    pending = []
            if pending:
                yield from self._window_predictions(path, pending)

    def _window_predictions(self, path: str, pending: list[tuple[Window, torch.Tensor]]) -> Iterator[Prediction]:
        scores = self._ensemble([clips for _, clips in pending]).numpy()
        for (window, _), row in zip(pending, scores):
            yield Prediction(os.fspath(path), window.start, window.end, row, self.class_names)
