"""Progress for long loops: a tqdm bar on a terminal, plain periodic log lines everywhere else.

``track`` is the one entry point (evaluation, prediction, check_dataset, the converters and
``tools/infer.py`` use it)::

    for sample in track(samples, total=len(samples), desc="[EVAL]", unit="img"):
        ...

On a terminal (stderr is a TTY) tqdm draws a bar with count, rate and ETA; when it closes, one
summary line goes through the segkit logger. Otherwise (a log file, a pipe, a
``paddle.distributed.launch`` worker log) the logger prints a line at every further 10 % and at
least every minute, plus the summary, so logs stay short and still show that work goes on.
``SEGKIT_PROGRESS=bar|lines|off`` overrides the choice.
"""

import os
import shutil
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

from segkit.logger import logger

T = TypeVar("T")
MODES = ("bar", "lines", "off")
LINE_INTERVAL_S = 60.0  # in lines mode, the longest silence


def progress_mode() -> str:
    """``bar`` on a terminal, else ``lines``; ``SEGKIT_PROGRESS`` overrides (bar, lines or off)."""
    chosen = os.environ.get("SEGKIT_PROGRESS", "").strip().lower()
    if chosen in MODES:
        return chosen
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return "lines"


def format_eta(seconds: float) -> str:
    """``HH:MM:SS`` for a number of seconds."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def track(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Yield the items of ``iterable`` while showing progress (see the module docstring).

    Args:
        iterable: what to loop over.
        total: the number of items (default ``len(iterable)`` when it has one).
        desc: a prefix naming the work, e.g. ``"[EVAL]"``.
        unit: what one item is, e.g. ``"img"``.
        enabled: False shows nothing (e.g. ranks other than 0).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    mode = progress_mode() if enabled else "off"
    if mode == "off":
        yield from iterable
        return
    start = time.time()
    count = 0
    if mode == "bar":
        from tqdm import tqdm

        # A terminal that reports no size (some containers) counts as 80x24; tqdm would draw nothing.
        size = shutil.get_terminal_size()
        with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, ncols=size.columns, nrows=size.lines) as bar:
            for count, item in enumerate(bar, 1):
                yield item
    else:
        lines = _Lines(total, desc, unit, start)
        for count, item in enumerate(iterable, 1):
            yield item
            lines.update(count)
    elapsed = time.time() - start
    logger.info(f"{desc} {count}{f'/{total}' if total else ''} {unit} in {format_eta(elapsed)} "
                f"({count / max(elapsed, 1e-9):.2f} {unit}/s)".strip())


class _Lines:
    """Decides when the plain-text mode prints a line, and prints it."""

    def __init__(self, total: Optional[int], desc: str, unit: str, start: float):
        self.total, self.desc, self.unit, self.start = total, desc, unit, start
        self.last_time = start
        self.last_tenth = 0

    def update(self, count: int) -> None:
        now = time.time()
        tenth = count * 10 // self.total if self.total else 0
        if self.total and count >= self.total:
            return  # the summary line follows
        if tenth <= self.last_tenth and now - self.last_time < LINE_INTERVAL_S:
            return
        self.last_tenth, self.last_time = tenth, now
        rate = count / max(now - self.start, 1e-9)
        if self.total:
            eta = format_eta((self.total - count) / max(rate, 1e-9))
            logger.info(f"{self.desc} {count}/{self.total} {self.unit} ({100 * count // self.total}%), "
                        f"{rate:.2f} {self.unit}/s, ETA {eta}".strip())
        else:
            logger.info(f"{self.desc} {count} {self.unit}, {rate:.2f} {self.unit}/s".strip())
