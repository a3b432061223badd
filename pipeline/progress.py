"""Live progress of a long step: a line as each thing finishes, and on a terminal a
status line below them.

At a terminal, rich keeps one status line at the bottom (what runs, for how
long, how long the same step took last time, how far it got), its clock
running; what finishes prints above it and stays.  Anywhere else (a CI
log, a pipe) there are plain lines only: each finished thing, and a heartbeat
when nothing was printed for HEARTBEAT seconds, so a log shows the step is
alive without repainting anything.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import sys
import time
from typing import TextIO

HEARTBEAT = 60.0  # seconds without a line before a plain log gets one


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


# The progress being shown in this process, if any: one inside it (the kernel's build
# inside the kernel stage) shows its words in the same status line.
_SHOWN: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("progress",
                                                                         default=None)


class Progress:
    """`with Progress("guest smoke", expected=720) as shown:` then `shown.done(line)` for
    each finished thing and `shown.tick(note)` as often as the step can (every second).

    One inside another draws nothing of its own: the outer one's status line shows
    the innermost's words, and lines go through the outer one."""

    def __init__(self, what: str, expected: float | None = None, *,
                 out: TextIO | None = None, live: bool | None = None):
        self.what = what
        self.expected = expected  # seconds the same step took last time
        self.out = out or sys.stdout
        # A worker process of `doit -n N` shares the terminal with the others: plain.
        self.live = (self.out.isatty() and multiprocessing.parent_process() is None
                     if live is None else live)
        self.started = time.monotonic()
        self.last_line = self.started
        self.note = ""
        self.outer: Progress | None = None
        self.inner: Progress | None = None
        self._console = None
        self._status = None
        self._token: contextvars.Token | None = None

    def elapsed(self) -> str:
        """"2:31", or "2:31 of ~12:00" when the last run's time is known."""
        text = clock(time.monotonic() - self.started)
        return f"{text} of ~{clock(self.expected)}" if self.expected else text

    def status(self) -> str:
        return f"{self.what}: {self.elapsed()}" + (f", {self.note}" if self.note else "")

    def __enter__(self) -> Progress:
        self.outer = _SHOWN.get()
        if self.outer is not None:
            self.outer.inner = self
        elif self.live:
            from rich.console import Console  # a terminal only: plain logs never load it

            self._console = Console(file=self.out, force_terminal=True, highlight=False,
                                    soft_wrap=True)
            # The status is this object: rich renders it anew at every refresh, so
            # its clock runs on while the step prints nothing (a long link).
            self._status = self._console.status(self)
            self._status.start()
        self._token = _SHOWN.set(self)
        return self

    def __rich__(self) -> str:
        return self.inner.__rich__() if self.inner is not None else self.status()

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _SHOWN.reset(self._token)
        if self.outer is not None:
            self.outer.inner = None
        if self._status is not None:
            self._status.stop()

    def done(self, line: str) -> None:
        """A finished thing: a line that stays."""
        if self.outer is not None:
            self.outer.done(line)
        elif self._console is not None:
            self._console.print(line, markup=False)
        else:
            print(line, file=self.out, flush=True)
        self.last_line = time.monotonic()

    def tick(self, note: str | None = None) -> None:
        """The step is still at it (`note`: how far it got)."""
        if note is not None:
            self.note = note
        shown = self
        while shown.outer is not None:
            shown = shown.outer
        if shown._status is None and time.monotonic() - shown.last_line >= HEARTBEAT:
            self.done(f"{self.status()} ...")
