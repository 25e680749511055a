"""Progress over a known number of iterations: a tqdm bar on a terminal, periodic log lines otherwise."""
from __future__ import annotations

import datetime
import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

logger = logging.getLogger(__name__)


def eta_string(seconds: float) -> str:
    """Seconds as `H:MM:SS` (`D days, H:MM:SS` past a day); "unknown" when not finite."""
    if not math.isfinite(seconds):
        return "unknown"
    return str(datetime.timedelta(seconds=int(round(max(0.0, seconds)))))


class ProgressReporter:
    """Progress over `total` iterations: a tqdm bar when the stream is a TTY, otherwise a plain log line every
    `period` iterations and at the end (so log files get no terminal control characters)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, period: int = 50,
                 stream: TextIO | None = None, initial: int = 0) -> None:
        """`initial`: iterations already done (a resumed epoch); they do not count towards the speed."""
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.period = period
        self.n = self.initial = initial
        self._start = time.monotonic()
        stream = stream or sys.stdout
        is_tty = getattr(stream, "isatty", lambda: False)()
        self._bar = (tqdm(total=total, desc=desc, file=stream, dynamic_ncols=True, initial=initial)
                     if enabled and is_tty else None)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by `n` iterations; `postfix` values (loss=..., lr=...) are shown next to the count."""
        before, self.n = self.n, self.n + n
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif self.n // self.period > before // self.period or self.n == self.total:
            logger.info(self._line(postfix))

    def _line(self, postfix: Mapping[str, Any]) -> str:
        elapsed = time.monotonic() - self._start
        done_here = self.n - self.initial
        remaining = elapsed / done_here * (self.total - self.n) if done_here > 0 else math.inf
        parts = [f"{self.desc}: {self.n}/{self.total}", f"elapsed {eta_string(elapsed)}",
                 f"eta {eta_string(remaining)}"]
        parts += [f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                  for key, value in postfix.items()]
        return "  ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
