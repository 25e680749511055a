"""`ava-cut` and `ava-frames`: the AVA v2.2 videos in the layouts hiera_video.data.ava reads.

ava-cut: the annotated segment of each movie, seconds 900 to 1801 (the release's `ffmpeg -ss 900 -t 901`), to
DST/<video_id>.<ext>, so frame 0 is shown at 900 s (AVA.FIRST_SECOND 900). The video stream is copied, keeping
the container, when the movie has a keyframe at 900 s that opens a closed GOP: then no frame from before 900 s can
sneak in as frame 0. The copy then runs to the first keyframe at or after 1801 s. Otherwise the segment is
re-encoded to H.264 (DST/<video_id>.mp4, the source frame rate, CRF `crf`, a keyframe every second). No audio.

ava-frames: every video in VIDEOS to JPEG frames at `fps` (ffmpeg's `fps` filter, as PySlowFast's `-r 30`):
DST/<video>/<video>_000001.jpg, ... and PySlowFast's frame lists {train,val}.csv, by default in frame_lists/ next
to DST (PySlowFast's layout): a header `original_vido_id video_id frame_id path labels`, then `<video> <video
index> <frame index from 0> <video>/<video>_<frame index + 1:06d>.jpg ""`. A video's split comes from lists of
video ids or from the ids in the ground-truth files of an annotation folder (ava_train_v2.2.csv, ava_val_v2.2.csv).

Both write into a temporary name (a file, or a folder of frames) and rename it into place once verified with the
project's reader, skip outputs that exist and verify, and list failures in DST/ava_{cut,frames}_failures.csv.
"""
from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from hiera_video.data.preparation.common import (
    DONE,
    FAILED,
    SKIPPED,
    VIDEO_EXTENSIONS,
    Outcome,
    publish,
    remove_path,
    remove_stale_temporaries,
    run_jobs,
    temporary_path,
    write_failures,
    write_text_atomic,
)
from hiera_video.data.preparation.resize import (
    SourceError,
    add_h264_stream,
    decode_packet,
    filter_graph,
    keyframe_interval,
    pull_frames,
    source_rate,
)
from hiera_video.data.video_io import VideoDecodeError, list_frame_images, open_video

SEGMENT_START, SEGMENT_DURATION = 900.0, 901.0  # seconds: the AVA v2.x release cuts
CUT_FAILURES, FRAMES_FAILURES = "ava_cut_failures.csv", "ava_frames_failures.csv"
FRAME_LIST_HEADER = "original_vido_id video_id frame_id path labels"  # PySlowFast's spelling, as ava.py reads it
GROUNDTRUTH_FILES = {"train": "ava_train_v2.2.csv", "val": "ava_val_v2.2.csv"}
# Packets read after the keyframe at the segment start to make sure none is shown before it (an open GOP).
LEADING_PACKETS = 32


def video_id_of(name: str) -> str:
    """`abc.mkv` -> `abc` (names in id lists may carry the extension, as in ava_file_names_trainval_v2.1.txt)."""
    stem, ext = os.path.splitext(name.strip())
    return stem if ext.lower() in VIDEO_EXTENSIONS else name.strip()


