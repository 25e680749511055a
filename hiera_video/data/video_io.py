"""Open videos and read frames by index: torchcodec, decord or PyAV (the fallback), or frame images.

This is the only module that touches decoders. Every reader returns RGB frames as a uint8 tensor [T, H, W, 3],
decodes each requested frame once however often it is requested, and reports failures as VideoDecodeError
naming the file. Backend "auto" (DATA.DECODING_BACKEND) picks torchcodec when it imports and loads FFmpeg's
shared libraries, else decord, else PyAV, and logs its choice once per process (resolve_decoding). A file that
torchcodec or decord cannot open is read with PyAV. The decoders' own native logging (FFmpeg's, decord's) is
silenced unless asked for: see set_decoder_log_level.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from fractions import Fraction

import av
import av.logging
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file

logger = logging.getLogger(__name__)

# Decoders of video files, in the order "auto" tries them; "frames" reads folders or lists of frame images.
FILE_BACKENDS = ("torchcodec", "decord", "pyav")
BACKEND_CHOICES = ("auto", *FILE_BACKENDS)  # DATA.DECODING_BACKEND
BACKENDS = (*BACKEND_CHOICES, "frames")
DECODE_DEVICES = ("cpu", "cuda")  # DATA.DECODE_DEVICE; "cuda" needs torchcodec
ENCODERS = ("libx264", "mpeg4")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Native decoder log levels (FFmpeg's AV_LOG_* values): messages at the level or more severe get through.
DECODER_LOG_LEVELS = {"quiet": -8, "error": 16, "warning": 24, "info": 32, "debug": 48}
# Carries the level to processes started from this one (spawned data-loader workers, launched ranks); also the
# level of a process that never calls set_decoder_log_level (default "quiet").
DECODER_LOG_ENV = "HIERA_DECODER_LOG_LEVEL"

_decoder_log_level: str | None = None  # the level applied in this process (inherited by forked children)
_stderr_lock = threading.Lock()


class VideoDecodeError(RuntimeError):
    """A video (or frame image) could not be opened or decoded; `.path` names it and `.reason` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode video {path!r}: {reason}")
        self.path = path
        self.reason = reason


def set_decoder_log_level(level: str) -> None:
    """Let native decoder messages of `level` (one of DECODER_LOG_LEVELS) or more severe through.

    PyAV's FFmpeg messages go to the Python loggers "libav.*"; decord's FFmpeg and decord's own C++ messages
    print to stderr. "quiet" drops them all, as a broken file is reported anyway by the VideoDecodeError naming
    it. torchcodec keeps its FFmpeg silent at every level; its errors carry FFmpeg's reason instead. The level is
    exported in the environment variable DECODER_LOG_ENV for child processes.
    """
    global _decoder_log_level
    if level not in DECODER_LOG_LEVELS:
        raise ValueError(f"unknown decoder log level {level!r}; expected one of {', '.join(DECODER_LOG_LEVELS)}")
    ffmpeg_level = DECODER_LOG_LEVELS[level]
    if level == "quiet":
        av.logging.set_level(None)  # PyAV drops every FFmpeg message
    else:
        av.logging.set_level(ffmpeg_level)
        logging.getLogger("libav").setLevel(av.logging.adapt_level(ffmpeg_level))
    try:
        import decord.logging
    except ImportError:
        pass
    else:
        decord.logging.set_level(ffmpeg_level)  # decord bundles its own FFmpeg
    os.environ[DECODER_LOG_ENV] = level
    _decoder_log_level = level


def _ensure_decoder_log_level() -> None:
    """On a process's first decode, apply the level inherited through DECODER_LOG_ENV (default "quiet")."""
    if _decoder_log_level is not None:
        return
    level = os.environ.get(DECODER_LOG_ENV) or "quiet"
    if level not in DECODER_LOG_LEVELS:
        raise ValueError(f"{DECODER_LOG_ENV}={level!r}: expected one of {', '.join(DECODER_LOG_LEVELS)}")
    set_decoder_log_level(level)


