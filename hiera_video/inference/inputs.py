"""What `--input` names: video files, folders (searched recursively for video files) and glob patterns, or a
Kinetics-format video list (.csv); each video with the relative path its outputs are named after."""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

from hiera_video.data.preparation.common import VIDEO_EXTENSIONS, find_videos


@dataclass(frozen=True)
class VideoInput:
    """A video to process: where it is, and its path relative to what named it (the folder searched, the glob's
    fixed part, the list's DATA.PATH_PREFIX; a file given by name is its own name)."""

    path: str
    relative: str


@dataclass(frozen=True)
class Failure:
    """An input that could not be processed, and why."""

    path: str
    error: str


def _glob_root(pattern: str) -> str:
    """The leading folders of `pattern` without wildcards (outputs keep the path below them)."""
    parts = []
    for part in pattern.split(os.sep)[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return os.sep.join(parts) or "."


def _from_folder(folder: str) -> list[VideoInput]:
    return [VideoInput(os.path.join(folder, relative), relative) for relative in find_videos(folder)]


def expand_inputs(names: Sequence[str]) -> tuple[list[VideoInput], list[Failure]]:
    """The videos named by `names` in the order given (each folder's and glob's sorted), each once, and the names
    that match nothing. Folders are searched recursively for files with a video extension; a file named directly
    or by a glob is taken whatever its extension."""
    videos: list[VideoInput] = []
    failures: list[Failure] = []
    for name in names:
        if os.path.isdir(name):
            found = _from_folder(name)
            if not found:
                failures.append(Failure(name, f"the folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})"))
            videos.extend(found)
        elif os.path.isfile(name):
            videos.append(VideoInput(name, os.path.basename(name)))
        elif glob.has_magic(name):
            matches = sorted(glob.glob(name, recursive=True))
            if not matches:
                failures.append(Failure(name, "no file matches this pattern"))
            root = _glob_root(name)
            for match in matches:
                if os.path.isdir(match):
                    videos.extend(VideoInput(v.path, os.path.relpath(v.path, root)) for v in _from_folder(match))
                else:
                    videos.append(VideoInput(match, os.path.relpath(match, root)))
        else:
            failures.append(Failure(name, "no such file or folder"))
    seen: set[str] = set()
    unique = []
    for video in videos:
        key = os.path.realpath(video.path)
        if key not in seen:
            seen.add(key)
            unique.append(video)
    return unique, failures


def read_video_list(csv_path: str, path_prefix: str, separator: str) -> list[VideoInput]:
    """The videos of a Kinetics-format list (`path[<separator>label]` per line; labels are ignored), relative to
    `path_prefix` (DATA.PATH_PREFIX) as in training; an absolute path's relative path is its path below the root.
    Errors name the file and line."""
    videos = []
    with open(csv_path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(separator, 1) if separator.strip() else line.rsplit(None, 1)
            path = parts[0].strip() if len(parts) == 2 and parts[1].strip().lstrip("-").isdigit() else line
            relative = os.path.normpath(path).lstrip(os.sep)  # an absolute path keeps its folders below the root
            if relative.split(os.sep)[0] == "..":
                raise ValueError(f"{csv_path}:{line_number}: {path!r} leads outside DATA.PATH_PREFIX")
            videos.append(VideoInput(os.path.join(path_prefix, path) if path_prefix else path, relative))
    if not videos:
        raise ValueError(f"Video list {csv_path} is empty")
    return videos
