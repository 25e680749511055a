"""The signals that ask a job to stop: Slurm sends SIGTERM when it preempts or requeues a job and, with
`--signal=USR2@S`, SIGUSR2 S seconds before the time limit, to every process of the step.

The training process owns them (hiera_video.engine.preemption turns them into a checkpoint and a clean stop); the
processes it starts to help it, data-loader workers, ignore them. A spawned worker would otherwise die of SIGUSR2
(its default action) and the trainer fail with "DataLoader worker exited unexpectedly" before it could save.
"""
from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Blocks the stop signals while helper processes start: the signal mask is inherited through fork and exec
    (not by forkserver's children), so a worker starts with them blocked until `ignore_stop_signals`; this process
    receives any that arrived when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals() -> None:
    """In a helper process: ignore the stop signals (dropping any pending) and unblock them."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
