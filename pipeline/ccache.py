"""ccache's remote storage (a team's shared cache) and what ccache did for one build.

The local cache (`~/.cache/kvm-pipeline/ccache`) is always the first level.
With `kernel.ccache_remote` set, ccache asks the remote storage on a local
miss and fills the local cache from it; a compile it had to do goes to both
(unless the mode is read-only).  ccache's remote backends in Debian 12's
4.7: Redis (`redis://`, `redis+unix:`) and HTTP.

ccache runs once per compile, so a remote that fails is retried by every
compile: the timeouts below bound what a dead or hung server costs each
one, and `check_reachable` refuses to start a build against a server that
does not answer at all.

Every make that compiles writes a stats log (ccache's `stats_log`: one block
of counter names per compile), so a build's hits and misses are its own,
never read off counters the whole machine shares.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .commands import redact
from .errors import EnvironmentProblem, SettingsError

log = logging.getLogger("pipeline")

# What Debian 12's ccache 4.7 was built with (`ccache --version`: no https).
SCHEMES = ("redis", "redis+unix", "http")
# Characters ccache's URL parser takes in the user and password part; others
# must be percent-encoded (or ccache refuses the URL on every compile).
USERINFO_RE = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*$")
REMOTE_MODES = ("read-write", "read-only", "reshare")
# Milliseconds.  ccache's defaults (100 ms to connect, 10 s an operation) let
# a hung server cost 10 s a compile; an object is at most a few MB, which a
# LAN moves in well under a second.
CONNECT_TIMEOUT_MS = 500
OPERATION_TIMEOUT_MS = 2000
# The check before a build: seconds to wait for the server's answer.
CHECK_TIMEOUT_S = 3
# Failures of the remote (ccache's counters) after which a make stops asking it,
# and how often the stats log is read to count them.
FAILURE_COUNTERS = (b"remote_storage_error", b"remote_storage_timeout")
CUTOFF_FAILURES = 5
POLL_SECONDS = 0.5

@dataclass(frozen=True)
class Remote:
    """A remote storage URL as ccache reads it, and how to use it."""

    url: str
    mode: str = "read-write"
    # Hashed into every entry: machines whose toolchains differ (gcc's driver is
    # all ccache checks; binutils too make the object) never share objects.
    namespace: str = ""

    def storage(self) -> str:
        """ccache's remote_storage: the URL and its attributes."""
        attributes = [f"connect-timeout={CONNECT_TIMEOUT_MS}",
                      f"operation-timeout={OPERATION_TIMEOUT_MS}"]
        if self.mode == "read-only":
            attributes.append("read-only")
        return "|".join([self.url, *attributes])

    def config(self) -> str:
        """The lines of a ccache config file that use this remote."""
        # reshare: local hits are uploaded too.
        return (f"remote_storage = {self.storage()}\n"
                + (f"namespace = {self.namespace}\n" if self.namespace else "")
                + ("reshare = true\n" if self.mode == "reshare" else ""))

    @property
    def shown(self) -> str:
        return redact(self.url)


def parse(url: str, origin: str = "the settings") -> urllib.parse.SplitResult:
    """The URL split, or a SettingsError naming what is wrong and the forms ccache takes."""
    forms = ('"redis://[[USER:]PASSWORD@]HOST[:PORT][/DB]", "redis+unix:/PATH/TO/SOCKET" '
             'or "http://HOST[:PORT]/PATH"')
    parts = urllib.parse.urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    problem = ""
    if parts.scheme not in SCHEMES:
        problem = f"the scheme must be one of {', '.join(SCHEMES)}"
    elif any(c in url for c in " |"):
        problem = "it holds a space or '|' (ccache's separators): percent-encode them"
    elif not USERINFO_RE.match(userinfo):
        problem = ("its user or password holds a character ccache's URL parser refuses: "
                   "percent-encode it (%XX)")
    elif parts.scheme == "redis+unix" and not \
            urllib.parse.parse_qs(parts.query).get("db", ["0"])[0].isdigit():
        problem = "its db= is not a number"
    elif parts.scheme == "redis+unix" and not parts.path:
        problem = "it names no socket path"
    elif parts.scheme != "redis+unix" and not parts.hostname:
        problem = "it names no host"
    else:
        try:
            parts.port  # noqa: B018 (raises on a port that is no number)
        except ValueError:
            problem = "its port is not a number"
        if parts.scheme == "redis" and parts.path.strip("/") and \
                not parts.path.strip("/").isdigit():
            problem = "the path of a redis:// URL is the database number"
    if problem:
        raise SettingsError(f"kernel.ccache_remote in {origin} is {redact(url)!r}: {problem}; "
                            f"ccache takes {forms}")
    return parts


def check_reachable(remote: Remote) -> None:
    """Ask the server once before a build: a dead one is a clear error, not a slow build."""
    parts = parse(remote.url)
    fix = ("start it, fix kernel.ccache_remote, or set kernel.ccache_remote=\"\" to build "
           "with the local cache only")
    # Here: only a build with a remote needs them (and loading tasks stays quick).
    import redis
    import requests

    refused = (f"the remote ccache {remote.shown} refused the credentials in "
               "kernel.ccache_remote")
    try:
        if parts.scheme.startswith("redis"):
            _ping_redis(parts)
        elif requests.head(remote.url, timeout=CHECK_TIMEOUT_S,
                           allow_redirects=False).status_code in (401, 403):
            raise SettingsError(refused)
    except redis.AuthenticationError as exc:
        raise SettingsError(f"{refused}: {exc}") from None
    except (redis.RedisError, requests.RequestException, OSError) as exc:
        raise EnvironmentProblem(f"the remote ccache {remote.shown} does not answer "
                                 f"({redact(str(exc))}): {fix}") from None


