"""Whose fault a failed command is: the tree's or the machine's, from its output.

A bisection reads exit code 4 (the kernel does not compile) as "skip this
commit".  If a full disk, the OOM killer or a dying dockerd also gave 4, a
good commit would be skipped (or the answer made ambiguous) for what the
host did.  So a failed build is blamed on the tree only on evidence: a
compiler, assembler, linker or modpost diagnostic in its output.  Signs of
the host (a killed compiler, a full or read-only disk, no memory, the Docker
daemon) win over any diagnostic, since a full disk makes the assembler
complain too; and a failure with no diagnostic at all is the host's.
"""

from __future__ import annotations

import errno
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandError, EnvironmentProblem, HostFailure, PipelineError

KILLED_COMPILER = "a compiler was killed (out of memory, most likely)"
NO_MEMORY = "the machine ran out of memory"
# (sign, what it means), in the order they are looked for.
HOST_SIGNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # gcc's driver on a cc1 that died of a signal: SIGKILL from the OOM killer, or
    # SIGSEGV when an allocation failed under a memory limit.
    (re.compile(r"signal terminated program"), KILLED_COMPILER),
    (re.compile(r"out of memory allocating|virtual memory exhausted|memory exhausted"
                r"|Cannot allocate memory|failed to map segment from shared object"),
     NO_MEMORY),
    (re.compile(r"No space left on device|Disk quota exceeded"), "the disk is full"),
    # git's words when a checkout cannot write a file (it leaves out the errno).
    (re.compile(r"unable to write (?:new index )?file"),
     "a file could not be written (a full disk, most likely)"),
    (re.compile(r"Read-only file system"), "a file system is read-only"),
    (re.compile(r"Cannot connect to the Docker daemon|Error response from daemon"
                r"|error during connect"),
     "the Docker daemon failed"),
)
# Worth a retry with fewer make jobs.
MEMORY_SIGNS = frozenset({KILLED_COMPILER, NO_MEMORY})
TREE_SIGNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^\S+?:\d+(?::\d+)?: (?:fatal )?error: ", re.M),  # gcc, file:line
    re.compile(r"^\S+?: (?:fatal )?error: ", re.M),  # cc1, objtool, ld on a whole file
    re.compile(r"^\S+?:\d+: Error: ", re.M),  # gas
    re.compile(r"undefined reference to |multiple definition of "),  # ld
    re.compile(r"^ERROR: modpost: ", re.M),
    re.compile(r"No rule to make target "),
)


@dataclass(frozen=True)
class Blame:
    """The verdict on one failure: the host's or the tree's, and the line that says so."""

    host: bool
    evidence: str
    out_of_memory: bool = False


def blame(output: str, returncode: int) -> Blame:
    """Blame the host or the tree for a command that failed with this output."""
    host = host_sign(output)
    if host is not None:
        return host
    if returncode < 0 or returncode > 128:
        number = -returncode if returncode < 0 else returncode - 128
        name = signal.Signals(number).name if number in signal.valid_signals() else number
        return Blame(True, f"the command was killed by signal {name} "
                           "(the OOM killer or a stopped container, most likely)",
                     out_of_memory=number == signal.SIGKILL)
    for sign in TREE_SIGNS:
        found = sign.search(output)
        if found:
            return Blame(False, _line_of(output, found.start()))
    return Blame(True, "it failed without a compiler, linker or modpost diagnostic")


def host_sign(output: str) -> Blame | None:
    """The host's blame when the output shows a sign of the machine failing, else None."""
    for sign, meaning in HOST_SIGNS:
        found = sign.search(output)
        if found:
            return Blame(True, f"{meaning}: {_line_of(output, found.start())}",
                         out_of_memory=meaning in MEMORY_SIGNS)
    return None


def _line_of(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:end if end >= 0 else len(text)].strip()[:300]


def host_failure(what: str, blamed: Blame, log_file: Path | None) -> HostFailure:
    where = f" (full log: {log_file})" if log_file else ""
    return HostFailure(f"{what} failed because of this machine, not the tree: "
                       f"{blamed.evidence}{where}. Free the disk or memory (or lower "
                       "kernel.jobs), check dockerd, then run again",
                       out_of_memory=blamed.out_of_memory)


# Free space below which a failed write is blamed on a full disk.
FULL_DISK_BYTES = 16 << 20


def machine_error(what: str, exc: CommandError, where: Path | None = None) -> EnvironmentProblem:
    """A command of the machine's own work (a checkout, an unpack) failed: HostFailure
    when its output shows why, or when the file system it wrote to (`where`) is full;
    else EnvironmentProblem with its output."""
    host = None
    if where is not None and _free_bytes(where) < FULL_DISK_BYTES:
        last = (exc.output_tail.strip().splitlines() or ["nothing"])[-1]
        host = Blame(True, f"the disk is full: {_free_bytes(where)} bytes free where it "
                           f"wrote ({where}); its last words: {last}")
    host = host or host_sign(exc.output_tail)
    if host is not None:
        return host_failure(what, host, None)
    return EnvironmentProblem(f"{what} failed:\n{exc.output_tail}")


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def unless_host(what: str, exc: CommandError, tree_error: PipelineError) -> PipelineError:
    """`tree_error` for a failed command, unless its output shows the machine failed."""
    host = host_sign(exc.output_tail)
    return tree_error if host is None else host_failure(what, host, None)


# OSErrors of our own writes that are the machine's, with what each means.
HOST_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "a file system is read-only", errno.ENOMEM: NO_MEMORY}


def os_error(what: str, exc: OSError) -> HostFailure | None:
    """The HostFailure for an OSError the machine caused (a full disk, say), else None."""
    meaning = HOST_ERRNOS.get(exc.errno)
    if meaning is None:
        return None
    return host_failure(what, Blame(True, f"{meaning}: {exc}",
                                    out_of_memory=exc.errno == errno.ENOMEM), None)


def blame_command(exc: CommandError, log_file: Path | None) -> Blame:
    """Blame a failed command on its whole log when it has one, else on its output's tail."""
    text = exc.output_tail
    if log_file is not None and log_file.is_file():
        text = log_file.read_text(errors="replace")
    return blame(text, exc.returncode)
