"""Download a URL into a file once: atomically, with a progress bar, checked for length and (when known) SHA-256.

Hand-written over torch.hub.download_url_to_file, which also writes to a temporary file and renames it, because
that function saves a body the server cut short (it never compares the byte count with Content-Length) unless a
hash is given, and waits forever on a stalled connection (no timeout). The official Hiera files have no published
hash, so the length check is what stops a truncated file from being cached.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator

from filelock import FileLock, Timeout
from tqdm import tqdm

from hiera_video.utils.atomic import atomic_open

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60  # per connection attempt and per read: a stalled server fails instead of hanging


class DownloadError(OSError):
    """A file could not be downloaded: no connection, an HTTP error, a body cut short or a wrong SHA-256."""


def _stale_temporaries(dst: str) -> list[str]:
    """Temporaries of `dst` (atomic.temporary_name) left by downloads that were killed."""
    folder, name = os.path.split(dst)
    return glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*"))


@contextlib.contextmanager
def _locked(dst: str) -> Iterator[None]:
    """Hold the lock of `dst`: one download per file at a time across processes (e.g. the ranks of a job)."""
    folder, name = os.path.split(dst)
    lock = FileLock(os.path.join(folder, f".{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("Another process is downloading %s; waiting for it to finish", dst)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _stream(url: str, dst: str, sha256: str | None, progress: bool) -> str:
    """Write the body of `url` to `dst` atomically when complete and of hash `sha256` (if given); returns its
    SHA-256 (hex). Raises DownloadError, leaving nothing under `dst`."""
    request = urllib.request.Request(url, headers={"User-Agent": "hiera_video"})
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response, atomic_open(dst, "wb") as f:
            length = response.headers.get("Content-Length")
            expected = int(length) if length else None
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=os.path.basename(dst),
                      disable=not progress) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            # Raised inside atomic_open: the temporary is deleted, `dst` never appears.
            if expected is not None and size != expected:
                raise DownloadError(f"cannot download {url}: the connection ended after {size} of {expected} bytes")
            if sha256 is not None and digest.hexdigest() != sha256.lower():
                raise DownloadError(f"{url}: the downloaded file has SHA-256 {digest.hexdigest()}, expected "
                                    f"{sha256.lower()}; it was not kept (a corrupted download or a changed file)")
    except DownloadError:
        raise
    except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts and resets are OSErrors
        reason = err.reason if type(err) is urllib.error.URLError else err  # URLError's str() wraps the reason
        raise DownloadError(f"cannot download {url}: {reason}") from err
    return digest.hexdigest()


def download_once(url: str, dst: str, sha256: str | None = None, progress: bool = True) -> str:
    """`dst` when it exists; otherwise download `url` to it first and return it.

    The body goes to a hidden temporary next to `dst`, renamed to `dst` only when complete (as long as the server
    announced) and, when `sha256` is given, of that hash: a failed or killed download leaves nothing under `dst`
    (a killed one leaves its temporary, which the next download removes). Processes sharing the folder take turns
    (a file lock); one that waited finds the file and returns it.
    """
    if os.path.exists(dst):
        return dst
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    with _locked(dst):
        if os.path.exists(dst):  # downloaded by the process we waited for
            return dst
        for stale in _stale_temporaries(dst):  # holding the lock, no live download writes these
            os.remove(stale)
        logger.info("Downloading %s to %s", url, dst)
        digest = _stream(url, dst, sha256, progress)
        logger.info("Downloaded %s (%d bytes, SHA-256 %s)", dst, os.path.getsize(dst), digest)
    return dst
