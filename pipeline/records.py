"""What each stage made, as frozen records saved one way.

Every stage returns a record, saved atomically as JSON with a schema number.
A later stage loads only the records it needs.  A record file that is
missing, unreadable or of another schema loads as None: its step simply runs
again (doit asks `is_current`), it is never an error.

Each record keeps what defines the artifact apart from what varies from run
to run: the `run` field holds durations, the host and tool output that does
not change the bytes; everything else is what the artifact depends on (the
manifest is made from those fields only).  The records are msgspec structs:
frozen, typed to the leaf, a file with an unknown key is not a record.

`kernel.json` and `image.json` sit in build/artifacts/ with the keys they
always had (plus "schema"); the other records live in build/records/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from .errors import MissingStepError
from .layout import Layout
from .util import atomic_write_text

SCHEMA = 1


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A frozen record: a file with a key this version does not know is not one."""


# ---------------------------------------------------------------- the kernel tree
#
# The source kinds share one identity and one resolution record; each kind
# fills its own fields and leaves the others unset (absent from the JSON).


class SourceIdentity(Record):
    """What the settings ask for, resolved cheaply: equal identities, same tree."""

    kind: str
    url: str | UnsetType = UNSET  # tarball
    signature_url: str | UnsetType = UNSET  # tarball ("" without one)
    path: str | UnsetType = UNSET  # local
    sha256: str | UnsetType = UNSET  # tarball, local
    package: str | UnsetType = UNSET  # debian
    version: str | UnsetType = UNSET  # debian
    repo: str | UnsetType = UNSET  # git
    commit: str | UnsetType = UNSET  # git


class SourceResolved(Record):
    """Which exact tree was fetched, and from where."""

    tarball: str | UnsetType = UNSET  # tarball, local, debian: the archive used
    sha256: str | UnsetType = UNSET  # tarball, local, debian
    signature_checked: bool | UnsetType = UNSET  # tarball
    keyring: str | UnsetType = UNSET  # tarball with a signature
    package: str | UnsetType = UNSET  # debian
    version: str | UnsetType = UNSET  # debian
    repo: str | UnsetType = UNSET  # git
    ref: str | UnsetType = UNSET  # git
    commit: str | UnsetType = UNSET  # git
    # git's commit time, as fetched; SourceRecord keeps it in its own field,
    # kernel.json's copy of this record carries it here.
    source_date_epoch: int | UnsetType = UNSET

    def shown(self) -> str:
        """'package=... sha256=... version=...': what was fetched, keys sorted (as the
        record file has them), without the local archive's path."""
        return " ".join(f"{key}={value}" for key, value in
                        sorted(msgspec.to_builtins(self).items()) if key != "tarball")


class FetchRun(Record):
    seconds: float = 0.0


class SourceRecord(Record):
    """The kernel tree in src/linux: which one, and how it was resolved."""

    kind: str
    identity: SourceIdentity
    resolved: SourceResolved
    kernel_version: str
    source_date_epoch: int
    tree_id: str  # new for every extraction: later steps notice a fresh tree
    run: FetchRun = FetchRun()


class SeriesRecord(Record):
    """The KVM series applied to the tree (none for a stock build)."""

    tree_id: str
    kernel_version: str
    series: str | None  # relative to the project
    patches: tuple[str, ...]
    patch_sha256: dict[str, str]
    digest: str


class ConfigRecord(Record):
    """The configured tree: fragments in, verified .config out."""

    tree_id: str
    variant: str
    fragments: tuple[str, ...]  # as the project names them (relative where possible)
    fragment_sha256: dict[str, str]
    checked_options: int
    config_sha256: str


# ---------------------------------------------------------------- the kernel


class KernelSource(Record):
    identity: SourceIdentity
    resolved: SourceResolved  # with source_date_epoch


class KernelPatches(Record):
    series: str | None
    patches: tuple[str, ...]
    digest: str


class Toolchain(Record):
    """The exact (dpkg) versions of the compiler's packages, and where they ran."""

    runtime: str  # host or docker
    packages: dict[str, str]
    sha256: str | UnsetType = UNSET  # docker: the toolchain tarball's


class BuildEnvironment(Record):
    """Varies from machine to machine: never part of the manifest."""

    gcc: str = ""
    make: str = ""
    host: str = ""


class CcacheStats(Record):
    """What ccache did for one build (pipeline.ccache.Stats), and its remote."""

    compiles: int  # cacheable compiles
    local_hits: int
    remote_hits: int
    misses: int  # compiled
    remote_errors: int  # the remote failed or timed out
    remote: str  # the remote's URL, credentials redacted ("" without one)
    remote_mode: str


class KernelRecord(Record):
    """build/artifacts/kernel.json: the kernel and its modules."""

    release: str
    kernel_version: str
    variant: str
    source: KernelSource
    patches: KernelPatches
    config_sha256: str
    bzImage_sha256: str
    module_sha256: dict[str, str]  # modules/<path> -> sha256, as in modules.sha256
    make_env: dict[str, str]  # the reproducible-builds variables
    toolchain: Toolchain
    ccache: bool  # how it was built, not what: the bytes are the same either way
    jobs: int  # the same
    environment: BuildEnvironment = BuildEnvironment()  # varies: tool versions, host
    seconds: dict[str, float] = {}  # varies
    ccache_stats: CcacheStats | None = None  # varies; None with ccache off


