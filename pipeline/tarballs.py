"""The two Debian package sets every build stands on, as pinnable tarballs.

- `base`: minbase plus what the guest needs (kmod for modprobe and depmod);
  the guest image's final stage starts from it and installs nothing.
- `toolchain`: minbase plus the kernel build's packages; the image's builder
  stage (static guest programs) and, with kernel.runtime = "docker", the
  kernel and kmod builds run in it.

Debian's mirror keeps only current versions and no snapshot service is
reachable, so "the same inputs next month" can only mean the same package
sets: each tarball is made once by mmdebstrap (SOURCE_DATE_EPOCH makes it
byte-stable for one mirror state), kept in the cache, and recorded by its
sha256 and by the exact versions of every package in it, read from the
tarball's own dpkg database.  `image.base=tarball:PATH` (and
`image.toolchain=tarball:PATH`) with the sha256 pins a published tarball, so a
later build uses the very same packages whatever the mirror has moved to.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import commands
from .errors import CommandError, EnvironmentProblem, PipelineError, SettingsError
from .records import PackageSet
from .settings import Settings
from .util import file_sha256

if TYPE_CHECKING:  # loaded when an image is imported (see image.py)
    import docker

log = logging.getLogger("pipeline")

ROLES = ("base", "toolchain")
PACKAGES = {
    # modprobe and depmod in the guest
    "base": ("kmod",),
    # what `make bzImage modules`, the kmod build and kselftest's install of the
    # KVM selftests (rsync) run, ccache included
    "toolchain": ("bc", "bison", "build-essential", "ccache", "cpio", "dwarves", "flex",
                  "kmod", "libelf-dev", "libssl-dev", "perl", "rsync", "xz-utils", "zstd"),
}
# The packages whose versions decide what the kernel build's compiler, assembler,
# linker and build tools do: recorded for the kernel for either runtime, so a
# host build and a container build compare package by package.
COMPILER_PACKAGES = re.compile(
    r"^(?:gcc|cpp|libgcc-s|libgcc|binutils|binutils-common|binutils-x86-64-linux-gnu|"
    r"libbinutils|libctf0|libctf-nobfd0|libsframe|libgprofng|libc6|libc6-dev|libc-dev-bin|"
    r"linux-libc-dev|libmpc|libmpfr|libgmp|libisl|libzstd|zlib1g|liblzma|libelf1|libelf-dev|"
    r"libdw1|libssl|libssl-dev|make|bison|flex|bc|perl|perl-base|dwarves|kmod|cpio|"
    r"xz-utils|zstd)(?:-?[0-9]+(?:-dev)?)?$")
REPOSITORY = {"base": "kvm-pipeline/base", "toolchain": "kvm-pipeline/toolchain"}
PIN_PREFIX = "tarball:"
STATUS_FILE = "var/lib/dpkg/status"


@dataclass(frozen=True)
class PackageTarball:
    """One package set: the tarball, its sha256 and the version of each package in it."""

    role: str
    path: Path
    sha256: str
    packages: dict[str, str]
    pinned: bool

    @property
    def reference(self) -> str:
        return reference(self.role, self.sha256)


def reference(role: str, sha256: str) -> str:
    """The Docker image imported from a tarball: named by content, never by a local id."""
    return f"{REPOSITORY[role]}:{sha256[:16]}"


def choice(settings: Settings, role: str) -> tuple[str, str]:
    """(what image.<role> says, its pinned sha256) for one role."""
    image = settings.image
    if role == "base":
        return image.base, image.base_sha256
    return image.toolchain, image.toolchain_sha256


def is_local(settings: Settings, role: str) -> bool:
    """The role comes from a tarball (mmdebstrap or pinned), not from a registry."""
    value, _ = choice(settings, role)
    return value == "mmdebstrap" or value.startswith(PIN_PREFIX)


def mmdebstrap_argv(suite: str, mirror: str, role: str, dest: Path) -> list[str | Path]:
    return ["mmdebstrap", "--quiet", "--variant=minbase",
            f"--include={','.join(PACKAGES[role])}", "--format=tar", suite, dest, mirror]


def cache_name(suite: str, mirror: str, role: str, epoch: int) -> str:
    """The cached tarball's name: another package list or mirror makes another one."""
    wanted = hashlib.sha256(f"{mirror} {','.join(PACKAGES[role])}".encode()).hexdigest()[:12]
    return f"{suite}-{role}-{wanted}-{epoch}.tar"


