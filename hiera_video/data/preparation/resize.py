"""`resize`: transcode every video under SRC to H.264 mp4 under DST (same relative path, extension .mp4) with the
short side scaled to a given size, a keyframe every second, verified by decoding it with the project's reader.

The transcode runs in-process with PyAV (a dependency already, bundling FFmpeg with libx264), through the same
FFmpeg filters and encoder settings as the command `ffmpeg_command` prints, so its output is that command's:

    ffmpeg -i SRC -vf fps=RATE,scale=W:H -c:v libx264 -preset medium -crf 23 -g GOP -pix_fmt yuv420p -an DST

RATE is the source's frame rate (or --fps): a constant-frame-rate output, as ffmpeg's default vsync makes for mp4.
GOP is one second of frames, so a reader seeking to any clip decodes at most a second of frames before it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import av.filter

from hiera_video.data.preparation.common import (
    DONE,
    FAILED,
    SKIPPED,
    Outcome,
    find_videos,
    publish,
    remove_path,
    remove_stale_temporaries,
    run_jobs,
    temporary_path,
    write_failures,
)
from hiera_video.data.video_io import VideoDecodeError, open_video

FAILURES_FILE = "resize_failures.csv"
OUTPUT_EXTENSION = ".mp4"
# A decoded frame count this far below the header's means the source is truncated or corrupt (headers of intact
# files are off by a frame or two at most).
MIN_DECODED_FRACTION = 0.95
AUDIO_COPY_CODECS = ("aac", "mp3")  # audio that mp4 holds as it is; other codecs are encoded to AAC


class SourceError(RuntimeError):
    """The source video cannot be transcoded; `kind` is a short category for the counts."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class ResizeOptions:
    """Encoding settings: see the module docstring; `threads` is FFmpeg's thread count (0: automatic)."""

    short_side: int = 320
    fps: Fraction | None = None
    crf: int = 23
    preset: str = "medium"
    keep_audio: bool = False
    threads: int = 0


@dataclass(frozen=True)
class ResizeTask:
    name: str  # the source path relative to SRC, as reports show it
    source: str
    output: str
    options: ResizeOptions


@dataclass(frozen=True)
class TranscodeResult:
    frames: int
    width: int
    height: int
    rate: Fraction


# ----------------------------------------------------------------------------------------------- settings


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side `short_side` and the other side keeping the aspect ratio, rounded to
    an even number as ffmpeg's `scale=-2:S` does (nearest multiple of 2, halves away from zero)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if short_side <= 0 or short_side % 2:
        raise ValueError(f"the short side must be a positive even number, got {short_side}")

    def scaled(long: int, short: int) -> int:
        return max(2, 2 * ((long * short_side + short) // (2 * short)))

    return (short_side, scaled(height, width)) if width <= height else (scaled(width, height), short_side)


def keyframe_interval(rate: Fraction) -> int:
    """Frames between keyframes: one second's worth (at least 1)."""
    return max(1, round(rate))


def parse_rate(text: str) -> Fraction:
    """A frame rate given as a number ("30", "29.97") or a fraction ("30000/1001")."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"invalid frame rate {text!r}: expected a number or a fraction like 30000/1001") from None
    if rate <= 0:
        raise ValueError(f"the frame rate must be positive, got {text!r}")
    return rate.limit_denominator(1001) if rate.denominator > 1001 else rate


def _rate_text(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def video_filters(rate: Fraction, width: int, height: int) -> list[tuple[str, str]]:
    """The FFmpeg filter chain: constant frame rate, bicubic scaling (scale's default), 4:2:0 chroma."""
    return [("fps", _rate_text(rate)), ("scale", f"{width}:{height}"), ("format", "yuv420p")]


def encoder_options(rate: Fraction, options: ResizeOptions) -> dict[str, str]:
    return {"preset": options.preset, "crf": str(options.crf), "g": str(keyframe_interval(rate))}


def ffmpeg_command(source: str, output: str, width: int, height: int, rate: Fraction,
                   options: ResizeOptions) -> list[str]:
    """The ffmpeg command giving the same output as `transcode` (the benchmark runs it side by side); with
    keep_audio it copies the audio, as `transcode` does for AAC and MP3 tracks."""
    chain = ",".join(f"{name}={args}" for name, args in video_filters(rate, width, height)[:2])
    encoder = encoder_options(rate, options)
    audio = ["-c:a", "copy"] if options.keep_audio else ["-an"]
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", source, "-vf", chain, "-c:v", "libx264",
            "-preset", encoder["preset"], "-crf", encoder["crf"], "-g", encoder["g"], "-pix_fmt", "yuv420p", *audio,
            output]


# ----------------------------------------------------------------------------------------------- transcoding


def source_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The frame rate the project's reader uses for `stream` (FFmpeg's guess, then the average)."""
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    if not rate or rate <= 0:
        raise SourceError("no frame rate", "the video stream has no frame rate")
    return Fraction(rate)


def filter_graph(stream: av.video.stream.VideoStream, filters: Sequence[tuple[str, str]],
                 threads: int) -> av.filter.Graph:
    """A configured FFmpeg filter graph: frames of `stream` -> `filters` (name, arguments) in a chain -> sink."""
    graph = av.filter.Graph()
    graph.threads = threads
    nodes = [graph.add_buffer(template=stream)]
    nodes += [graph.add(name, args) for name, args in filters]
    nodes.append(graph.add("buffersink"))
    for upstream, downstream in zip(nodes, nodes[1:]):
        upstream.link_to(downstream)
    graph.configure()
    return graph


def pull_frames(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    """The frames the graph has ready, ready to encode."""
    while True:
        try:
            frame = graph.vpull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        # ffmpeg resets the source's picture types before encoding, so the encoder places the keyframes itself.
        frame.pict_type = av.video.frame.PictureType.NONE
        yield frame


def decode_packet(packet: av.Packet, errors: list[str]) -> list:
    """The frames of one packet; a corrupt packet is recorded in `errors` and skipped (as ffmpeg does)."""
    try:
        return packet.decode()
    except av.error.InvalidDataError as error:
        errors.append(str(error))
        return []


class _AudioOutput:
    """The source's first audio track in the output: copied if mp4 holds its codec, else encoded to AAC."""

    def __init__(self, output: av.container.OutputContainer, source: av.audio.stream.AudioStream):
        self.copy = source.codec_context.name in AUDIO_COPY_CODECS
        if self.copy:
            self.stream = output.add_stream_from_template(source)
        else:
            rate = source.codec_context.sample_rate or 48000
            layout = "mono" if source.codec_context.channels == 1 else "stereo"  # AAC-LC's common layouts
            self.stream = output.add_stream("aac", rate=rate)
            self.stream.codec_context.layout, self.stream.codec_context.format = layout, "fltp"
            # FFmpeg's AAC encoder takes frames of exactly 1024 samples; the resampler cuts them.
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)

    def add(self, output: av.container.OutputContainer, packet: av.Packet, errors: list[str]) -> None:
        if self.copy:
            if packet.size:  # the demuxer's empty end-of-stream packet carries no data
                packet.stream = self.stream
                output.mux(packet)
            return
        frames = decode_packet(packet, errors) if packet.size else [None]
        for frame in frames:
            for resampled in self.resampler.resample(frame):
                resampled.pts = None  # the encoder counts samples itself
                output.mux(self.stream.encode(resampled))
            if frame is None:
                output.mux(self.stream.encode())


