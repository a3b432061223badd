"""What each stage made, as frozen records saved one way.

Every stage returns a record, saved atomically as JSON with a schema number.
A later stage loads only the records it needs.  A record file that is
missing, unreadable or of another schema loads as None: its step simply runs
again (doit asks `is_current`), it is never an error.

Each record keeps what defines the artifact apart from what varies from run
to run: the `run` field holds durations, the host and tool output that does
not change the bytes; everything else is what the artifact depends on (the
coming manifest is made from those fields only).

`kernel.json` and `image.json` sit in build/artifacts/ with the keys they
always had (plus "schema"); the other records live in build/records/.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from .errors import MissingStepError
from .layout import Layout
from .util import atomic_write_text

SCHEMA = 1


@dataclass(frozen=True)
class SourceRecord:
    """The kernel tree in src/linux: which one, and how it was resolved."""

    kind: str
    identity: dict[str, Any]  # what the settings asked for, resolved cheaply
    resolved: dict[str, Any]  # package version, tarball sha256, commit id ...
    kernel_version: str
    source_date_epoch: int
    tree_id: str  # new for every extraction: later steps notice a fresh tree
    run: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesRecord:
    """The KVM series applied to the tree (none for a stock build)."""

    tree_id: str
    kernel_version: str
    series: str | None  # relative to the project
    patches: tuple[str, ...]
    patch_sha256: dict[str, str]
    digest: str


@dataclass(frozen=True)
class ConfigRecord:
    """The configured tree: fragments in, verified .config out."""

    tree_id: str
    variant: str
    fragments: tuple[str, ...]  # as the project names them (relative where possible)
    fragment_sha256: dict[str, str]
    checked_options: int
    config_sha256: str


@dataclass(frozen=True)
class KernelRecord:
    """build/artifacts/kernel.json: the kernel and its modules."""

    release: str
    kernel_version: str
    variant: str
    source: dict[str, Any]
    patches: dict[str, Any]
    config_sha256: str
    bzImage_sha256: str
    module_sha256: dict[str, str]  # modules/<path> -> sha256, as in modules.sha256
    make_env: dict[str, str]  # the reproducible-builds variables
    toolchain: dict[str, Any]  # runtime (host or docker) and its exact package versions
    ccache: bool  # how it was built, not what: the bytes are the same either way
    jobs: int  # the same
    environment: dict[str, Any] = field(default_factory=dict)  # varies: tool versions, host
    seconds: dict[str, float] = field(default_factory=dict)  # varies
    # varies: what ccache did (pipeline.ccache.Stats; the remote, credentials redacted)
    ccache_stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KmodRecord:
    """Our out-of-tree modules, built against one kernel release."""

    release: str
    modules: tuple[str, ...]
    sha256: dict[str, str]
    source_sha256: dict[str, str]


@dataclass(frozen=True)
class SelftestsRecord:
    """The kernel's KVM selftests, built from the tree and installed by kselftest."""

    kernel_version: str
    inputs_key: str  # pipeline.selftests.inputs_key: the files they build from, runtime
    tests: tuple[str, ...]  # the kselftest list's entries, "kvm:NAME"
    sha256: dict[str, str]  # selftests/<path> -> sha256, as in selftests.sha256
    seconds: float = 0.0  # varies


@dataclass(frozen=True)
class ImageRecord:
    """build/artifacts/image.json: the guest's root filesystem."""

    release: str
    base: dict[str, Any]  # reference, digest, suite, mirror; tarball, sha256, packages
    toolchain: dict[str, Any]  # the builder stage's package tarball: sha256, packages
    inputs: dict[str, str]  # images/<path> -> sha256 of every file the build context took
    dockerfile_sha256: str  # the rendered Dockerfile
    ext4: dict[str, Any]  # uuid, size_mb, source_date_epoch
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


def to_json(record: object) -> str:
    data = {"schema": SCHEMA, **dataclasses.asdict(record)}
    if isinstance(record, KernelRecord):
        # kernel.json's historical shape: make_env, ccache and jobs under "environment".
        env = data.pop("environment")
        data["environment"] = {"make_env": data.pop("make_env"), "ccache": data.pop("ccache"),
                               "jobs": data.pop("jobs"), **env}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def from_json(cls: type[R], text: str) -> R | None:
    """The record in `text`, or None when it is not one of this schema."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("schema", None) != SCHEMA:
            return None
        if cls is KernelRecord:
            env = dict(data.pop("environment"))
            data.update(make_env=env.pop("make_env"), ccache=env.pop("ccache"),
                        jobs=env.pop("jobs"), environment=env)
        names = {f.name: f for f in dataclasses.fields(cls)}
        if set(data) - set(names):
            return None
        for name, value in data.items():
            if names[name].type.startswith("tuple") and isinstance(value, list):
                data[name] = tuple(value)
        return cls(**data)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def save(record: object, layout: Layout) -> Path:
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


def write_typed(path: Path, record: msgspec.Struct) -> None:
    """`record` as indented JSON at `path`, written atomically."""
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