def find_movies(folder: str) -> dict[str, str]:
    """Video id -> path of every video file directly in `folder`; two files of one id is an error."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the video folder {folder} does not exist")
    movies: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") or not name.lower().endswith(VIDEO_EXTENSIONS):
            continue
        video_id = video_id_of(name)
        if video_id in movies:
            raise ValueError(f"{folder}: two files for video {video_id}: {os.path.basename(movies[video_id])}, "
                             f"{name}")
        movies[video_id] = os.path.join(folder, name)
    return movies


# ----------------------------------------------------------------------------------------------- ava-cut


@dataclass(frozen=True)
class CutOptions:
    start: float = SEGMENT_START
    duration: float = SEGMENT_DURATION
    crf: int = 18
    preset: str = "medium"
    threads: int = 0


@dataclass(frozen=True)
class CutTask:
    name: str  # the video id
    source: str
    dst: str
    options: CutOptions


def _seconds(stream: av.video.stream.VideoStream, pts: int) -> float:
    return float((pts - (stream.start_time or 0)) * stream.time_base)


def _to_pts(stream: av.video.stream.VideoStream, seconds: float) -> int:
    return (stream.start_time or 0) + int(round(seconds / stream.time_base))


def copyable_keyframe(path: str, start: float) -> int | None:
    """The pts of a keyframe at `start` (within half a frame) after which no packet is shown before it, or None
    when the segment cannot be stream-copied from `start`."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        half_frame = 0.5 / float(source_rate(stream))
        try:
            container.seek(_to_pts(stream, start + half_frame), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            return None
        keyframe = None
        for count, packet in enumerate(container.demux(stream)):
            if packet.pts is None or count > LEADING_PACKETS:
                break
            if keyframe is None:
                if not packet.is_keyframe or abs(_seconds(stream, packet.pts) - start) > half_frame:
                    return None
                keyframe = packet.pts
            elif packet.is_keyframe:
                break
            elif packet.pts < keyframe:  # a leading picture of an open GOP, referring to frames before start
                return None
        return keyframe


def _stream_copy(source: str, output: str, keyframe: int, end: float) -> None:
    """Copy the video packets from `keyframe` to the first keyframe at or after `end`, shifted to start at 0."""
    with av.open(source) as container, av.open(output, "w") as out:
        stream = container.streams.video[0]
        copy = out.add_stream_from_template(stream)
        end_pts = _to_pts(stream, end)
        container.seek(keyframe, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            if packet.pts is None or packet.pts < keyframe:
                continue  # the end-of-stream packet, or the seek landed before the keyframe (a coarse index)
            if packet.is_keyframe and packet.pts >= end_pts:
                break
            packet.pts -= keyframe
            if packet.dts is not None:  # Matroska gives no dts to some packets; the muxer derives them
                packet.dts -= keyframe
            packet.stream = copy
            out.mux(packet)


def _segment_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream, start: float,
                    end: float, errors: list[str]) -> Iterator[av.VideoFrame]:
    """The decoded frames shown in [start, end), each time rounded to the nearest frame."""
    half_frame = 0.5 / float(source_rate(stream))
    container.seek(_to_pts(stream, start), stream=stream, backward=True, any_frame=False)
    first_pts = None
    for packet in container.demux(stream):
        for frame in decode_packet(packet, errors):
            if frame.pts is None:
                continue
            seconds = _seconds(stream, frame.pts)
            if seconds >= end - half_frame:
                return
            if seconds >= start - half_frame:
                first_pts = frame.pts if first_pts is None else first_pts
                frame.pts -= first_pts  # the cut starts at time 0, as the copied ones do
                yield frame


def _reencode(source: str, output: str, options: CutOptions) -> int:
    """Encode the frames shown in [start, start + duration) at the source's frame rate; returns their count."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = options.threads
        rate = source_rate(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        # yuv420p needs even sizes: an odd last row or column is cropped away.
        filters = [("fps", f"{rate.numerator}/{rate.denominator}"),
                   ("crop", f"{width - width % 2}:{height - height % 2}:0:0"), ("format", "yuv420p")]
        graph = filter_graph(stream, filters, options.threads)
        errors: list[str] = []
        encoded = 0
        with av.open(output, "w") as out:
            encoder = add_h264_stream(out, rate, width - width % 2, height - height % 2,
                                      {"preset": options.preset, "crf": str(options.crf),
                                       "g": str(keyframe_interval(rate))}, options.threads)
            end = options.start + options.duration
            for frame in itertools.chain(_segment_frames(container, stream, options.start, end, errors), [None]):
                graph.vpush(frame)  # None flushes the fps filter
                for filtered in pull_frames(graph):
                    out.mux(encoder.encode(filtered))
                    encoded += 1
            out.mux(encoder.encode())
    if not encoded:
        raise SourceError("segment outside the movie", f"no frame is shown after {options.start:g} s")
    return encoded


def verify_cut(path: str, options: CutOptions, movie_seconds: float, exact_frames: int | None) -> str | None:
    """Why the cut at `path` is unusable (None if it is fine): it must open, cover the segment (or the movie's
    rest), and decode its first and last frames."""
    try:
        with open_video(path) as reader:
            wanted = min(options.duration, movie_seconds - options.start)
            if exact_frames is not None and reader.num_frames != exact_frames:
                return f"the cut has {reader.num_frames} frames, {exact_frames} were encoded"
            if reader.duration < wanted - 1.0 / reader.fps - 1e-6:
                return f"the cut lasts {reader.duration:.2f} s, not {wanted:.2f} s"
            reader.get_frames([0, reader.num_frames - 1])
    except VideoDecodeError as error:
        return error.reason
    return None


def _movie_seconds(path: str) -> float:
    with av.open(path) as container:
        if not container.streams.video:
            raise SourceError("no video stream", "the file has no video stream")
        stream = container.streams.video[0]
        if stream.duration:
            return float(stream.duration * stream.time_base)
        if container.duration:
            return container.duration / av.time_base
        raise SourceError("no duration", "the movie's length is unknown")


def _existing_cuts(dst: str, video_id: str) -> list[str]:
    return [os.path.join(dst, n) for n in sorted(os.listdir(dst))
            if not n.startswith(".") and video_id_of(n) == video_id and n != video_id]


def cut_one(task: CutTask) -> Outcome:
    """Cut one movie (see the module docstring) unless a verified cut exists."""
    options = task.options
    try:
        movie_seconds = _movie_seconds(task.source)
        if movie_seconds <= options.start:
            raise SourceError("too short", f"the movie lasts {movie_seconds:.1f} s; the segment starts at "
                                           f"{options.start:g} s")
        existing = _existing_cuts(task.dst, task.name)
        if len(existing) == 1 and verify_cut(existing[0], options, movie_seconds, None) is None:
            return Outcome(task.name, SKIPPED)
        keyframe = copyable_keyframe(task.source, options.start)
        ext = os.path.splitext(task.source)[1] if keyframe is not None else ".mp4"
        final = os.path.join(task.dst, task.name + ext)
        temporary = temporary_path(final)
        try:
            if keyframe is not None:
                _stream_copy(task.source, temporary, keyframe, options.start + options.duration)
                frames = None
            else:
                frames = _reencode(task.source, temporary, options)
            problem = verify_cut(temporary, options, movie_seconds, frames)
            if problem:
                return Outcome(task.name, FAILED, "cut does not verify", problem)
            publish(temporary, final)
        finally:
            remove_path(temporary)
        for other in existing:  # a stale cut of another container would make two files for one id
            if other != final:
                remove_path(other)
    except SourceError as error:
        return Outcome(task.name, FAILED, error.kind, str(error))
    except av.error.FFmpegError as error:
        return Outcome(task.name, FAILED, "unreadable", f"PyAV: {error.strerror or error}")
    return Outcome(task.name, DONE, detail="copied" if keyframe is not None else "re-encoded")


def cut_movies(movies: str, dst: str, options: CutOptions, workers: int) -> list[Outcome]:
    """Run ava-cut over the movies in `movies`; failures go to DST/ava_cut_failures.csv."""
    sources = find_movies(movies)
    os.makedirs(dst, exist_ok=True)
    remove_stale_temporaries(dst, recursive=False)
    tasks = [CutTask(video_id, path, dst, options) for video_id, path in sources.items()]
    outcomes = run_jobs(cut_one, tasks, workers, "ava-cut")
    write_failures(os.path.join(dst, CUT_FAILURES), outcomes)
    return outcomes


# ----------------------------------------------------------------------------------------------- ava-frames


@dataclass(frozen=True)
class FramesOptions:
    fps: Fraction = Fraction(30)
    quality: int = 2  # FFmpeg's JPEG quantiser (2 best..31); PySlowFast's `-q:v 1` is clamped to 2 as well
    threads: int = 0


@dataclass(frozen=True)
class FramesTask:
    name: str  # the video id
    source: str
    output: str  # the frame folder
    options: FramesOptions


def frame_name(video_id: str, index: int) -> str:
    """The file of frame `index` (0-based): <video>_<index + 1:06d>.jpg, as ffmpeg's %06d numbering from 1."""
    return f"{video_id}_{index + 1:06d}.jpg"


def _jpeg_encoder(stream: av.video.stream.VideoStream, rate: Fraction, quality: int) -> av.codec.CodecContext:
    encoder = av.codec.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = stream.codec_context.width, stream.codec_context.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = 1 / rate
    encoder.qmin = encoder.qmax = quality  # a fixed quantiser: what `ffmpeg -q:v` sets for mjpeg
    return encoder


def extract_frames(source: str, folder: str, video_id: str, options: FramesOptions) -> int:
    """Write the frames of `source` at `options.fps` as JPEGs into `folder`; returns their count."""
    os.makedirs(folder)
    written = 0
    with av.open(source) as container:
        if not container.streams.video:
            raise SourceError("no video stream", "the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = options.threads
        rate = options.fps
        graph = filter_graph(stream, [("fps", f"{rate.numerator}/{rate.denominator}"), ("format", "yuvj420p")],
                             options.threads)
        encoder = _jpeg_encoder(stream, rate, options.quality)
        errors: list[str] = []

        def write(frames) -> None:
            nonlocal written
            for frame in frames:
                for packet in encoder.encode(frame):
                    with open(os.path.join(folder, frame_name(video_id, written)), "wb") as f:
                        f.write(bytes(packet))
                    written += 1

        for packet in container.demux(stream):
            for frame in decode_packet(packet, errors):
                graph.vpush(frame)
                write(pull_frames(graph))
        graph.vpush(None)
        write(pull_frames(graph))
        write([None])  # flush the encoder
    if not written:
        raise SourceError("no frames", "no decodable video frame")
    return written


def verify_frames(folder: str, video_id: str, expected: int | None = None) -> tuple[str | None, int]:
    """(why the frame folder is unusable or None, its frame count): frames must be numbered 1..N without gaps
    (N = `expected` if given), and the first and last must decode."""
    paths = list_frame_images(folder)
    names = [os.path.basename(p) for p in paths]
    if not names:
        return "no frames", 0
    if names != [frame_name(video_id, i) for i in range(len(names))]:
        return f"the frames are not numbered {frame_name(video_id, 0)}..{frame_name(video_id, len(names) - 1)}", 0
    if expected is not None and len(names) != expected:
        return f"{len(names)} frames on disk, {expected} were written", 0
    try:
        with open_video([paths[0], paths[-1]]) as reader:
            reader.get_frames([0, 1] if len(paths) > 1 else [0])
    except VideoDecodeError as error:
        return error.reason, 0
    return None, len(names)


def frames_one(task: FramesTask) -> Outcome:
    """Extract one video's frames unless a verified frame folder exists; the frame count is the detail."""
    if os.path.isdir(task.output):
        problem, count = verify_frames(task.output, task.name)
        if problem is None:
            return Outcome(task.name, SKIPPED, detail=count)
    temporary = temporary_path(task.output)
    try:
        count = extract_frames(task.source, temporary, task.name, task.options)
        problem, _ = verify_frames(temporary, task.name, expected=count)
        if problem:
            return Outcome(task.name, FAILED, "frames do not verify", problem)
        publish(temporary, task.output)
    except SourceError as error:
        return Outcome(task.name, FAILED, error.kind, str(error))
    except av.error.FFmpegError as error:
        return Outcome(task.name, FAILED, "unreadable", f"PyAV: {error.strerror or error}")
    finally:
        remove_path(temporary)
    return Outcome(task.name, DONE, detail=count)


def read_id_list(path: str) -> list[str]:
    """Video ids, one per line (an extension is dropped; blank lines and #-comments are skipped)."""
    with open(path, encoding="utf-8") as f:
        return [video_id_of(line) for line in f if line.strip() and not line.lstrip().startswith("#")]


def ids_from_annotations(folder: str) -> dict[str, list[str]]:
    """Split -> the video ids of its ground-truth box file (first column) in an AVA annotation folder."""
    splits = {}
    for split, name in GROUNDTRUTH_FILES.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--annotation-dir: {path} does not exist")
        with open(path, newline="", encoding="utf-8") as f:
            splits[split] = sorted({row[0] for row in csv.reader(f) if row})
    return splits


def frame_list_text(video_ids: Sequence[str], counts: dict[str, int]) -> str:
    """A PySlowFast frame list of the videos (in the given order) that have frames."""
    lines = [FRAME_LIST_HEADER]
    listed = [v for v in video_ids if counts.get(v)]
    for video_index, video_id in enumerate(listed):
        lines += [f'{video_id} {video_index} {i} {video_id}/{frame_name(video_id, i)} ""'
                  for i in range(counts[video_id])]
    return "\n".join(lines) + "\n"


@dataclass
class FramesReport:
    outcomes: list[Outcome]
    lists: dict[str, str]  # split -> frame list written
    listed: dict[str, int]  # split -> videos in its list
    without_frames: dict[str, list[str]]  # split -> ids of the split with no frames (missing or failed)
    unlisted: list[str]  # extracted videos in no split


def default_frame_list_dir(frame_dir: str) -> str:
    """`frame_lists` next to the frame folder: PySlowFast's layout, which configs/AVA use."""
    return os.path.join(os.path.dirname(os.path.abspath(frame_dir)), "frame_lists")


def extract_all(videos: str, dst: str, splits: dict[str, list[str]], options: FramesOptions, workers: int,
                frame_list_dir: str | None = None) -> FramesReport:
    """Run ava-frames over `videos` and write the frame lists of `splits` (split -> video ids)."""
    sources = find_movies(videos)
    list_dir = frame_list_dir or default_frame_list_dir(dst)
    os.makedirs(dst, exist_ok=True)
    remove_stale_temporaries(dst, recursive=False)
    tasks = [FramesTask(v, path, os.path.join(dst, v), options) for v, path in sources.items()]
    outcomes = run_jobs(frames_one, tasks, workers, "ava-frames")
    write_failures(os.path.join(dst, FRAMES_FAILURES), outcomes)
    counts = {o.name: o.detail for o in outcomes if o.status != FAILED}
    lists, listed, without = {}, {}, {}
    for split, ids in splits.items():
        ordered = sorted(set(ids))
        lists[split] = os.path.join(list_dir, f"{split}.csv")
        write_text_atomic(lists[split], frame_list_text(ordered, counts))
        listed[split] = sum(1 for v in ordered if counts.get(v))
        without[split] = [v for v in ordered if not counts.get(v)]
    in_splits = {v for ids in splits.values() for v in ids}
    return FramesReport(outcomes, lists, listed, without, sorted(v for v in counts if v not in in_splits))


_ID_PREVIEW = 5


def frames_summary(report: FramesReport) -> str:
    lines = []
    for split, path in report.lists.items():
        line = f"ava-frames: {split}: {report.listed[split]} videos -> {path}"
        missing = report.without_frames[split]
        if missing:
            line += (f"; {len(missing)} ids of the split have no frames: {', '.join(missing[:_ID_PREVIEW])}"
                     f"{' ...' if len(missing) > _ID_PREVIEW else ''}")
        lines.append(line)
    if report.unlisted:
        more = " ..." if len(report.unlisted) > _ID_PREVIEW else ""
        lines.append(f"ava-frames: {len(report.unlisted)} extracted videos are in no split: "
                     f"{', '.join(report.unlisted[:_ID_PREVIEW])}{more}")
    return "\n".join(lines)

