"""A dependency-free progress line for long work (training, data preparation, decoding).

On a terminal it redraws one line in place; otherwise (CI logs, files) it prints
a line at most every ``log_every`` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, desc: str, total: int | None = None, unit: str = "it", stream: TextIO | None = None,
                 log_every: float = 30.0, enabled: bool = True):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = 0.2 if self.tty else log_every
        self.enabled = enabled
        self.n = 0
        self.start = self._last = time.monotonic()
        self.postfix = ""

    def update(self, n: int = 1, **postfix: object) -> None:
        self.n += n
        if postfix:
            self.postfix = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
        now = time.monotonic()
        if self.enabled and now - self._last >= self.log_every:
            self._last = now
            self._draw(now)

    def _draw(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            pct = 100.0 * self.n / self.total
            eta = (self.total - self.n) / rate if rate > 0 else float("inf")
            head = f"{self.desc}: {pct:5.1f}% {self.n}/{self.total} {self.unit} [{_fmt(elapsed)}<{_fmt(eta)}]"
        else:
            head = f"{self.desc}: {self.n} {self.unit} [{_fmt(elapsed)}]"
        line = f"{head} {rate:.3g} {self.unit}/s {self.postfix}".rstrip()
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic(), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