def add_h264_stream(output: av.container.OutputContainer, rate: Fraction, width: int, height: int,
                    options: dict[str, str], threads: int) -> av.video.stream.VideoStream:
    """A libx264 yuv420p output stream with `options`, threaded as ffmpeg threads it."""
    stream = output.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.thread_count = threads
    stream.codec_context.thread_type = "AUTO"  # frame threads, as ffmpeg uses (PyAV defaults to slice threads)
    stream.options = options
    return stream


def transcode(source: str, output: str, options: ResizeOptions) -> TranscodeResult:
    """Transcode `source` to `output` (see the module docstring). Raises SourceError or av.error.FFmpegError."""
    with av.open(source) as container:
        if not container.streams.video:
            raise SourceError("no video stream", "the file has no video stream")
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        video.codec_context.thread_count = options.threads
        rate = options.fps or source_rate(video)
        width, height = output_size(video.codec_context.width, video.codec_context.height, options.short_side)
        graph = filter_graph(video, video_filters(rate, width, height), options.threads)
        audio = container.streams.audio[0] if options.keep_audio and container.streams.audio else None
        errors: list[str] = []
        decoded = encoded = 0
        with av.open(output, "w") as out:
            stream = add_h264_stream(out, rate, width, height, encoder_options(rate, options), options.threads)
            audio_out = _AudioOutput(out, audio) if audio is not None else None
            for packet in container.demux(*[s for s in (video, audio) if s is not None]):
                if packet.stream.type == "audio":
                    audio_out.add(out, packet, errors)
                    continue
                for frame in decode_packet(packet, errors):
                    decoded += 1
                    graph.vpush(frame)
                    for filtered in pull_frames(graph):
                        out.mux(stream.encode(filtered))
                        encoded += 1
            graph.vpush(None)  # flush the fps filter's last frames
            for filtered in pull_frames(graph):
                out.mux(stream.encode(filtered))
                encoded += 1
            out.mux(stream.encode())
        _check_complete(video, decoded, errors)
    if not encoded:
        raise SourceError("no frames", "no decodable video frame" + (f" ({errors[0]})" if errors else ""))
    return TranscodeResult(encoded, width, height, rate)


