"""Resumable HTTP downloads that only ever leave verified files in the cache."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..errors import EnvironmentProblem, SourceError
from ..util import file_sha256

log = logging.getLogger("pipeline")

CHUNK = 1 << 16
# A cut-off download is resumed this many times within one run; the partial
# file also survives the run, so the next run continues it.
RESUME_ATTEMPTS = 5
TIMEOUT = (15, 60)  # connect, read (seconds)


def http_session() -> requests.Session:
    """A session that retries connection errors and 5xx answers with backoff."""
    retry = Retry(
        total=5,
        backoff_factor=0.5,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=("GET", "HEAD"),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "kvm-pipeline"
    return session


class Progress:
    """Logs a download's progress at most every few seconds."""

    def __init__(self, name: str, total: int | None, done: int):
        self.name, self.total, self.done = name, total, done
        self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= 2:
            self.last = now
            self.report()

    def report(self) -> None:
        mib = self.done / (1 << 20)
        if self.total:
            log.info("%s: %.1f of %.1f MiB (%d%%)", self.name, mib, self.total / (1 << 20),
                     100 * self.done // self.total)
        else:
            log.info("%s: %.1f MiB", self.name, mib)


def _stream_once(session: requests.Session, url: str, part: Path, name: str) -> None:
    """One GET of `url` appended to `part`, resuming with Range when it has bytes."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as resp:
        if resp.status_code == 416 and have:
            return  # the partial file is already whole; the checksum decides
        if resp.status_code >= 400:
            raise SourceError(
                f"{url} answered {resp.status_code} {resp.reason}: check source.url "
                "(and source.signature_url)"
            )
        if have and resp.status_code != 206:
            log.info("%s: server ignored the Range request, starting over", name)
            have = 0
        elif have:
            log.info("%s: resuming at %.1f MiB", name, have / (1 << 20))
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length else None
        progress = Progress(name, total, have)
        with open(part, "ab" if have else "wb") as out:
            for chunk in resp.iter_content(CHUNK):
                out.write(chunk)
                progress.advance(len(chunk))
        progress.report()
        if total is not None and part.stat().st_size < total:
            raise requests.ConnectionError(f"connection closed at {part.stat().st_size} bytes")


def download(session: requests.Session, url: str, dest: Path,
             sha256: str | None = None) -> Path:
    """Download `url` to `dest`, resumably, verifying `sha256` when given.

    Bytes arrive in `dest.part`; only a complete, verified file is renamed to
    `dest`.  A checksum mismatch deletes the partial file, so the cache never
    holds bytes that failed their check.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s", url)
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            _stream_once(session, url, part, dest.name)
            break
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            if attempt == RESUME_ATTEMPTS:
                raise EnvironmentProblem(
                    f"download of {url} kept failing ({exc}); the partial file "
                    f"{part} is kept and the next run resumes it"
                ) from exc
            log.warning("%s: %s; resuming (attempt %d of %d)", dest.name, exc,
                        attempt + 1, RESUME_ATTEMPTS)
    if sha256 is not None:
        got = file_sha256(part)
        if got != sha256:
            part.unlink()
            raise SourceError(
                f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}. "
                "The download was deleted; if the new file is the one you want, "
                "update source.sha256"
            )
    os.replace(part, dest)
    return dest
