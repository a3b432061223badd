"""Source kinds `tarball` (a URL, e.g. kernel.org's, with sha256 and an optional
PGP signature) and `local` (a tarball on this machine, with sha256)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import SourceError
from ..records import SourceIdentity, SourceResolved
from ..settings import Settings
from ..util import file_sha256
from . import gpg
from .treecache import cache_dir, populate


def tarball_cache_path(settings: Settings) -> Path:
    src = settings.source
    name = re.sub(r"[^A-Za-z0-9._-]", "_", src.url.rstrip("/").rsplit("/", 1)[-1])
    return settings.layout.downloads / f"{src.sha256[:16]}-{name}"


def identify_tarball(settings: Settings) -> SourceIdentity:
    src = settings.source
    return SourceIdentity(kind="tarball", url=src.url, sha256=src.sha256,
                          signature_url=src.signature_url)


def fetch_tarball(settings: Settings, dest: Path) -> SourceResolved:
    from .download import download, http_session  # requests: only a download needs it

    src = settings.source
    cached = tarball_cache_path(settings)
    session = http_session()
    if src.signature_url and not cached.exists():
        # Verify before the tarball enters the cache: a cache entry is trusted.
        part_dest = cached.with_name(cached.name + ".unverified")
        download(session, src.url, part_dest, src.sha256)
        with tempfile.TemporaryDirectory(prefix="pipeline-sig-") as tmp:
            sig = download(session, src.signature_url, Path(tmp) / "tarball.sign")
            try:
                gpg.verify_signature(part_dest, sig, settings.resolve(src.keyring),
                                     Path(src.url).suffix)
            except SourceError:
                part_dest.unlink()
                raise
        os.replace(part_dest, cached)
    else:
        download(session, src.url, cached, src.sha256)
    populate(cached, src.sha256, dest, cache_dir(settings))
    if not src.signature_url:
        return SourceResolved(tarball=str(cached), sha256=src.sha256, signature_checked=False)
    return SourceResolved(tarball=str(cached), sha256=src.sha256, signature_checked=True,
                          keyring=str(settings.resolve(src.keyring)))


def identify_local(settings: Settings) -> SourceIdentity:
    return SourceIdentity(kind="local", path=str(settings.resolve(settings.source.path)),
                          sha256=settings.source.sha256)


def fetch_local(settings: Settings, dest: Path) -> SourceResolved:
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
    populate(path, got, dest, cache_dir(settings))
    return SourceResolved(tarball=str(path), sha256=got)