def _check_complete(stream: av.video.stream.VideoStream, decoded: int, errors: Sequence[str]) -> None:
    """Raise SourceError when far fewer frames decoded than the header lists (a truncated or corrupt file)."""
    listed = stream.frames
    if listed and decoded < MIN_DECODED_FRACTION * listed - 1:
        detail = f"; {len(errors)} corrupt packets, e.g. {errors[0]}" if errors else ""
        raise SourceError("truncated", f"only {decoded} of the {listed} frames in the header decode (a truncated "
                          f"or corrupt file{detail})")


# ----------------------------------------------------------------------------------------------- verification


def verify_output(path: str, short_side: int, fps: Fraction | None = None,
                  expected: TranscodeResult | None = None) -> str | None:
    """Why the video at `path` is not a finished output (None if it is): it must open with the project's reader,
    have the wanted short side (and frame rate), and decode its first and last frames; with `expected`, it must
    also have exactly that size and frame count."""
    try:
        with open_video(path) as reader:
            size = (reader.width, reader.height)
            if expected is not None and size != (expected.width, expected.height):
                return f"the output is {size[0]}x{size[1]}, encoded as {expected.width}x{expected.height}"
            if min(size) != short_side:
                return f"the output's short side is {min(size)}, not {short_side}"
            if expected is not None and reader.num_frames != expected.frames:
                return f"the output has {reader.num_frames} frames, {expected.frames} were encoded"
            wanted = fps or (expected.rate if expected else None)
            if wanted and abs(reader.fps - float(wanted)) > 1e-3 * float(wanted):
                return f"the output is at {reader.fps:g} fps, not {float(wanted):g}"
            reader.get_frames([0, reader.num_frames - 1])  # the last frame: a truncated file fails here
    except VideoDecodeError as error:
        return error.reason
    return None


# ----------------------------------------------------------------------------------------------- the job


def resize_one(task: ResizeTask) -> Outcome:
    """Transcode one video unless its output already exists and verifies; publish it only once verified."""
    options = task.options
    if os.path.exists(task.output) and verify_output(task.output, options.short_side, options.fps) is None:
        return Outcome(task.name, SKIPPED)
    os.makedirs(os.path.dirname(task.output), exist_ok=True)
    if os.path.getsize(task.source) == 0:
        return Outcome(task.name, FAILED, "empty", "the file is empty")
    temporary = temporary_path(task.output)
    try:
        result = transcode(task.source, temporary, options)
        problem = verify_output(temporary, options.short_side, options.fps, expected=result)
        if problem:
            return Outcome(task.name, FAILED, "output does not verify", problem)
        publish(temporary, task.output)
    except SourceError as error:
        return Outcome(task.name, FAILED, error.kind, str(error))
    except av.error.FFmpegError as error:
        kind = "unreadable" if isinstance(error, (av.error.InvalidDataError, av.error.EOFError)) else "FFmpeg error"
        return Outcome(task.name, FAILED, kind, f"PyAV: {error.strerror or error}")
    finally:
        remove_path(temporary)
    return Outcome(task.name, DONE)


def output_path(dst: str, relative: str) -> str:
    return os.path.join(dst, os.path.splitext(relative)[0] + OUTPUT_EXTENSION)


def plan(src: str, dst: str, options: ResizeOptions) -> tuple[list[ResizeTask], list[Outcome]]:
    """One task per video under `src` (outside `dst`); sources that would share an output (clip.webm and
    clip.mp4) keep the first, preferring an mp4 source, and the others fail."""
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"resize: the source folder {src} does not exist")
    if src == dst:
        raise ValueError(f"resize: the destination must differ from the source folder {src}")
    inside = os.path.relpath(dst, src)
    relatives = [r for r in find_videos(src) if inside.startswith("..") or not r.startswith(inside + os.sep)]
    tasks: dict[str, ResizeTask] = {}
    clashes = []
    for relative in sorted(relatives, key=lambda r: (os.path.splitext(r)[0], not r.lower().endswith(".mp4"), r)):
        output = output_path(dst, relative)
        if output in tasks:
            clashes.append(Outcome(relative, FAILED, "duplicate", f"{tasks[output].name} has the same output name "
                                   f"{os.path.relpath(output, dst)}"))
            continue
        tasks[output] = ResizeTask(relative, os.path.join(src, relative), output, options)
    return sorted(tasks.values(), key=lambda t: t.name), clashes


def resize_videos(src: str, dst: str, options: ResizeOptions, workers: int) -> list[Outcome]:
    """Run the resize job over `src`; failures are listed in DST/resize_failures.csv. Returns every outcome."""
    tasks, clashes = plan(src, dst, options)
    os.makedirs(dst, exist_ok=True)
    remove_stale_temporaries(dst)
    outcomes = run_jobs(resize_one, tasks, workers, "resize") + clashes
    write_failures(os.path.join(dst, FAILURES_FILE), sorted(outcomes, key=lambda o: o.name))
    return outcomes
