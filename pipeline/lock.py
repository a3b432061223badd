"""One writer per build dir: the lock a task holds while it writes there.

Two runs in one build dir would share kbuild/, results/ and the records, and
each would read the other's half-written files.  Each task's action takes an
exclusive flock(2) on <build>/.lock and writes its pid there for whoever
waits.  The kernel drops a flock when its holder exits, however it dies, so
a lock left by a killed run is simply taken by the next one; the pid in the
file is only ever a name for the message.  Nested runs (a bisection's steps,
a matrix's cells, repro's rebuild) write build dirs of their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator

from .errors import BuildDirBusy, PipelineError
from .layout import Layout

log = logging.getLogger("pipeline")



@contextlib.contextmanager
def holding(layout: Layout, wait: bool) -> Iterator[None]:
    """Hold the build dir's lock for the block: wait for another holder, or fail."""
    layout.build.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if holder == str(os.getpid()):
                raise PipelineError(f"this run already holds {layout.lock}: a nested run "
                                    "must use a build dir of its own") from None
            if not wait:
                raise BuildDirBusy(
                    f"the build dir {layout.build} is in use by another run (pid {holder}): "
                    "wait for it to end, use another paths.build, or set "
                    "paths.wait_lock=true to wait") from None
            log.warning("the build dir %s is in use by another run (pid %s): waiting for it "
                        "to end (paths.wait_lock=false fails instead)", layout.build, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # drops the lock


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
