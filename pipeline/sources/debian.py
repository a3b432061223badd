"""Source kind `debian`: the tree inside a Debian `linux-source-*` package.

apt verifies the .deb against the mirror's signed Release file; the tarball
inside it is kept in the download cache and its sha256 recorded.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .. import commands
from ..errors import CommandError, EnvironmentProblem, SourceError
from ..records import SourceIdentity, SourceResolved
from ..settings import Settings
from ..util import atomic_write_text, file_sha256
from .treecache import cache_dir, populate

APT_LISTS = Path("/var/lib/apt/lists")


def _apt(argv: list[str], cwd: Path | None = None) -> str:
    try:
        return commands.run(argv, cwd=cwd)
    except CommandError as exc:
        raise EnvironmentProblem(
            f"apt could not do what was asked ({exc.argv_text}):\n{exc.output_tail}\n"
            "Check that Debian's mirror is reachable and the lists are fresh "
            "(`apt-get update`; scripts/setup runs it)"
        ) from None


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
    out = _apt(["apt-cache", "madison", package])
    versions = [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]
    versions = list(dict.fromkeys(versions))
    if known.get("stamp") != stamp:
        known = {"stamp": stamp, "versions": {}}
    known["versions"][package] = versions
    atomic_write_text(cache, json.dumps(known, indent=2) + "\n")
    return versions


def resolve_version(settings: Settings) -> str:
    src = settings.source
    versions = debian_versions(src.package, settings.layout.apt_versions)
    if not versions:
        out = _apt(["apt-cache", "search", "--names-only", "^linux-source-"])
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


def inner_tarball_name(package: str) -> str:
    """Where the package keeps its tree: usr/src/<package>.tar.xz."""
    return f"usr/src/{package}.tar.xz"


def identify(settings: Settings) -> SourceIdentity:
    return SourceIdentity(kind="debian", package=settings.source.package,
                          version=resolve_version(settings))


def fetch(settings: Settings, dest: Path) -> SourceResolved:
    src = settings.source
    version = resolve_version(settings)
    cache = settings.layout.debian_downloads
    cached = cache / f"{src.package}_{version.replace(':', '%3a')}.tar.xz"
    if not cached.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # Only the source tarball inside the .deb is kept, moved into the
        # cache once complete.
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            _apt(["apt-get", "download", f"{src.package}={version}"], cwd=Path(tmp))
            deb = next(Path(tmp).glob("*.deb"))
            try:
                commands.run(["dpkg-deb", "-x", deb, Path(tmp) / "x"])
            except CommandError as exc:
                raise SourceError(f"{deb.name} cannot be unpacked:\n{exc.output_tail}") from None
            inner = Path(tmp) / "x" / inner_tarball_name(src.package)
            if not inner.is_file():
                raise SourceError(f"{deb.name} holds no {inner_tarball_name(src.package)}")
            os.replace(inner, cached)
    sha256 = file_sha256(cached)
    populate(cached, sha256, dest, cache_dir(settings))
    return SourceResolved(package=src.package, version=version, tarball=str(cached),
                          sha256=sha256)
