"""Features of many videos: one .npy per video (a row per window), resumable, sharded over processes.

Data-loader workers decode each video once (the test's views of every window: data.windows, read forward with
PyAV; or the whole video's test views with DATA.DECODING_BACKEND, as the test loop reads it) and hand over
chunks of windows; this process batches windows across videos into forward passes and writes a video's file as
soon as all its windows are done. Every file is written under a temporary name and renamed into place, so a
killed run loses at most the videos in flight; the index of finished videos grows one JSON line at a time in a
file per process (`.index/`), and `index.csv` is rebuilt from those lines whenever a process finishes. A rerun
skips the videos the index lists with their file present.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from fvcore.common.config import CfgNode
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hiera_video.data.build import video_views
from hiera_video.data.clip_dataset import decode_clips
from hiera_video.data.loader import start_method
from hiera_video.data.preparation.common import remove_stale_temporaries
from hiera_video.data.video_io import VideoDecodeError, open_video, resolve_decoding, set_decoder_log_level
from hiera_video.data.windows import Window, sliding_windows, window_clips
from hiera_video.inference.inputs import Failure, VideoInput
from hiera_video.models.build import build_model
from hiera_video.models.hiera import Hiera, HieraBackbone
from hiera_video.models.weights import load_pretrained, load_state_file
from hiera_video.utils.amp import amp_context
from hiera_video.utils.atomic import atomic_open
from hiera_video.utils.faults import hold_after
from hiera_video.utils.stop_signals import ignore_stop_signals, stop_signals_held

logger = logging.getLogger(__name__)

POOLS = ("mean", "none")
INDEX_FILE = "index.csv"
FAILED_FILE = "failed.csv"
HOLD_TIMEOUT_S = 600  # how long a process held by HIERA_VIDEO_FAULT=hold:<n> (tests only) waits for a signal
PARTS_FOLDER = ".index"  # one JSON-lines file per process: the videos it finished, and the ones that failed
INDEX_COLUMNS = ("video", "file", "windows", "start", "end", "shape")


def clip_features(model: HieraBackbone, clips: torch.Tensor, stage: int, pool: str) -> torch.Tensor:
    """Features of clips [N,C,T,H,W] at backbone `stage` (-1: the last): the stage's map [N,T',H',W',C'] (pool
    "none") or its mean over space and time [N,C'] (pool "mean"). The pooled last stage of a classifier is the
    input of its head (mean, then the final LayerNorm): the features before the prediction layer."""
    tokens, maps = model.forward_tokens(clips, return_intermediates=True)
    stage = range(len(maps))[stage]
    if pool == "none":
        return maps[stage]
    if stage == len(maps) - 1 and isinstance(model, Hiera):
        return model.norm(tokens.mean(dim=1))
    return maps[stage].mean(dim=(1, 2, 3))


def check_stage(model: HieraBackbone, stage: int, arch: str) -> int:
    """`stage` (negative: counted from the end) as an index into the model's stages; errors name the valid ones."""
    count = len(model.stage_ends)
    if not -count <= stage < count:
        raise ValueError(f"--stage {stage}: {arch} has stages 0..{count - 1} (or -1 for the last)")
    return stage % count


def load_feature_model(cfg: CfgNode, weights: str, stage: int, pool: str) -> HieraBackbone:
    """MODEL.ARCH (a classifier or an MAE) with `weights`, refusing weights that leave any tensor the features
    depend on at its random init (the stem, position embeddings, blocks, and the final norm of a classifier's pooled
    last stage)."""
    model = build_model(cfg)
    if not isinstance(model, HieraBackbone):
        raise ValueError(f"features come from a Hiera backbone; MODEL.ARCH {cfg.MODEL.ARCH} is not one")
    last = check_stage(model, stage, cfg.MODEL.ARCH) == len(model.stage_ends) - 1
    report = load_pretrained(model, load_state_file(weights))
    needed: tuple[str, ...] = ("patch_embed.", "pos_embed", "blocks.")
    if isinstance(model, Hiera) and pool == "mean" and last:
        needed += ("norm.",)
    missing = [key for key in report.new_keys if key.startswith(needed)]
    if missing:
        raise ValueError(f"{weights} lacks {len(missing)} tensors the features need, e.g. {', '.join(missing[:4])}"
                         f" (pretraining weights: use their MAE config, whose MODEL.ARCH is mae_*)")
    logger.info("Features from %s: %s", weights, report.summary())
    return model


@dataclass(frozen=True)
class Job:
    """One video to extract: its position in the shard, its input, and its output file relative to the output
    folder."""

    index: int
    video: VideoInput
    file: str


@dataclass
class Chunk:
    """Consecutive windows of one video with their clips [V,C,T,H,W] each; `done` on the video's last chunk;
    `error` when the video failed to decode (its earlier chunks are then void)."""

    job: int
    windows: list[Window]
    clips: list[torch.Tensor]
    done: bool
    error: str = ""


def output_file(relative: str) -> str:
    """The features file of a video, relative to the output folder: its relative path with `.npy`."""
    return os.path.splitext(relative)[0] + ".npy"


class WindowChunks(IterableDataset):
    """The clips of every window of `jobs`, in chunks of about `chunk_clips` clips. Each data-loader worker takes
    every n-th video and decodes it once."""

    def __init__(self, cfg: CfgNode, jobs: Sequence[Job], window: float | None, stride: float | None,
                 chunk_clips: int) -> None:
        self.cfg, self.jobs = cfg, list(jobs)
        self.backend, self.device = resolve_decoding(cfg.DATA.DECODING_BACKEND, cfg.DATA.DECODE_DEVICE)
        self.window, self.stride = window, stride
        self.chunk_clips = chunk_clips

    def __iter__(self) -> Iterator[Chunk]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan_views, transform = video_views(self.cfg)
        for job in self.jobs[worker::workers]:
            try:
                yield from self._chunks(job, plan_views, transform)
            except (VideoDecodeError, OSError) as error:
                yield Chunk(job.index, [], [], done=True, error=str(error))

    def _chunks(self, job: Job, plan_views, transform) -> Iterator[Chunk]:
        rng = np.random.default_rng(0)
        if self.window is None:  # the whole video, read as the test loop reads it
            with open_video(job.video.path, backend=self.backend, device=self.device) as reader:
                clips = decode_clips(reader, plan_views, transform, rng)
                whole = Window(0.0, reader.duration, 0, reader.num_frames)
            yield Chunk(job.index, [whole], [clips], done=True)
            return
        with open_video(job.video.path, backend="pyav") as reader:  # streamed forward, as Predictor's windows
            windows = sliding_windows(reader.num_frames, reader.fps, self.window, self.stride or self.window)
            chunk = Chunk(job.index, [], [], done=False)
            for window, clips in window_clips(reader, windows, plan_views, transform, rng):
                chunk.windows.append(window)
                chunk.clips.append(clips)
                if sum(len(c) for c in chunk.clips) >= self.chunk_clips:
                    yield chunk
                    chunk = Chunk(job.index, [], [], done=False)
            chunk.done = True
            yield chunk


def _worker_init(worker_id: int) -> None:
    ignore_stop_signals()
    torch.set_num_threads(1)  # the processes are the parallelism


def _as_is(chunk: Any) -> Any:
    return chunk


# ----------------------------------------------------------------------------------------------------- index
def _parts_folder(out_dir: str) -> str:
    return os.path.join(out_dir, PARTS_FOLDER)


def read_index_parts(out_dir: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The finished videos (video -> index row, the latest line wins) whose file exists, and the failed ones not
    finished since (video -> error), from every process's lines. A line cut by a kill does not parse: skipped."""
    rows: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    folder = _parts_folder(out_dir)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".jsonl")) if os.path.isdir(folder) else []
    for name in names:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "error" in entry:
                    failed[entry["video"]] = entry["error"]
                elif os.path.isfile(os.path.join(out_dir, entry["file"])):
                    rows[entry["video"]] = entry
    for video in rows:
        failed.pop(video, None)
    return rows, failed


