"""Run external commands: argv lists, logged copy-pasteably before they run."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import CommandError, CommandTimedOut, EnvironmentProblem

log = logging.getLogger("pipeline")

TAIL_LINES = 40
# The user (and password) part of a URL: "scheme://USER:PASSWORD@host".
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s|'\"]+@", re.I)


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***: what is
    logged, recorded or raised never carries a password."""
    return _URL_USERINFO.sub(r"\1***@", text)


def quote(argv: Sequence[str | os.PathLike]) -> str:
    return shlex.join(str(a) for a in argv)


def describe(argv: Sequence[str | os.PathLike], cwd: Path | None, env: Mapping[str, str] | None):
    """The command as a user would retype it in a shell (credentials redacted)."""
    prefix = ""
    if cwd is not None:
        prefix += f"cd {shlex.quote(str(cwd))} && "
    if env:
        prefix += " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
    return redact(prefix + quote(argv))


def run(
    argv: Sequence[str | os.PathLike],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
    echo: bool = False,
    hint: str = "",
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    keep_stderr: bool = True,
) -> str:
    """Run argv to completion and return its combined output.

    `env` holds only the variables added to the inherited environment, so the
    logged line is exactly what to paste.  With `echo` the output streams to
    our stdout as it comes (long steps show progress); with `log_file` it is
    also written there; `on_line` gets each line as it comes (live progress).
    `keep_stderr=False` drops stderr, for output parsed line by line (a warning
    written into the middle of a line would break it).
    On failure raise CommandError with the output's tail;
    past `timeout` seconds the command is killed (CommandTimedOut).
    """
    text = describe(argv, cwd, env)
    log.info("$ %s", text)
    full_env = {**os.environ, **env} if env else None
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if keep_stderr else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            # A command with a time limit gets a process group of its own, killed
            # whole at the limit: a child still holding the output pipe (a shell's,
            # diffoscope's) would otherwise keep us reading past it.
            start_new_session=timeout is not None,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise EnvironmentProblem(
            f"{argv[0]} is not installed (needed for: {text}); run scripts/setup"
        ) from exc
    except OSError as exc:  # e.g. not executable
        raise EnvironmentProblem(f"cannot run {argv[0]}: {exc.strerror} (for: {text})") from exc
    expired = threading.Event()

    def stop() -> None:
        """Kill the command; one with a time limit with its whole process group (its own
        session, which neither Ctrl-C nor its exit reaches: a child may hold the pipe)."""
        with contextlib.suppress(ProcessLookupError):  # all gone already
            if timeout is not None:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()

    def expire() -> None:
        expired.set()
        stop()

    with contextlib.ExitStack() as stack:
        log_handle = stack.enter_context(open(log_file, "a")) if log_file else None
        if log_handle:
            log_handle.write(f"$ {text}\n")
        # proc is reaped only when `with proc` ends: until then its pid (and group)
        # cannot be another process's, so stop() never hits a stranger.
        timer = threading.Timer(timeout, expire) if timeout is not None else None
        if timer is not None:
            timer.start()
        with proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    lines.append(line)
                    if echo:
                        print(line, end="", flush=True)
                    if log_handle:
                        log_handle.write(line)
                    if on_line:
                        on_line(line)
            except BaseException:
                # Context-managing the Popen kills nothing on Ctrl-C: stop it here, so
                # an interrupted step does not leave a make or tar running behind us.
                stop()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        returncode = proc.wait()
    if returncode != 0:
        tail = redact("".join(lines[-TAIL_LINES:]).rstrip("\n"))
        if expired.is_set():
            raise CommandTimedOut(text, timeout, tail)
        raise CommandError(text, returncode, tail, hint)
    return "".join(lines)
