"""Shared helpers of the speed benchmarks: interleaved timing, medians, matmul peak, peak memory, tables.

The machines these run on are shared and noisy, so every comparison interleaves its contenders (A B A B ...)
and reports medians: a burst of load then slows both sides of a ratio instead of one.
"""
from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time
from collections.abc import Sequence
from typing import Callable

import torch

Step = Callable[[], object]


def interleaved_times(steps: dict[str, Step], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of `repeats` calls of every step, run round-robin after `warmup` calls each.

    Each round starts one step later (A B C, B C A, C A B, ...), so no step always follows the same neighbour:
    a step that evicts the caches (a large matmul) would otherwise always slow down the one after it.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def matmul_step(size: int = 2048, calls: int = 4) -> tuple[Step, float]:
    """A step of `calls` float32 [size, size] matmuls, and its FLOPs: the machine's practical FLOP/s peak."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)

    def step() -> None:
        for _ in range(calls):
            torch.mm(a, b, out=out)

    return step, 2.0 * size**3 * calls


def load_note() -> str:
    """The 1/5/15-minute load averages against the core count, for the record of how noisy a run was."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


# ----------------------------------------------------------------------------------------------------------------
# Peak memory. torch has no peak-memory counter for CPU tensors (only for CUDA), so the peak is read from the
# kernel: /proc/self/clear_refs resets the process's resident high-water mark (VmHWM), and glibc is told to hand
# every large freed block back to the OS, so the high-water mark of one step is the memory that step needed.
# ----------------------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_SMALL_BLOCK = 1 << 16


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Measures the extra resident memory a step needs at its peak (bytes above the resident set before it).

    Creating one switches glibc to returning freed blocks of 64 KB and more to the OS at once, which makes
    later allocations slower: measure memory after all timings. `available` is False off Linux/glibc.
    """

    def __init__(self) -> None:
        self._libc = _libc()
        self.available = self._libc is not None and os.access("/proc/self/clear_refs", os.W_OK)
        if self.available:
            self._libc.mallopt(_M_MMAP_THRESHOLD, _SMALL_BLOCK)
            self._libc.mallopt(_M_TRIM_THRESHOLD, _SMALL_BLOCK)

    def measure(self, step: Step) -> int | None:
        """Peak extra bytes of one call of `step`, or None when the platform cannot tell."""
        if not self.available:
            return None
        gc.collect()
        self._libc.malloc_trim(0)
        before = _status_bytes("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        step()
        return _status_bytes("VmHWM") - before


def format_mb(num_bytes: int | None) -> str:
    """Bytes as MB for a table cell ("n/a" when unknown)."""
    return "n/a" if num_bytes is None else f"{num_bytes / 1e6:.0f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