def backend_problem(backend: str) -> str | None:
    """Why the file backend `backend` cannot decode in this process, or None when it can.

    torchcodec (0.17) imports without FFmpeg (its image decoders need none) and then reports no FFmpeg version: it
    needs FFmpeg's shared libraries (libavcodec, libavformat, ..., a major version it supports) on the library path.
    Older releases load FFmpeg on import, so there an import is enough.
    """
    if backend == "pyav":
        return None
    try:  # anything can go wrong loading a native extension: a missing library, an ABI mismatch with torch
        module = __import__(backend)
    except Exception as error:
        return f"{backend} does not import ({type(error).__name__}: {error})"
    if backend == "torchcodec" and getattr(module, "ffmpeg_major_version", "loaded on import") is None:
        return "torchcodec cannot load FFmpeg's shared libraries (libavcodec, libavformat, libavutil, ...)"
    return None


@functools.cache
def auto_backend() -> str:
    """The first of FILE_BACKENDS that works here; the choice (and why earlier ones were passed over) is logged
    once per process."""
    passed_over = []
    for backend in FILE_BACKENDS:
        problem = backend_problem(backend)
        if problem is None:
            break
        passed_over.append(problem)
    logger.info("Decoding videos with %s (DATA.DECODING_BACKEND auto)%s", _describe(backend),
                "".join(f"; {problem}" for problem in passed_over))
    return backend


def _describe(backend: str) -> str:
    if backend == "torchcodec":
        import torchcodec

        return f"torchcodec {torchcodec.__version__} on FFmpeg {getattr(torchcodec, 'ffmpeg_major_version', '?')}"
    if backend == "decord":
        import decord

        return f"decord {decord.__version__}"
    return f"PyAV {av.__version__}"