def _made_by_mmdebstrap(settings: Settings, role: str) -> Path:
    image = settings.image
    cache = settings.layout.base_tarballs
    tarball = cache / cache_name(image.suite, image.mirror, role, image.source_date_epoch)
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    # Per process: two matrix cells (doit -n 2) may make the same tarball at once.
    partial = cache / f".{tarball.name}.{os.getpid()}.partial"
    partial.unlink(missing_ok=True)
    log.info("making the %s tarball with mmdebstrap (a minute or two, once)", role)
    try:
        commands.run(mmdebstrap_argv(image.suite, image.mirror, role, partial),
                     env={"SOURCE_DATE_EPOCH": str(image.source_date_epoch)})
        os.replace(partial, tarball)
    except CommandError as exc:
        raise EnvironmentProblem(
            f"mmdebstrap could not make the {role} tarball from {image.mirror} "
            f"(image.mirror):\n{exc.output_tail}") from None
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def _pinned(settings: Settings, role: str) -> tuple[Path, str]:
    value, sha256 = choice(settings, role)
    path = settings.resolve(value.removeprefix(PIN_PREFIX))
    if not path.is_file():
        raise SettingsError(f"image.{role}={value}: {path} is not a file; name the {role} "
                            f"tarball a build published (build/artifacts/{role}.tar)")
    got = sha256_of(path)
    if got != sha256:
        raise SettingsError(
            f"image.{role}={value}: its sha256 is {got}, not image.{role}_sha256={sha256}; "
            "a pinned tarball must be the very file that was published")
    return path, got


def ensure(settings: Settings, role: str) -> PackageTarball:
    """The role's tarball: the pinned one (checked), or mmdebstrap's (made once)."""
    value, _ = choice(settings, role)
    if value.startswith(PIN_PREFIX):
        path, sha256 = _pinned(settings, role)
        return PackageTarball(role, path, sha256, package_set(path), pinned=True)
    path = _made_by_mmdebstrap(settings, role)
    return PackageTarball(role, path, sha256_of(path), package_set(path), pinned=False)


def parse_status(text: str) -> dict[str, str]:
    """package -> version of every installed package in a dpkg status file."""
    packages = {}
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields["Version"]
    return dict(sorted(packages.items()))


@functools.lru_cache(maxsize=8)
def _package_set(path: Path, size: int, mtime: int) -> dict[str, str]:
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.removeprefix("./") == STATUS_FILE:
                    data = tar.extractfile(member)
                    if data is not None:
                        return parse_status(io.TextIOWrapper(data, "utf-8").read())
    except (tarfile.TarError, OSError) as exc:
        raise SettingsError(f"{path} is not a readable tar file ({exc})") from None
    raise SettingsError(f"{path} holds no {STATUS_FILE}: it is not a Debian root "
                        "filesystem tarball (mmdebstrap --format=tar makes one)")


def package_set(path: Path) -> dict[str, str]:
    stat = path.stat()
    return dict(_package_set(path, stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime: int) -> str:
    return file_sha256(path)


def sha256_of(path: Path) -> str:
    """A tarball's sha256, hashed once per file version: the config, kernel, kmod
    and image steps (and repro) all ask for the same 470 MB file."""
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


def compiler_packages(versions: dict[str, str]) -> dict[str, str]:
    """The part of a package set that the kernel build's tools come from."""
    return {name: version for name, version in versions.items()
            if COMPILER_PACKAGES.match(name)}


def host_versions() -> dict[str, str]:
    """The version of every package installed on this host, as dpkg knows it."""
    try:
        output = commands.run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Status}\n"],
            keep_stderr=False)
    except PipelineError as exc:  # not installed, or failed
        raise EnvironmentProblem(f"dpkg-query cannot list this host's packages ({exc}); "
                                 "the host toolchain is recorded from Debian's dpkg") from None
    versions = {}
    for line in output.splitlines():
        name, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if status == "installed":
            versions[name] = version
    return dict(sorted(versions.items()))


def docker_image(client: docker.DockerClient, tarball: PackageTarball, reimport: bool) -> str:
    """Import the tarball into dockerd (again when `reimport`); return its reference."""
    import docker.errors

    reference = tarball.reference
    try:
        client.images.get(reference)
        if not reimport:
            return reference
        client.images.remove(reference, force=True)
    except docker.errors.ImageNotFound:
        pass
    log.info("importing %s as %s", tarball.path, reference)
    repository, tag = reference.split(":")
    client.api.import_image_from_file(str(tarball.path), repository=repository, tag=tag)
    return reference


def record(tarball: PackageTarball) -> PackageSet:
    """What the records keep of a package set: name, sha256, versions."""
    return PackageSet(tarball=tarball.path.name, sha256=tarball.sha256, pinned=tarball.pinned,
                      packages=tarball.packages)
