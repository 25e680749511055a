"""PySlowFast frame lists: one `original_video_id video_idx frame_idx path labels` row per extracted frame.

SSv2 and AVA ship them (`{train,val}.csv`, space separated, after a header line). Each dataset groups the rows its
own way; reading them is done once, here.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from iopath.common.file_io import g_pathmgr

HEADER = ("original_vido_id", "video_id", "frame_id", "path", "labels")  # PySlowFast's spelling


class FrameRow(NamedTuple):
    """One frame of a frame list: its video, its index in the video and its path (relative to the frame folder)."""

    video_id: str
    frame_index: int
    path: str


def read_frame_list(path: str, require_header: bool = False) -> Iterator[FrameRow]:
    """The rows of a frame list, in file order; blank lines are skipped and errors name the file and line.

    With `require_header` the first line must be PySlowFast's HEADER; otherwise a first line whose frame index
    column is not a number is taken for a header (AVA's lists come with and without one).
    """
    if not g_pathmgr.isfile(path):
        raise FileNotFoundError(f"Frame list not found: {path}")
    with g_pathmgr.open(path, "r") as f:
        for line_number, line in enumerate(f, start=1):
            row = line.split()
            if line_number == 1 and require_header:
                if row != list(HEADER):
                    raise ValueError(f"{path}:1: expected the header {' '.join(HEADER)!r}, got {' '.join(row)!r}")
                continue
            if not row or (line_number == 1 and len(row) >= 3 and not row[2].isdigit()):
                continue  # a blank line or the header
            if len(row) < 4 or not row[2].isdigit():
                raise ValueError(f"{path}:{line_number}: expected '{' '.join(HEADER)}' with a whole-number "
                                 f"frame_id, got {line.strip()!r}")
            yield FrameRow(row[0], int(row[2]), row[3])