def resolve_decoding(backend: str, device: str = "cpu") -> tuple[str, str]:
    """DATA.DECODING_BACKEND and DATA.DECODE_DEVICE -> (a file backend, a torch device string), once per dataset.

    "auto" becomes auto_backend(). An explicit "torchcodec" that cannot work is an error (an explicit "decord"
    that does not import falls back to PyAV per file, as before). "cuda" becomes this process's current CUDA
    device ("cuda:N", the rank's GPU), so data-loader workers decode on their rank's GPU; it needs torchcodec.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"DATA.DECODING_BACKEND: unknown backend {backend!r}; expected one of {BACKEND_CHOICES}")
    if device not in DECODE_DEVICES:
        raise ValueError(f"DATA.DECODE_DEVICE: unknown device {device!r}; expected one of {DECODE_DEVICES}")
    if backend == "auto":
        backend = auto_backend()
    elif backend == "torchcodec":
        problem = backend_problem(backend)
        if problem is not None:
            raise ValueError(f"DATA.DECODING_BACKEND torchcodec: {problem}; install FFmpeg's shared libraries "
                             "(see the README, Decoding backends) or use DATA.DECODING_BACKEND auto")
    if device == "cuda":
        if backend != "torchcodec":
            raise ValueError(f"DATA.DECODE_DEVICE cuda needs DATA.DECODING_BACKEND torchcodec, not {backend}")
        if not torch.cuda.is_available():
            raise ValueError("DATA.DECODE_DEVICE cuda, but no CUDA device is visible")
        device = f"cuda:{torch.cuda.current_device()}"
    return backend, device


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """At level "quiet", point file descriptor 2 at /dev/null for the block.

    decord prints "ERROR opening: <file>" with C++ std::cerr whatever the log level, when FFmpeg cannot open a
    file. The redirection is process-wide, so it only covers opening a file, and opens are serialised.
    """
    if _decoder_log_level != "quiet":
        yield
        return
    with _stderr_lock:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # the process has no stderr to protect
            saved = None
        if saved is None:
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


class VideoReader(ABC):
    """Random access to the frames of one video. Use as a context manager or call close()."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        """Length in seconds (num_frames / fps)."""
        return self.num_frames / self.fps

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at `indices` (any order, repeats allowed) as uint8 [len(indices), H, W, 3] RGB.

        Indices must lie in [0, num_frames). Each distinct frame is decoded once.
        """
        wanted = np.asarray(indices)
        if wanted.ndim != 1 or (wanted.size and not np.issubdtype(wanted.dtype, np.integer)):
            raise TypeError(f"{self.path}: frame indices must be a 1-D sequence of ints, got {wanted!r}")
        if wanted.size == 0:
            return torch.empty((0, self.height, self.width, 3), dtype=torch.uint8)
        if wanted.min() < 0 or wanted.max() >= self.num_frames:
            raise IndexError(
                f"{self.path}: frame indices must lie in [0, {self.num_frames}), got {wanted.min()}..{wanted.max()}"
            )
        unique, inverse = np.unique(wanted, return_inverse=True)
        frames = self._read_sorted_unique(unique)
        if np.array_equal(unique, wanted):  # increasing indices (a clip, mostly): no reordering copy needed
            return frames
        return frames[torch.from_numpy(inverse.reshape(-1))]

    @abstractmethod
    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        """Decode the frames at strictly increasing, in-range `indices` -> uint8 [len, H, W, 3]."""

    def close(self) -> None:
        """Release the decoder (idempotent)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:.3f}, "
            f"size={self.width}x{self.height})"
        )


class DecordReader(VideoReader):
    """decord.VideoReader behind the common interface (frame-accurate seeking, fast batch decode)."""

    def __init__(self, path: str, num_threads: int = 1):
        import decord  # imported here so a machine without decord still reads videos through PyAV

        _ensure_decoder_log_level()
        self.path = path
        try:
            with _quiet_native_stderr():
                self._reader = decord.VideoReader(path, num_threads=num_threads)
                self.num_frames = len(self._reader)
                self.fps = float(self._reader.get_avg_fps())
                with decord.bridge.use_torch():
                    first = self._reader[0] if self.num_frames else None
        except (decord.DECORDError, RuntimeError) as error:
            raise VideoDecodeError(path, f"decord: {error}") from error
        if first is None:
            raise VideoDecodeError(path, "decord finds no frames in the video stream")
        if not self.fps > 0:
            raise VideoDecodeError(path, f"decord reports an invalid frame rate {self.fps}")
        self.height, self.width = first.shape[:2]

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        import decord

        try:
            # Frames come out as torch tensors through DLPack (no copy) whatever bridge another library chose:
            # PyTorchVideo's decord decoder, for one, switches decord's global bridge to "torch".
            with decord.bridge.use_torch():
                return self._reader.get_batch(indices.tolist())
        except (decord.DECORDError, RuntimeError) as error:
            raise VideoDecodeError(self.path, f"decord failed on frames {indices.tolist()}: {error}") from error

    def close(self) -> None:
        self._reader = None


class TorchCodecReader(VideoReader):
    """torchcodec.decoders.VideoDecoder (PyTorch's decoder, on the system's FFmpeg libraries).

    Frame i is the i-th frame in presentation order, as decord counts: the decoder scans the file's packets when
    it opens it ("exact" seek mode; about 50 ms for a 15-minute video, as long as decord's index), so frames are
    found exactly in files whose header lists no count (Matroska, WebM). The frame count is the header's when it
    has one, as decord and PyAV report it: a file cut short then fails on the frames it lacks (and is reported)
    instead of passing for a shorter video. The frame rate is the header's average rate, as the others report.

    With a CUDA `device` the frames are decoded by the GPU (NVDEC) and copied to host memory, so everything after
    decoding stays as on the CPU: the one GPU code path of this module, not tested on CPU-only machines.
    """

    def __init__(self, path: str, num_threads: int = 1, device: str = "cpu"):
        from torchcodec.decoders import VideoDecoder

        _ensure_decoder_log_level()
        self.path = path
        try:
            self._decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=num_threads, device=device,
                                         seek_mode="exact")
            metadata = self._decoder.metadata
            self._frames_in_file = len(self._decoder)
            self.num_frames = metadata.num_frames_from_header or self._frames_in_file
            self.fps = float(metadata.average_fps_from_header or metadata.average_fps or 0.0)
            first = self._decoder.get_frames_at([0]).data if self.num_frames else None
        except (RuntimeError, ValueError) as error:
            raise VideoDecodeError(path, f"torchcodec: {_torchcodec_reason(error)}") from error
        if first is None:
            raise VideoDecodeError(path, "torchcodec finds no frames in the video stream")
        if not self.fps > 0:
            raise VideoDecodeError(path, f"torchcodec reports an invalid frame rate {self.fps}")
        self.height, self.width = first.shape[1:3]

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        if indices[-1] >= self._frames_in_file:
            raise VideoDecodeError(self.path, f"the header lists {self.num_frames} frames, the file holds "
                                   f"{self._frames_in_file} (cut short?): frame {indices[-1]} is missing")
        try:
            frames = self._decoder.get_frames_at(indices.tolist()).data
        except (RuntimeError, ValueError) as error:
            raise VideoDecodeError(self.path, f"torchcodec failed on frames {indices.tolist()}: "
                                   f"{_torchcodec_reason(error)}") from error
        return frames.cpu()  # no copy on the CPU; frames decoded by the GPU go to host memory

    def close(self) -> None:
        self._decoder = None


def _torchcodec_reason(error: Exception) -> str:
    """torchcodec's message without its C++ source location ("SingleStreamDecoder, /path/File.cpp:41, ")."""
    return re.sub(r"^\w+, \S+:\d+, ", "", str(error).strip())


# Frames a PyAV read decodes on from where the previous read stopped rather than seeking: a seek decodes from the
# keyframe before the wanted frame anyway, which x264's default keyframe interval puts up to 250 frames back.
FORWARD_READ_FRAMES = 250


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) reader: seeks to the keyframe before the first wanted frame and decodes forward; a read just
    ahead of the previous one decodes on from there instead, so reading a video forward decodes each frame once.

    Frame i is the frame presented at time i / fps from the stream start. When the header has no frame count
    the count is estimated from duration * fps; wanted frames past the last decodable one get the last frame.
    """

    def __init__(self, path: str, num_threads: int = 1):
        _ensure_decoder_log_level()
        self.path = path
        self._num_threads = num_threads
        self._container = None
        # Where the last read left the decoder: its frame iterator, the last (index, frame) it gave, frames decoded.
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._last: tuple[int, av.VideoFrame] | None = None
        self._decoded = 0
        try:
            self._open_container()
            self._read_header()
        except av.error.FFmpegError as error:
            self.close()
            raise VideoDecodeError(path, f"PyAV: {error}") from error
        except VideoDecodeError:
            self.close()
            raise

    def _open_container(self) -> None:
        self.close()
        self._container = av.open(self.path)
        if not self._container.streams.video:
            raise VideoDecodeError(self.path, "the file has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_count = self._num_threads
        if self._num_threads > 1:
            self._stream.thread_type = "AUTO"

    def _read_header(self) -> None:
        stream = self._stream
        # FFmpeg's best guess (av_guess_frame_rate): right for raw streams, where average_rate is a default 25.
        rate = stream.guessed_rate or stream.average_rate or stream.base_rate
        if not rate or rate <= 0:
            raise VideoDecodeError(self.path, "the video stream has no frame rate")
        self._rate = Fraction(rate)
        self.fps = float(rate)
        self._time_base = Fraction(stream.time_base)
        self.num_frames = stream.frames or self._estimate_frame_count()
        # Counting packets may have reopened the container (raw streams cannot seek): use the current stream.
        stream = self._stream
        first = next(self._container.decode(stream), None)
        if first is None:
            raise VideoDecodeError(self.path, "no decodable video frame")
        self.height, self.width = first.height, first.width
        # Frame 0 is the first frame presented, as decord counts (the stream's start_time may differ).
        self._start_pts = first.pts if first.pts is not None else (stream.start_time or 0)

    def _rewind(self) -> None:
        """Go back to the first frame; streams that cannot seek (raw H.264 files) are reopened."""
        try:
            self._container.seek(0)
        except av.error.FFmpegError:
            self._open_container()

    def _estimate_frame_count(self) -> int:
        stream = self._stream
        if stream.duration:
            seconds = stream.duration * self._time_base
        elif self._container.duration:
            seconds = Fraction(self._container.duration, av.time_base)
        else:  # no duration in the header either: count packets (demuxing without decoding is cheap)
            seconds = sum(1 for packet in self._container.demux(stream) if packet.size) / self._rate
            self._rewind()
        return max(1, round(seconds * self._rate))

    def _frame_index(self, frame: av.VideoFrame) -> int:
        return round((frame.pts - self._start_pts) * self._time_base * self._rate)

    def _pts_of(self, index: int) -> int:
        return self._start_pts + int(index / (self._rate * self._time_base))

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        try:
            frames = self._continue_forward(indices)
            if frames is None:
                frames = self._decode_forward(indices, seek_pts=self._pts_of(int(indices[0])))
            if frames is None:  # the seek landed past the first wanted frame (or pts are missing): start over
                frames = self._decode_forward(indices, seek_pts=None)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(self.path, f"PyAV failed on frames {indices.tolist()}: {error}") from error
        shapes = {frame.shape for frame in frames}
        if len(shapes) != 1:
            raise VideoDecodeError(self.path, f"frame size changes inside the video: {sorted(shapes)}")
        return torch.from_numpy(np.stack(frames))

    def _continue_forward(self, indices: np.ndarray) -> list[np.ndarray] | None:
        """Frames ahead of the previous read, within FORWARD_READ_FRAMES of it, by decoding on from where that read
        stopped (reading a video forward in steps decodes each frame once); None when a seek is needed."""
        if self._decoder is None or self._last is None:
            return None
        if not self._last[0] < indices[0] <= self._last[0] + FORWARD_READ_FRAMES:
            return None
        return self._pick(indices, after_seek=False)

    def _decode_forward(self, indices: np.ndarray, seek_pts: int | None) -> list[np.ndarray] | None:
        """Decode from the keyframe before `seek_pts` (or the start) until every wanted frame is seen.

        Returns None when decoding after a seek cannot locate the wanted frames.
        """
        self._decoder, self._last, self._decoded = None, None, 0
        if seek_pts is None:
            self._rewind()
        else:
            try:
                self._container.seek(seek_pts, stream=self._stream, backward=True, any_frame=False)
            except av.error.FFmpegError:  # a stream without seeking: decode from the start instead
                return None
        self._decoder = self._container.decode(self._stream)
        picked = self._pick(indices, after_seek=seek_pts is not None)
        if picked is None:
            self._decoder = None
        return picked

    def _pick(self, indices: np.ndarray, after_seek: bool) -> list[np.ndarray] | None:
        """Decode on until every wanted index got the first frame whose index is >= it; indices past the end get
        the last frame. After a seek, returns None when the first frame is already past the first wanted index
        (or frames have no pts): the seek missed."""
        picked: list[np.ndarray] = []
        first = self._last is None
        assert self._decoder is not None
        for frame in self._decoder:
            self._decoded += 1
            if frame.pts is None:
                if after_seek:
                    return None
                index = self._decoded - 1
            else:
                index = self._frame_index(frame)
            if first and after_seek and index > indices[0]:
                return None
            first = False
            self._last = (index, frame)
            rgb = None
            while len(picked) < len(indices) and indices[len(picked)] <= index:
                rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                picked.append(rgb)
            if len(picked) == len(indices):
                return picked
        if self._last is None:
            if after_seek:
                return None
            raise VideoDecodeError(self.path, "no decodable video frame")
        rgb = self._last[1].to_ndarray(format="rgb24")
        picked.extend(rgb for _ in range(len(indices) - len(picked)))
        return picked

    def close(self) -> None:
        self._decoder, self._last = None, None
        container, self._container = self._container, None
        if container is not None:
            container.close()


def _natural_key(name: str) -> list:
    # Numbers inside names compare as numbers, so "img_9.jpg" sorts before "img_10.jpg" as a person expects.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class FrameImagesReader(VideoReader):
    """A video stored as one image file per frame (AVA frame folders, SSv2 frame lists)."""

    def __init__(self, frame_paths: Sequence[str], name: str, fps: float):
        if not frame_paths:
            raise VideoDecodeError(name, "no frame images (.jpg/.jpeg/.png)")
        if not fps > 0:
            raise ValueError(f"{name}: frame rate must be positive, got {fps}")
        self.path = name
        self.frame_paths = list(frame_paths)
        self.num_frames = len(self.frame_paths)
        self.fps = float(fps)
        self.height, self.width = self._read_image(0).shape[:2]

    def _read_image(self, index: int) -> torch.Tensor:
        frame_path = self.frame_paths[index]
        try:
            image = decode_image(read_file(frame_path), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as error:
            raise VideoDecodeError(frame_path, f"frame {index} of {self.path}: {error}") from error
        return image.permute(1, 2, 0)

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        images = [self._read_image(int(i)) for i in indices]
        for index, image in zip(indices, images):
            if image.shape[:2] != (self.height, self.width):
                raise VideoDecodeError(
                    self.frame_paths[index],
                    f"frame {index} of {self.path} is {tuple(image.shape[:2])}, the first frame is "
                    f"{(self.height, self.width)}",
                )
        return torch.stack(images)


def list_frame_images(folder: str) -> list[str]:
    """Image files (.jpg/.jpeg/.png) in `folder`, sorted by name with numbers compared numerically."""
    names = [name for name in os.listdir(folder) if name.lower().endswith(FRAME_EXTENSIONS)]
    return [os.path.join(folder, name) for name in sorted(names, key=_natural_key)]


def open_video(
    path: str | Sequence[str],
    backend: str = "auto",
    num_threads: int = 1,
    frames_fps: float = 30.0,
    device: str = "cpu",
) -> VideoReader:
    """Open a video file, a folder of frame images, or an explicit list of frame image paths.

    Files use `backend`: "auto" (see resolve_decoding), "torchcodec" or "decord", each falling back to PyAV for a
    file it cannot open (or when it is not installed), or "pyav". A folder or a list of paths is read as frame
    images (backend "frames"), at `frames_fps`. `num_threads` is the decoder's thread count (1 suits data-loader
    workers). A CUDA `device` ("cuda:N", from resolve_decoding) decodes with torchcodec on that GPU, without a
    fallback: a GPU that cannot decode fails loudly instead of every file going to PyAV on the CPU.
    Raises VideoDecodeError (naming the file) when the video is missing, empty or has no decodable frame.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown decoding backend {backend!r}; expected one of {BACKENDS}")
    if not isinstance(path, (str, os.PathLike)):
        frame_paths = [os.fspath(p) for p in path]
        name = os.path.dirname(frame_paths[0]) if frame_paths else "<empty frame list>"
        return FrameImagesReader(frame_paths, name=name, fps=frames_fps)
    path = os.fspath(path)
    if os.path.isdir(path):
        return FrameImagesReader(list_frame_images(path), name=path, fps=frames_fps)
    if backend == "frames":
        raise VideoDecodeError(path, "backend 'frames' needs a folder of frame images or a list of frame paths")
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty")
    if backend == "auto":
        backend = auto_backend()
    if device != "cpu":
        if backend != "torchcodec":
            raise ValueError(f"decoding on {device} needs the torchcodec backend, not {backend}")
        return TorchCodecReader(path, num_threads=num_threads, device=device)
    if backend == "pyav":
        return PyAVReader(path, num_threads=num_threads)
    try:
        return (TorchCodecReader if backend == "torchcodec" else DecordReader)(path, num_threads=num_threads)
    except ImportError:
        logger.warning("%s is not installed; reading %s with PyAV", backend, path)
        return PyAVReader(path, num_threads=num_threads)
    except VideoDecodeError as first_error:
        try:
            reader = PyAVReader(path, num_threads=num_threads)
        except VideoDecodeError as pyav_error:
            raise VideoDecodeError(path, f"{first_error.reason}; {pyav_error.reason}") from pyav_error
        # Debug level: this happens on every open of such a file (raw H.264 streams, some broken files).
        logger.debug("%s could not open %s (%s); using PyAV", backend, path, first_error.reason)
        return reader


def write_video(path: str, frames: np.ndarray, fps: float = 30.0, codec: str = "libx264", crf: int = 23) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H and W even) to a video file, yuv420p, with PyAV.

    The container follows the file extension (.mp4, .mkv, .avi, or .h264 for a raw stream).
    `codec` is "libx264" (H.264, quality `crf`) or "mpeg4"; libx264 falls back to mpeg4 when this FFmpeg build
    lacks it. Encoding is single-threaded so the same frames always give the same bytes.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"{path}: expected uint8 frames [T>0, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {width}x{height}")
    if codec not in ENCODERS:
        raise ValueError(f"{path}: codec must be one of {ENCODERS}, got {codec!r}")
    if codec == "libx264" and "libx264" not in av.codecs_available:
        codec = "mpeg4"
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        else:  # mpeg4 has no crf: cap the quantiser instead, so quality stays close to crf 23 H.264
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 5
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
