"""A tiny progress bar in the manner of tqdm, with no dependency.

    with Progress(total=1000, desc="train") as bar:
        for step in range(1000):
            ...
            bar.update(1, loss=loss)

draws  `train  43% |████▎     | 430/1000 [00:12<00:16, 35.2 it/s] loss=0.412`.

On a terminal the line is redrawn in place with `\\r`, at most every `min_interval` seconds so
that drawing never costs more than the work it reports. When the output is not a terminal (CI
logs, pipes, files) every `\\r` would become one more line of log, so a plain line is written at
most every `LOG_INTERVAL` seconds, plus the final one. `unit="B"` shows sizes in KB/MB/GB (powers
of 1000, as the labels say) and speed in MB/s, for downloads. Without a `total` (a stream of
unknown length) the bar and the time left are left out.
"""
from __future__ import annotations

import sys
import time

_now = time.monotonic  # tests swap in a fake clock
LOG_INTERVAL = 10.0  # seconds between lines when the output is not a terminal
BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks, so the bar moves smoothly on a 10-cell bar


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _scale(x: float) -> tuple[float, str]:
    """Divisor and prefix for a human-readable size: 90_900_000 -> (1e6, "M")."""
    for i, prefix in enumerate(("", "K", "M", "G")):
        if abs(x) < 1000 ** (i + 1):
            return 1000.0 ** i, prefix
    return 1000.0 ** 4, "T"


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Counts `n` up to `total` and draws a one-line bar on `file` (default: sys.stderr)."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", file=None,
                 min_interval: float = 0.2, initial: int = 0):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr  # looked up now, not at import
        self.n = self.initial = initial  # `initial`: bytes already there when resuming
        self.postfix: dict = {}
        self.closed = False
        isatty = getattr(self.file, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = min_interval if self.tty else max(min_interval, LOG_INTERVAL)
        self.start = self.last_draw = _now()
        self._last = ""  # the last line drawn: its length blanks a longer tail; not repeated
        if self.tty:
            self._draw()

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by `n`; keyword arguments are shown after the bar as `key=value`."""
        self.n += n
        self.postfix.update(postfix)
        if _now() - self.last_draw >= self.interval:
            self._draw()

    def set_postfix(self, **kw) -> None:
        """Set `key=value` pairs shown after the bar (merged with those already there)."""
        self.update(0, **kw)

    def close(self) -> None:
        """Draw the final line (always, also off a terminal) and end it."""
        if self.closed:
            return
        self.closed = True
        if self.tty or self.line() != self._last:  # a log line just written is not repeated
            self._draw()
        if self.tty:
            self.file.write("\n")
            self.file.flush()

    def write(self, message: str) -> None:
        """Print a line of its own above the bar (the bar is redrawn below it on a terminal)."""
        if self.tty:
            self.file.write("\r" + " " * len(self._last) + "\r")
        self.file.write(message + "\n")
        self.file.flush()
        if self.tty:
            self._draw()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _amount(self, x: float, scale: float, prefix: str) -> str:
        if self.unit == "B" and prefix:
            return f"{x / scale:.1f}"
        return str(int(x))

    def line(self) -> str:
        """The text of the bar as it stands now."""
        elapsed = _now() - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            scale, prefix = _scale(self.total if self.total else self.n)
            rs, rp = _scale(rate)
            speed = f"{rate / rs:.1f} {rp}B/s"
            unit = f" {prefix}B"
        else:
            scale, prefix = 1.0, ""
            speed = f"{rate:.1f} {self.unit}/s" if rate >= 1 or rate == 0 else f"{1 / rate:.2f} s/{self.unit}"
            unit = "" if self.total else self.unit
        done = self._amount(self.n, scale, prefix)
        desc = f"{self.desc} " if self.desc else ""
        tail = "".join(f" {k}={_value(v)}" for k, v in self.postfix.items())
        if not self.total:  # unknown length: count, elapsed time, speed
            return f"{desc}{done}{unit} [{_clock(elapsed)}, {speed}]{tail}"
        frac = min(max(self.n / self.total, 0.0), 1.0)
        eighths = int(frac * BAR_WIDTH * 8)
        bar = "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths < BAR_WIDTH * 8 else "")
        left = _clock((self.total - self.n) / rate) if rate > 0 else "?"
        total = self._amount(self.total, scale, prefix)
        return (f"{desc}{frac:4.0%} |{bar:<{BAR_WIDTH}}| {done}/{total}{unit} "
                f"[{_clock(elapsed)}<{left}, {speed}]{tail}")

    def _draw(self) -> None:
        self.last_draw = _now()
        text = self.line()
        if self.tty:  # back to the start of the line; spaces blank a longer previous line
            self.file.write("\r" + text + " " * max(0, len(self._last) - len(text)))
        else:
            self.file.write(text + "\n")
        self._last = text
        self.file.flush()
