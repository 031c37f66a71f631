"""Progress of a long loop, shown wherever the output goes: a tqdm bar when stderr is a terminal (or a
notebook), and otherwise (a log file, a pipe) a plain line now and then with the elapsed time and an
ETA, so that `sdt ... > log 2>&1` shows how far a run is. Progress always goes to stderr: stdout stays
for the results that scripts parse."""

from __future__ import annotations

import contextlib
import sys
import time

EVERY_S = 10.0  # a line at most this often...
EVERY_FRACTION = 0.1  # ...and at most once per this share of the total, whichever is rarer
FIRST_S = 2.0  # the first line (the first ETA) once this long has passed, before the first 10%


def progress(total: int | None = None, desc: str = "", unit: str = "it", *, initial: int = 0,
             enabled: bool = True, leave: bool = False, each: bool = False, stream=None):
    """A progress reporter with tqdm's update(n) / set_postfix(...) / set_description(desc) / close()
    and context manager: a tqdm bar on a terminal, a `Lines` reporter otherwise, and one that shows
    nothing when `enabled` is false (a worker rank, a caller that asked for quiet). `total`: the units
    to do (None: unknown, lines then give the rate instead of an ETA); `initial`: units already done
    (a resumed run). unit "B": counts are bytes, shown as kB, MB, GB. each: in a log, a line for
    every update (a loop of a few long units, such as a curriculum's stages)."""
    stream = stream or sys.stderr
    if not enabled:
        return Silent()
    if _interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, file=stream,
                    unit_scale=unit == "B")
    return Lines(total, desc, unit, initial, stream, each)


def track(iterable, desc: str = "", unit: str = "it", *, total: int | None = None, enabled: bool = True):
    """Iterate `iterable`, counting each item as one unit once the loop's body has done with it."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with progress(total, desc, unit, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)


def _interactive(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return True
    return stream is sys.stderr and "ipykernel" in sys.modules  # a notebook draws tqdm's widget


class Silent:
    """Shows nothing (tqdm's interface)."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Lines(Silent):
    """Progress as lines of text: one when the first unit ends at least FIRST_S after the start,
    then one each time both EVERY_S seconds and EVERY_FRACTION of the total have passed since the
    last, one when the total is reached, and on close one saying where a loop stopped short (or,
    with no total, how much it did). So at most about a dozen lines per loop, however long it runs,
    and none for a loop over within FIRST_S:
    `stage1_mcq epoch 2/5: 120/1,000 steps (12%), 31 s elapsed, ETA 3m47s, loss=0.6931`.
    each: a line at every update instead."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int, stream, each: bool = False):
        self.total, self.desc, self.unit, self.stream, self.each = total, desc, unit, stream, each
        self.n = self.start_n = self.last_n = initial
        self.start = self.last_t = time.monotonic()
        self.lines = 0
        self.postfix = ""
        self.closed = self.finished = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total is not None and self.n >= self.total:
            if not self.finished:
                self.finished = True
                if self._worth_a_line(now):
                    self._write(now)
            return
        first = self.lines == 0 and now - self.start >= FIRST_S
        enough = self.total is None or self.n - self.last_n >= EVERY_FRACTION * self.total
        if self.each or first or (now - self.last_t >= EVERY_S and enough):
            self._write(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if not self.finished and self.n > self.start_n and self._worth_a_line(now):
            self._write(now, end="done" if self.total is None else "stopped at")

    def _worth_a_line(self, now: float) -> bool:
        """The last line: not for a loop over within FIRST_S that has written none (noise in a log)."""
        return self.each or self.lines > 0 or now - self.start >= FIRST_S

    def _write(self, now: float, end: str = "") -> None:
        elapsed, done = now - self.start, self.n - self.start_n
        if self.total:
            count = f"{self._count(self.n, unit=False)}/{self._count(self.total)} ({100 * self.n / self.total:.0f}%)"
        else:
            count = self._count(self.n)
        parts = [f"{end} {count}" if end else count, f"{span(elapsed)} elapsed"]
        if self.total and not end:
            parts.append(f"ETA {span(elapsed * max(self.total - self.n, 0) / done)}" if done > 0 else "ETA ?")
        elif not self.total and elapsed > 0:
            parts.append(f"{self._count(done / elapsed)}/s")
        if self.postfix:
            parts.append(self.postfix)
        print((f"{self.desc}: " if self.desc else "") + ", ".join(parts), file=self.stream, flush=True)
        self.lines += 1
        self.last_n, self.last_t = self.n, now

    def _count(self, n: float, unit: bool = True) -> str:
        """n units as text ("1,200 steps", "0.45 steps"; bytes scaled: "12.3 MB"); unit=False: the
        number alone (bytes keep theirs)."""
        if self.unit != "B":
            number = f"{n:,.0f}" if n == int(n) or n >= 100 else f"{n:.3g}"
            return f"{number} {self.unit}" if unit else number
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if n >= scale:
                return f"{n / scale:.1f} {prefix}B"
        return f"{n:.0f} B"


def span(seconds: float) -> str:
    """A duration as a person reads it: 0.4 s, 31 s, 3m47s, 2h05m."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, m = divmod(round(seconds / 60), 60)
    return f"{h}h{m:02d}m"


@contextlib.contextmanager
def quiet_model_loading():
    """transformers' own progress bars ("Loading weights") show nothing inside the block; the hub's
    download bars still show. Restored on leaving."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.set_tqdm_hook(lambda factory, args, kwargs: hf_logging.EmptyTqdm(*args, **kwargs))
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


__all__ = ["progress", "track", "quiet_model_loading", "span", "Lines", "Silent"]