def _ping_redis(parts: urllib.parse.SplitResult) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # ccache's rule, not redis-py's: "user:password@" or just "password@".
    username, password = parts.username, parts.password
    if password is None and username is not None:
        username, password = None, username
    username = urllib.parse.unquote(username) if username else None
    password = urllib.parse.unquote(password) if password else None
    # One try: a server that is down answers the same on a retry, only later.
    common = {"username": username, "password": password, "retry": Retry(NoBackoff(), 0),
              "socket_connect_timeout": CHECK_TIMEOUT_S, "socket_timeout": CHECK_TIMEOUT_S}
    if parts.scheme == "redis+unix":
        query = urllib.parse.parse_qs(parts.query)
        client = redis.Redis(unix_socket_path=parts.path, db=int(query.get("db", ["0"])[0]),
                             **common)
    else:
        client = redis.Redis(host=parts.hostname, port=parts.port or 6379,
                             db=int(parts.path.strip("/") or 0), **common)
    with client:
        client.ping()


# ---------------------------------------------------------------- one make


def config_path(stats_log: Path) -> Path:
    """The ccache config file of the make that logs to `stats_log`."""
    return stats_log.with_name(stats_log.name + ".conf")


@contextlib.contextmanager
def remote_session(remote: Remote | None, stats_log: Path | None,
                   primary: tuple[Path, ...]) -> Iterator[None]:
    """ccache's config for one make, with the remote in it (mode 0600, removed after).

    Every compile is a new ccache that knows nothing of the last one's failure,
    so a dead or hung server would cost its timeout again on each of thousands
    of compiles.  A watcher counts the failures in the stats log and, at
    CUTOFF_FAILURES, rewrites the config without the remote: the rest of the
    build uses the local cache only.  `primary`: the config files ccache would
    read without CCACHE_CONFIGPATH (the system's and the local cache's own),
    which this file replaces for the make and therefore includes.
    """
    if remote is None or stats_log is None:
        yield
        return
    conf = config_path(stats_log)
    local_only = "".join(path.read_text() for path in primary if path.is_file())
    watcher = _Cutoff(remote, stats_log, conf, local_only)
    try:
        _write_private(conf, local_only + remote.config())
        watcher.start()
        yield
    finally:
        try:
            if watcher.is_alive():
                watcher.finish()
        finally:
            conf.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only (credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


class _Cutoff(threading.Thread):
    """Follows a make's stats log; cuts the remote off after CUTOFF_FAILURES failures."""

    def __init__(self, remote: Remote, stats_log: Path, conf: Path, local_only: str):
        super().__init__(name="ccache-remote-cutoff", daemon=True)
        self.remote, self.stats_log, self.conf, self.local_only = (
            remote, stats_log, conf, local_only)
        self.done = threading.Event()
        self.offset, self.partial, self.failures = 0, b"", 0

    def run(self) -> None:
        try:
            while not self.done.wait(POLL_SECONDS):
                if self._count_failures() >= CUTOFF_FAILURES:
                    _write_private(self.conf, self.local_only)
                    log.warning("the remote ccache %s failed %d times: the rest of this "
                                "build uses the local cache only", self.remote.shown,
                                self.failures)
                    return
        except OSError as exc:  # a full disk, say: the build goes on without the cutoff
            log.warning("cannot follow ccache's stats log %s (%s): a failing remote will "
                        "not be cut off in this build", self.stats_log, exc)

    def _count_failures(self) -> int:
        try:
            with open(self.stats_log, "rb") as handle:
                handle.seek(self.offset)
                data = self.partial + handle.read()
        except FileNotFoundError:
            return self.failures
        self.offset += len(data) - len(self.partial)
        *lines, self.partial = data.split(b"\n")
        self.failures += sum(line.strip() in FAILURE_COUNTERS for line in lines)
        return self.failures

    def finish(self) -> None:
        self.done.set()
        self.join()


# ---------------------------------------------------------------- stats


@dataclass(frozen=True)
class Stats:
    """What ccache did for one build, from its stats log."""

    compiles: int  # cacheable compiles
    local_hits: int
    remote_hits: int
    misses: int  # compiled
    remote_errors: int  # the remote failed or timed out (ccache then compiles locally)

    @classmethod
    def from_log(cls, path: Path) -> Stats:
        """Each compile is a block ("# FILE" then the counters that moved); a hit is
        remote when the block has a remote hit (a local manifest hit may precede it)."""
        text = path.read_text() if path.exists() else ""
        counts: collections.Counter[str] = collections.Counter()
        for block in text.split("\n#"):
            moved = set(block.splitlines()[1:])
            hit = bool(moved & {"direct_cache_hit", "preprocessed_cache_hit"})
            counts["hits"] += hit
            counts["misses"] += bool(moved & {"cache_miss", "recache"})  # compiled
            counts["remote_hits"] += hit and "remote_storage_hit" in moved
            counts["failures"] += sum(name.decode() in moved for name in FAILURE_COUNTERS)
        return cls(compiles=counts["hits"] + counts["misses"],
                   local_hits=counts["hits"] - counts["remote_hits"],
                   remote_hits=counts["remote_hits"], misses=counts["misses"],
                   remote_errors=counts["failures"])

    def summary(self) -> str:
        if not self.compiles:
            return "ccache: no cacheable compile"
        line = (f"ccache: {self.compiles - self.misses} of {self.compiles} compiles from the "
                f"cache ({self.local_hits} local, {self.remote_hits} remote), "
                f"{self.misses} compiled")
        return line + (f"; the remote failed {self.remote_errors} times"
                       if self.remote_errors else "")