class KmodRecord(Record):
    """Our out-of-tree modules, built against one kernel release."""

    release: str
    modules: tuple[str, ...]
    sha256: dict[str, str]
    source_sha256: dict[str, str]


class SelftestsRecord(Record):
    """The kernel's KVM selftests, built from the tree and installed by kselftest."""

    kernel_version: str
    inputs_key: str  # pipeline.selftests.inputs_key: the files they build from, runtime
    tests: tuple[str, ...]  # the kselftest list's entries, "kvm:NAME"
    sha256: dict[str, str]  # selftests/<path> -> sha256, as in selftests.sha256
    seconds: float = 0.0  # varies


# ---------------------------------------------------------------- the image


class PackageSet(Record):
    """A package tarball (pipeline.tarballs): its file, sha256 and dpkg versions."""

    tarball: str  # the file's name
    sha256: str
    pinned: bool  # the settings named its sha256
    packages: dict[str, str]


class ImageBase(Record):
    """The image's base: a registry image (by digest) or a package tarball."""

    reference: str
    digest: str
    suite: str
    mirror: str
    tarball: str | None  # None: a registry base, known by its digest alone
    sha256: str | UnsetType = UNSET  # a tarball base: PackageSet's fields
    pinned: bool | UnsetType = UNSET
    packages: dict[str, str] | UnsetType = UNSET


class Ext4(Record):
    uuid: str
    size_mb: int
    source_date_epoch: int


class ImageRecord(Record):
    """build/artifacts/image.json: the guest's root filesystem."""

    release: str
    base: ImageBase
    toolchain: PackageSet  # the builder stage's packages
    inputs: dict[str, str]  # images/<path> -> sha256 of every file the build context took
    dockerfile_sha256: str  # the rendered Dockerfile
    ext4: Ext4
    rootfs_sha256: str
    with_kmod: bool
    with_selftests: bool
    image_id: str = ""  # varies: a local Docker id
    seconds: float = 0.0  # varies


# Where each record lives, by type.
_PATHS = {
    SourceRecord: lambda layout: layout.record("source"),
    SeriesRecord: lambda layout: layout.record("series"),
    ConfigRecord: lambda layout: layout.record("config"),
    KernelRecord: lambda layout: layout.kernel_json,
    KmodRecord: lambda layout: layout.record("kmod"),
    SelftestsRecord: lambda layout: layout.record("selftests"),
    ImageRecord: lambda layout: layout.image_json,
}
# The task that writes each record, for "run `doit X` first".
_TASKS = {SourceRecord: "fetch", SeriesRecord: "patch", ConfigRecord: "config",
          KernelRecord: "kernel", KmodRecord: "kmod", SelftestsRecord: "selftests",
          ImageRecord: "image"}

R = TypeVar("R")


def path(cls: type, layout: Layout) -> Path:
    return _PATHS[cls](layout)


def to_json(record: Record) -> str:
    data = {"schema": SCHEMA, **msgspec.to_builtins(record)}
    if isinstance(record, KernelRecord):
        # kernel.json's historical shape: make_env, ccache and jobs under
        # "environment", and no ccache stats an empty object.
        env = data.pop("environment")
        data["environment"] = {"make_env": data.pop("make_env"), "ccache": data.pop("ccache"),
                               "jobs": data.pop("jobs"), **env}
        data["ccache_stats"] = data["ccache_stats"] or {}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def from_json(cls: type[R], text: str) -> R | None:
    """The record in `text`, or None when it is not one of this schema and shape."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("schema", None) != SCHEMA:
            return None
        if cls is KernelRecord:
            env = dict(data.pop("environment"))
            data.update(make_env=env.pop("make_env"), ccache=env.pop("ccache"),
                        jobs=env.pop("jobs"), environment=env,
                        ccache_stats=data.get("ccache_stats") or None)
        return msgspec.convert(data, cls)
    except (json.JSONDecodeError, msgspec.ValidationError, KeyError, TypeError):
        return None


def save(record: Record, layout: Layout) -> Path:
    dest = path(type(record), layout)
    atomic_write_text(dest, to_json(record))
    return dest


def load(cls: type[R], layout: Layout) -> R | None:
    try:
        return from_json(cls, path(cls, layout).read_text())
    except FileNotFoundError:
        return None


def require(cls: type[R], layout: Layout) -> R:
    """The record a stage cannot work without; naming the task that makes it."""
    record = load(cls, layout)
    if record is None:
        raise MissingStepError(f"{path(cls, layout)}", _TASKS[cls])
    return record


# ---------------------------------------------------------------- typed JSON files
#
# The hand-offs past the build (a guest run's results, a matrix's cells) are
# msgspec structs with a `schema` field: written indented, read back typed.

Typed = TypeVar("Typed", bound=msgspec.Struct)


def write_typed(path: Path, record: object) -> None:
    """`record` (a struct, or a dict of them) as indented JSON at `path`, written atomically."""
    text = msgspec.json.format(msgspec.json.encode(record), indent=2).decode()
    atomic_write_text(path, text + "\n")


def read_typed(path: Path, kind: type[Typed], schema: int) -> Typed | None:
    """The `kind` record at `path`; None when it is missing, unreadable, not of that
    shape or of another schema (an older pipeline's)."""
    try:
        record = msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError):
        return None
    return record if record.schema == schema else None
