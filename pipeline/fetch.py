"""Fetch a kernel tree: kernel.org-style tarball, Debian package, local tarball or git ref.

Each source kind is a small record in `KINDS` with two functions: `identify`
answers cheaply "which exact tree would be fetched?" (a pinned or resolved
version, a checksum, a commit id) so doit can tell whether the tree on disk is
still the one asked for; `fetch` puts that tree into an empty directory and
returns what it resolved.  `fetch_tree` wraps them so that a failure or Ctrl-C
leaves neither a half-extracted tree nor a bad cache entry behind.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import commands, treecache
from .errors import EnvironmentProblem, PipelineError, SourceError
from .settings import Settings, SourceSettings
from .util import atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

RECORD_NAME = "fetch.json"
CHUNK = 1 << 16
# A cut-off download is resumed this many times within one run; the partial
# file also survives the run, so the next run continues it.
RESUME_ATTEMPTS = 5
TIMEOUT = (15, 60)  # connect, read (seconds)


# ---------------------------------------------------------------- downloads


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


# suffix -> (Python opener, the equivalent command for the log line)
DECOMPRESSORS: dict[str, tuple[Callable, str]] = {
    ".xz": (lzma.open, "xz"), ".gz": (gzip.open, "gzip"), ".bz2": (bz2.open, "bzip2"),
}


def verify_signature(tarball: Path, signature: Path, keyring: Path, suffix: str) -> None:
    """Check kernel.org's detached signature, which signs the *uncompressed* tar.

    `suffix` is the compression's (".xz"): `tarball` may be a temporary name.
    """
    if not keyring.is_file():
        raise SourceError(f"source.keyring {keyring} does not exist")
    opener, tool = DECOMPRESSORS.get(suffix, (open, "cat"))
    with tempfile.TemporaryDirectory(prefix="pipeline-gnupg-") as home:
        commands.run(["gpg", "--batch", "--homedir", home, "--import", keyring])
        argv = ["gpg", "--batch", "--homedir", home, "--status-fd", "1",
                "--verify", str(signature), "-"]
        log.info("$ %s | %s", commands.quote([tool, "-dc", tarball]), commands.quote(argv))
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            with opener(tarball, "rb") as data:
                while block := data.read(CHUNK):
                    proc.stdin.write(block)
        except BrokenPipeError:
            pass  # gpg gave up early (e.g. an unusable signature); its status says why
        finally:
            proc.stdin.close()
        status = proc.stdout.read().decode(errors="replace")
        proc.wait()
    if proc.returncode != 0 or "[GNUPG:] VALIDSIG" not in status:
        lines = [ln for ln in status.splitlines() if "[GNUPG:]" not in ln][-5:]
        raise SourceError(
            f"PGP signature check failed for {tarball.name} against {keyring}: "
            + ("; ".join(lines) or "no valid signature")
            + ". The tarball was not used; check source.signature_url and source.keyring"
        )
    log.info("good PGP signature on %s", tarball.name)


# ---------------------------------------------------------------- the kinds


def _extract(settings: Settings, archive: Path, sha256: str, dest: Path) -> None:
    treecache.populate(archive, sha256, dest, settings.cache_dir, check=kernel_version)


def _tarball_cache_path(cache: Path, src: SourceSettings) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", src.url.rstrip("/").rsplit("/", 1)[-1])
    return cache / "tarballs" / f"{src.sha256[:16]}-{name}"


def identify_tarball(settings: Settings) -> dict:
    src = settings.source
    return {"url": src.url, "sha256": src.sha256, "signature_url": src.signature_url}


def fetch_tarball(settings: Settings, dest: Path) -> dict:
    src = settings.source
    cached = _tarball_cache_path(settings.cache_dir, src)
    session = http_session()
    if src.signature_url and not cached.exists():
        # Verify before the tarball enters the cache: a cache entry is trusted.
        part_dest = cached.with_name(cached.name + ".unverified")
        download(session, src.url, part_dest, src.sha256)
        with tempfile.TemporaryDirectory(prefix="pipeline-sig-") as tmp:
            sig = download(session, src.signature_url, Path(tmp) / "tarball.sign")
            try:
                verify_signature(part_dest, sig, settings.resolve(src.keyring),
                                 Path(src.url).suffix)
            except SourceError:
                part_dest.unlink()
                raise
        os.replace(part_dest, cached)
    else:
        download(session, src.url, cached, src.sha256)
    _extract(settings, cached, src.sha256, dest)
    return {"tarball": str(cached), "sha256": src.sha256,
            "signature_checked": bool(src.signature_url)}


def identify_local(settings: Settings) -> dict:
    return {"path": str(settings.resolve(settings.source.path)),
            "sha256": settings.source.sha256}


def fetch_local(settings: Settings, dest: Path) -> dict:
    src = settings.source
    path = settings.resolve(src.path)
    if not path.is_file():
        raise SourceError(f"source.path {path} does not exist or is not a file")
    got = file_sha256(path)
    if got != src.sha256:
        raise SourceError(
            f"checksum mismatch for {path}: expected sha256 {src.sha256}, got {got}; "
            "fix source.sha256 or source.path"
        )
    _extract(settings, path, got, dest)
    return {"tarball": str(path), "sha256": got}


APT_LISTS = Path("/var/lib/apt/lists")


def debian_versions(package: str, cache: Path) -> list[str]:
    """Versions of `package` in the apt lists, newest first.

    `apt-cache madison` takes most of a second, and doit asks on every run
    to know whether the tree is current; the answer can only change when
    the lists do, so it is kept in `cache` keyed by their modification times.
    """
    stamp = str(max((p.stat().st_mtime_ns for p in APT_LISTS.glob("*_Packages*")), default=0))
    try:
        known = json.loads(cache.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        known = {}
    if known.get("stamp") == stamp and package in known.get("versions", {}):
        return known["versions"][package]
    out = commands.run(["apt-cache", "madison", package])
    versions = [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]
    versions = list(dict.fromkeys(versions))
    if known.get("stamp") != stamp:
        known = {"stamp": stamp, "versions": {}}
    known["versions"][package] = versions
    atomic_write_text(cache, json.dumps(known, indent=2) + "\n")
    return versions


def _debian_version(settings: Settings) -> str:
    src = settings.source
    versions = debian_versions(src.package, settings.cache_dir / "apt-versions.json")
    if not versions:
        out = commands.run(["apt-cache", "search", "--names-only", "^linux-source-"])
        known = sorted(line.split(" - ")[0] for line in out.splitlines())
        raise SourceError(
            f"apt knows no package {src.package!r} (source.package); "
            f"available: {', '.join(known) or 'none'}. If it should exist, run "
            "`apt-get update` (scripts/setup does)"
        )
    if not src.version:
        return versions[0]
    if src.version not in versions:
        raise SourceError(
            f"{src.package} version {src.version!r} (source.version) is not on the mirror; "
            f"available: {', '.join(versions)}"
        )
    return src.version


def identify_debian(settings: Settings) -> dict:
    return {"package": settings.source.package, "version": _debian_version(settings)}


def fetch_debian(settings: Settings, dest: Path) -> dict:
    src = settings.source
    version = _debian_version(settings)
    cache = settings.cache_dir / "debian"
    safe_version = version.replace(":", "%3a")
    cached = cache / f"{src.package}_{safe_version}.tar.xz"
    if not cached.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # apt verifies the .deb against the signed Release file; we keep only
        # the source tarball inside it, moved into the cache once complete.
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            commands.run(["apt-get", "download", f"{src.package}={version}"], cwd=Path(tmp))
            deb = next(Path(tmp).glob("*.deb"))
            commands.run(["dpkg-deb", "-x", deb, Path(tmp) / "x"])
            inner = list((Path(tmp) / "x" / "usr" / "src").glob("linux-source-*.tar.*"))
            if len(inner) != 1:
                raise SourceError(f"{deb.name} holds no linux-source tarball under usr/src")
            os.replace(inner[0], cached)
    sha256 = file_sha256(cached)
    _extract(settings, cached, sha256, dest)
    return {"package": src.package, "version": version, "tarball": str(cached),
            "sha256": sha256}


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    return commands.run(["git", *args], cwd=cwd).strip()


def _is_local_repo(repo: str) -> bool:
    return "://" not in repo and not re.match(r"^[\w.-]+@[\w.-]+:", repo)


def resolve_git_ref(settings: Settings) -> str:
    """The full commit id that source.ref names in source.repo."""
    src = settings.source
    if _is_local_repo(src.repo):
        repo = settings.resolve(src.repo)
        if not repo.exists():
            raise SourceError(f"source.repo {repo} does not exist")
        try:
            return _git("-C", repo, "rev-parse", "--verify", "--quiet", f"{src.ref}^{{commit}}")
        except commands.CommandError:
            raise SourceError(
                f"ref {src.ref!r} (source.ref) is not a commit in {repo}; "
                f"`git -C {repo} log --oneline` lists what is there"
            ) from None
    if re.fullmatch(r"[0-9a-f]{40}", src.ref):
        return src.ref
    out = _git("ls-remote", src.repo, src.ref, f"{src.ref}^{{}}")
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    if not rows:
        raise SourceError(f"ref {src.ref!r} (source.ref) is not in {src.repo}; use a branch, "
                          "tag or full commit id")
    peeled = [sha for sha, name in rows if name.endswith("^{}")]
    return (peeled or [rows[0][0]])[0]


def identify_git(settings: Settings) -> dict:
    return {"repo": settings.source.repo, "commit": resolve_git_ref(settings)}


def fetch_git(settings: Settings, dest: Path) -> dict:
    src = settings.source
    commit = resolve_git_ref(settings)
    repo = str(settings.resolve(src.repo)) if _is_local_repo(src.repo) else src.repo
    # A one-commit fetch into a fresh repository, then the .git is dropped: the
    # tree is exactly the commit's files, with nothing that makes the kernel's
    # setlocalversion add a "-dirty" or commit suffix.
    _git("init", "-q", dest)
    _git("-C", dest, "fetch", "-q", "--depth", "1", "--no-tags", repo, commit)
    _git("-C", dest, "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD")
    epoch = int(_git("-C", dest, "log", "-1", "--format=%ct", "FETCH_HEAD"))
    shutil.rmtree(dest / ".git")
    return {"repo": src.repo, "ref": src.ref, "commit": commit, "source_date_epoch": epoch}


@dataclass(frozen=True)
class SourceKind:
    identify: Callable[[Settings], dict]
    fetch: Callable[[Settings, Path], dict]


KINDS = {
    "tarball": SourceKind(identify_tarball, fetch_tarball),
    "debian": SourceKind(identify_debian, fetch_debian),
    "local": SourceKind(identify_local, fetch_local),
    "git": SourceKind(identify_git, fetch_git),
}


# ---------------------------------------------------------------- the tree


def kernel_version(tree: Path) -> str:
    """"6.12.117" from the tree's top-level Makefile."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except FileNotFoundError:
        raise SourceError(f"{tree} has no top-level Makefile: not a kernel tree") from None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)", text, re.M))
    if not fields.get("VERSION") or not fields.get("PATCHLEVEL"):
        raise SourceError(f"{tree}/Makefile has no VERSION/PATCHLEVEL: not a kernel tree")
    return ".".join(fields[k] for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL") if fields.get(k))


def record_path(settings: Settings) -> Path:
    return settings.tree_dir.parent / RECORD_NAME


def read_record(settings: Settings) -> dict | None:
    try:
        return json.loads(record_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def identity(settings: Settings) -> dict:
    return {"kind": settings.source.kind, **KINDS[settings.source.kind].identify(settings)}


def is_current(settings: Settings) -> bool:
    """doit uptodate check: does the tree on disk match what the settings ask for?"""
    record = read_record(settings)
    if record is None or not settings.tree_dir.is_dir():
        return False
    try:
        return record["identity"] == identity(settings)
    except PipelineError:
        return False  # not current: the action runs and reports the problem itself


def fetch_tree(settings: Settings) -> dict:
    """Replace build/src/linux with the configured tree; write build/src/fetch.json."""
    tree = settings.tree_dir
    tree.parent.mkdir(parents=True, exist_ok=True)
    for stale in tree.parent.glob(".fetch-*"):
        remove_tree(stale)  # left behind by an interrupted earlier run
    kind = KINDS[settings.source.kind]
    started = time.monotonic()
    wanted = identity(settings)
    staging = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".fetch-"))
    try:
        resolved = kind.fetch(settings, staging)
        version = kernel_version(staging)
        if "source_date_epoch" not in resolved:
            # Archives keep their files' times; the Makefile's is the release date.
            resolved["source_date_epoch"] = int((staging / "Makefile").stat().st_mtime)
        if tree.exists():
            old = tree.parent / f".fetch-old-{uuid.uuid4().hex[:8]}"
            os.replace(tree, old)
            remove_tree(old)
        os.replace(staging, tree)
    except BaseException:
        remove_tree(staging)
        raise
    record = {
        "identity": wanted,
        "resolved": resolved,
        "kernel_version": version,
        # A new id per extraction: later steps use it to notice a fresh tree even
        # when the same source was fetched again (e.g. after `doit forget`).
        "tree_id": uuid.uuid4().hex,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_text(record_path(settings), json.dumps(record, indent=2) + "\n")
    log.info("fetched Linux %s (%s) into %s", version, settings.source.kind, tree)
    return record
