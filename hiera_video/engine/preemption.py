"""Stop requests from the outside world (Slurm's time-limit warning, preemption, `scontrol requeue`, Ctrl-C-free
kills), turned into a clean stop at the next iteration boundary, agreed on by every rank.

Slurm delivers SIGTERM when it preempts or requeues a job and, with `--signal=USR2@S`, SIGUSR2 S seconds before the
time limit, to every process of the step (hiera_video.utils.stop_signals: data-loader workers ignore them). A signal
handler may fire in the middle of an optimiser step, so it only raises a flag; the trainer polls the flag between
steps, during evaluations and after the epoch-end save, saves a checkpoint and stops.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import torch

from hiera_video.utils.distributed import any_rank
from hiera_video.utils.stop_signals import STOP_SIGNALS

logger = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised by the trainer after it saved a checkpoint because a stop signal arrived."""

    def __init__(self, signal_name: str, checkpoint: str) -> None:
        super().__init__(f"Stopped on {signal_name}; state saved in {checkpoint}")
        self.signal_name = signal_name
        self.checkpoint = checkpoint


class StopFlag:
    """Records the first stop signal received; `agreed()` shares it with all ranks."""

    def __init__(self) -> None:
        self.signal_name = ""
        self._previous: dict[int, Any] = {}  # signal number -> the handler installed before

    def install(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        if not self.signal_name:
            self.signal_name = signal.Signals(signum).name
            logger.warning("Received %s: will save a checkpoint and stop after the current iteration",
                           self.signal_name)

    def agreed(self, device: torch.device) -> bool:
        """True on every rank as soon as any rank received a stop signal (a collective: call it on all ranks)."""
        raised = any_rank(bool(self.signal_name), device)
        if raised and not self.signal_name:
            self.signal_name = "SIGTERM(other rank)"
        return raised