def write_index(out_dir: str) -> tuple[int, int]:
    """Rebuild index.csv and failed.csv (sorted by video) from the index lines; returns their row counts. Processes
    finishing together take turns, so the one that finishes last writes every other's lines too."""
    os.makedirs(_parts_folder(out_dir), exist_ok=True)
    with FileLock(os.path.join(_parts_folder(out_dir), "write.lock")):
        rows, failed = read_index_parts(out_dir)
        _write_index_files(out_dir, rows, failed)
    return len(rows), len(failed)


def _write_index_files(out_dir: str, rows: dict[str, dict[str, Any]], failed: dict[str, str]) -> None:
    with atomic_open(os.path.join(out_dir, INDEX_FILE), "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for video in sorted(rows):
            row = rows[video]
            writer.writerow([video, row["file"], row["windows"], " ".join(f"{t:.3f}" for t in row["start"]),
                             " ".join(f"{t:.3f}" for t in row["end"]), "x".join(map(str, row["shape"]))])
    with atomic_open(os.path.join(out_dir, FAILED_FILE), "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["video", "error"])
        writer.writerows([video, failed[video]] for video in sorted(failed))


class IndexLog:
    """This process's index lines: appended and flushed to disk one by one, after the video's file is in place."""

    def __init__(self, out_dir: str, rank: int) -> None:
        os.makedirs(_parts_folder(out_dir), exist_ok=True)
        self.file = open(os.path.join(_parts_folder(out_dir), f"rank-{rank:05d}.jsonl"), "a", encoding="utf-8")

    def add(self, entry: dict[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------------------------------ extraction
@dataclass
class _Video:
    windows: list[Window] = field(default_factory=list)
    features: dict[int, np.ndarray] = field(default_factory=dict)
    complete: bool = False  # all windows received


@dataclass
class Summary:
    """What a run did with its shard."""

    extracted: int = 0
    failed: list[Failure] = field(default_factory=list)


def plan_jobs(videos: Sequence[VideoInput], out_dir: str, rank: int, world_size: int) -> tuple[list[Job], int]:
    """This process's share of `videos` (every world_size-th of them sorted by output file, from `rank`) without
    the videos already finished; and how many of its share were finished."""
    by_file: dict[str, VideoInput] = {}
    for video in videos:
        file = output_file(video.relative)
        if file in by_file:
            raise ValueError(f"{by_file[file].path} and {video.path} would both write {file}: rename one")
        by_file[file] = video
    done, _ = read_index_parts(out_dir)
    share = sorted(by_file)[rank::world_size]
    todo = [file for file in share if by_file[file].relative not in done]
    return [Job(i, by_file[file], file) for i, file in enumerate(todo)], len(share) - len(todo)


class FeatureExtractor:
    """Runs `model` over the windows of many videos and writes their features into `out_dir`."""

    def __init__(self, cfg: CfgNode, model: nn.Module, device: torch.device, stage: int, pool: str,
                 window: float | None, stride: float | None, batch_clips: int) -> None:
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if not isinstance(model, HieraBackbone):
            raise ValueError(f"features come from a Hiera backbone; MODEL.ARCH {cfg.MODEL.ARCH} is not one")
        check_stage(model, stage, cfg.MODEL.ARCH)
        self.cfg, self.model, self.device = cfg, model.to(device).eval(), device
        self.stage, self.pool = stage, pool
        self.window, self.stride = window, stride
        self.batch_clips = max(1, batch_clips)

    def _features(self, clips: list[torch.Tensor]) -> list[np.ndarray]:
        """Each window's features: the mean of its views' features."""
        counts = [len(c) for c in clips]
        with torch.no_grad(), amp_context(self.cfg, self.device):
            features = clip_features(self.model, torch.cat(clips).to(self.device), self.stage, self.pool)
        parts = features.float().cpu().split(counts)
        return [part.mean(dim=0).numpy() for part in parts]

    def run(self, jobs: Sequence[Job], out_dir: str, rank: int, num_workers: int, done_before: int = 0,
            progress: bool = True) -> Summary:
        """Extracts `jobs` (this process's share of the videos, less the `done_before` that earlier runs did)."""
        summary = Summary()
        if not jobs:
            return summary
        set_decoder_log_level(self.cfg.DATA.DECODER_LOG_LEVEL)
        views = self.cfg.TEST.NUM_ENSEMBLE_VIEWS * self.cfg.TEST.NUM_SPATIAL_CROPS
        dataset = WindowChunks(self.cfg, jobs, self.window, self.stride, chunk_clips=max(views, self.batch_clips))
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_as_is,
                            worker_init_fn=_worker_init,
                            multiprocessing_context=start_method(self.cfg.DATA_LOADER.MP_CONTEXT, num_workers))
        index = IndexLog(out_dir, rank)
        videos: dict[int, _Video] = {}
        pending: list[tuple[int, int, torch.Tensor]] = []  # (job, window position, clips) awaiting the model
        with stop_signals_held():  # workers start with them held until they ignore them, as the training loader's
            chunks = iter(loader)
        try:
            for chunk in chunks:
                job = jobs[chunk.job]
                if chunk.error:
                    videos.pop(chunk.job, None)
                    pending = [p for p in pending if p[0] != chunk.job]
                    summary.failed.append(Failure(job.video.path, chunk.error))
                    index.add({"video": job.video.relative, "error": chunk.error})
                    print(f"failed: {job.video.path}: {chunk.error}", file=sys.stderr)
                    continue
                video = videos.setdefault(chunk.job, _Video())
                for window, clips in zip(chunk.windows, chunk.clips):
                    pending.append((chunk.job, len(video.windows), clips))
                    video.windows.append(window)
                video.complete = chunk.done
                while sum(len(p[2]) for p in pending) >= self.batch_clips:
                    pending = self._run_batch(pending, videos)
                self._write_finished(jobs, videos, out_dir, index, summary, progress, done_before)
            while pending:
                pending = self._run_batch(pending, videos)
            self._write_finished(jobs, videos, out_dir, index, summary, progress, done_before)
        finally:
            index.close()
        return summary

    def _run_batch(self, pending: list[tuple[int, int, torch.Tensor]], videos: dict[int, _Video]
                   ) -> list[tuple[int, int, torch.Tensor]]:
        """Runs the model on the first windows of `pending` (whole windows, about batch_clips clips); returns the
        rest."""
        taken, clips = 0, 0
        while taken < len(pending) and (clips < self.batch_clips or taken == 0):
            clips += len(pending[taken][2])
            taken += 1
        batch = pending[:taken]
        for (job, position, _), features in zip(batch, self._features([p[2] for p in batch])):
            videos[job].features[position] = features
        return pending[taken:]

    def _write_finished(self, jobs: Sequence[Job], videos: dict[int, _Video], out_dir: str, index: IndexLog,
                        summary: Summary, progress: bool, done_before: int) -> None:
        for job_index in [j for j, v in videos.items() if v.complete and len(v.features) == len(v.windows)]:
            video, job = videos.pop(job_index), jobs[job_index]
            array = np.stack([video.features[k] for k in range(len(video.windows))]).astype(np.float32)
            path = os.path.join(out_dir, job.file)
            buffer = io.BytesIO()
            np.save(buffer, array)
            with atomic_open(path, "wb") as f:
                f.write(buffer.getvalue())
            index.add({"video": job.video.relative, "file": job.file, "windows": len(video.windows),
                       "start": [w.start for w in video.windows], "end": [w.end for w in video.windows],
                       "shape": list(array.shape)})
            summary.extracted += 1
            if progress:
                print(f"{job.file}: {list(array.shape)}", flush=True)
            hold_after(done_before + summary.extracted, "video", HOLD_TIMEOUT_S)


def prepare_output(out_dir: str) -> None:
    """Create the output folder, and remove the temporaries that killed runs left there."""
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_temporaries(out_dir)
