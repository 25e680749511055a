"""What every preparation job shares: finding videos, temporary names and atomic publication, the parallel
runner (worker processes, progress bar, crash isolation), failure reports and the end-of-run summary.

Outputs are written under a hidden temporary name in their final folder (`.<stem>.tmp-<pid>-<random><ext>`) and
renamed into place with os.replace only once complete and verified, so a killed run leaves no partial file under a
final name; temporaries of dead processes are removed by the next run (remove_stale_temporaries).
"""
from __future__ import annotations

import collections
import csv
import io
import multiprocessing
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Protocol

from tqdm import tqdm

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp",
                    ".ogv", ".ts")
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
CRASH_REASON = "the worker process died while processing this input (a decoder crash or the out-of-memory killer)"
_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}(\.[^.]*)?$")


@dataclass(frozen=True)
class Outcome:
    """What one job did with one input: `status` is DONE, SKIPPED or FAILED; `kind` a short reason category
    for the counts, `reason` the full message."""

    name: str
    status: str
    kind: str = ""
    reason: str = ""
    detail: object = None  # job-specific result (e.g. the frame count of an extracted video)


class Task(Protocol):
    name: str


# ----------------------------------------------------------------------------------------------- files


def find_videos(root: str) -> list[str]:
    """Paths (relative to `root`, sorted) of the files with a video extension under `root`; hidden files and
    folders (temporaries, `.git`) are left out."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def temporary_path(final: str) -> str:
    """A hidden name next to `final`, unique to this process, keeping the extension (muxers choose by it)."""
    folder, name = os.path.split(final)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{ext}")


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # the state follows the command name
    except (OSError, IndexError):  # no /proc (not Linux), or it just ended
        return True


def remove_path(path: str) -> None:
    """Remove a file or a folder tree, if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def remove_stale_temporaries(root: str, recursive: bool = True) -> int:
    """Remove the temporaries under `root` (or directly in it) left by processes that no longer run (killed
    earlier runs). Temporaries of live processes are kept: another run may be writing into the same folder.
    Returns the count."""
    removed = 0
    for folder, subfolders, files in os.walk(root):
        for name in list(files) + list(subfolders):
            match = _TEMPORARY.match(name)
            if match and not process_alive(int(match.group(1))):
                remove_path(os.path.join(folder, name))
                removed += 1
        subfolders[:] = [d for d in subfolders if recursive and not _TEMPORARY.match(d)]
    return removed


def publish(temporary: str, final: str) -> None:
    """Move a complete `temporary` file or folder to its `final` name in one rename.

    A folder cannot replace a non-empty folder in one rename: the old one is first renamed out of the way (so
    `final` is, for a moment, missing, but never partial) and then removed.
    """
    if os.path.isdir(temporary) and os.path.isdir(final):
        old = temporary_path(final)
        os.replace(final, old)
        os.replace(temporary, final)
        remove_path(old)
        return
    os.replace(temporary, final)


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to `path` so that it appears complete or not at all."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        publish(temporary, path)
    except BaseException:
        remove_path(temporary)
        raise


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV text (quoted where a value needs it), header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_failures(path: str, outcomes: Sequence[Outcome]) -> int:
    """Write the failed outcomes as `path,reason` rows to `path` (atomically); returns their count.

    An empty report (header only) is written too, so a stale list from an earlier run never survives.
    """
    failed = [o for o in outcomes if o.status == FAILED]
    write_text_atomic(path, csv_text(["path", "reason"], [(o.name, o.reason) for o in failed]))
    return len(failed)


# ----------------------------------------------------------------------------------------------- runner


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def codec_threads(workers: int) -> int:
    """Decoder/encoder threads per worker: FFmpeg's automatic choice (0) for a single worker, as the ffmpeg
    command uses; otherwise the cores shared out, so N workers do not each start a thread per core."""
    return 0 if workers <= 1 else max(1, default_workers() // workers)


def _call(job: Callable[[Task], Outcome], task: Task) -> Outcome:
    try:
        return job(task)
    except Exception as error:  # noqa: BLE001 - an unexpected error is this input's failure, never the run's end
        return Outcome(task.name, FAILED, "error", f"{type(error).__name__}: {error}")


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork: workers start at once without importing torch and PyAV again; the parent runs no decoder or torch
    # op before the pool starts, so no thread state is copied into them. Elsewhere the platform default.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


class _Progress:
    """A tqdm bar (shown on terminals only) with the running done / skipped / failed counts."""

    def __init__(self, total: int, desc: str):
        tqdm.monitor_interval = 0  # no monitor thread: the workers are forked from this process
        self.counts = collections.Counter()
        self.bar = tqdm(total=total, desc=desc, unit="video", disable=None, dynamic_ncols=True, file=sys.stderr)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        self.bar.set_postfix({key: self.counts[key] for key in (DONE, SKIPPED, FAILED)}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _run_pool(job: Callable[[Task], Outcome], tasks: Sequence[Task], queue: collections.deque, workers: int,
              outcomes: list, progress: _Progress) -> list[int]:
    """Run the queued task indices in a pool of `workers`, at most one task in flight per worker.

    Returns [] when the queue is done, or the indices in flight when a worker died (the pool is then broken);
    keeping one task per worker makes those few the only suspects.
    """
    running: dict = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    index = queue.popleft()
                    running[pool.submit(_call, job, tasks[index])] = index
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                lost = []
                for future in finished:
                    index = running.pop(future)
                    try:
                        outcomes[index] = future.result()
                    except BrokenProcessPool:  # a worker died: this task may or may not be the cause
                        lost.append(index)
                        continue
                    progress.add(outcomes[index])
                if lost:
                    return sorted(lost + list(running.values()))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return []


def run_jobs(job: Callable[[Task], Outcome], tasks: Sequence[Task], workers: int, desc: str) -> list[Outcome]:
    """Outcomes of `job` on every task (in task order), run in `workers` worker processes with a progress bar.

    An exception in a job is that task's failure. A worker process that dies (a decoder segfault) breaks the
    pool: the tasks it may have been running are then run again one at a time, and the one that kills its worker
    again fails with CRASH_REASON, so one bad input never stops the run.
    """
    outcomes: list[Outcome | None] = [None] * len(tasks)
    queue = collections.deque(range(len(tasks)))
    progress = _Progress(len(tasks), desc)
    try:
        while queue:
            for index in _run_pool(job, tasks, queue, max(1, workers), outcomes, progress):
                if _run_pool(job, tasks, collections.deque([index]), 1, outcomes, progress):
                    outcomes[index] = Outcome(tasks[index].name, FAILED, "crashed", CRASH_REASON)
                    progress.add(outcomes[index])
    finally:
        progress.close()
    return outcomes


# ----------------------------------------------------------------------------------------------- summary


def summary(job: str, outcomes: Sequence[Outcome], report: str = "") -> str:
    """`job: N inputs: a done, b skipped (already done), c failed (listed in REPORT)` and the failure counts by
    kind, one line each."""
    counts = collections.Counter(o.status for o in outcomes)
    line = (f"{job}: {len(outcomes)} inputs: {counts[DONE]} done, {counts[SKIPPED]} skipped (already done), "
            f"{counts[FAILED]} failed")
    if report and counts[FAILED]:
        line += f" (listed in {report})"
    kinds = collections.Counter(o.kind for o in outcomes if o.status == FAILED)
    return "\n".join([line] + [f"  {count:6d} {kind}" for kind, count in kinds.most_common()])
