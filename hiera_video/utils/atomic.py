"""Atomic file writes through iopath: write a hidden temporary file in the target folder, fsync, rename.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a torn write.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import IO

from iopath.common.file_io import g_pathmgr


def _is_local(path: str) -> bool:
    """Whether iopath serves `path` from the local file system (no `scheme://` prefix)."""
    return "://" not in path


def fsync_directory(folder: str) -> None:
    """Makes renames inside the local `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(src: str, dst: str) -> None:
    if _is_local(dst):
        # iopath's mv refuses to overwrite an existing file; os.replace is the atomic POSIX rename that does.
        os.replace(src, dst)
        return
    if g_pathmgr.exists(dst):
        g_pathmgr.rm(dst)
    if not g_pathmgr.mv(src, dst):
        raise OSError(f"Could not move {src} to {dst}")


def temporary_name(path: str) -> str:
    """The hidden temporary name used while `path` is being written (never matches a final file name)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Open `path` for writing ("w" or "wb") so that it appears complete or not at all."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(path) or "."
    g_pathmgr.mkdirs(folder)
    tmp_path = temporary_name(path)
    try:
        with g_pathmgr.open(tmp_path, mode) as f:
            yield f
            f.flush()
            if _is_local(tmp_path):
                os.fsync(f.fileno())
        _replace(tmp_path, path)
    except BaseException:
        if g_pathmgr.exists(tmp_path):
            g_pathmgr.rm(tmp_path)
        raise
    if _is_local(folder):
        fsync_directory(folder)
