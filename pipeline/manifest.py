"""build/artifacts/manifest.json: what the artifacts are, and everything their bytes depend on.

Made by `doit build` from the stage records only, never from the clock or
the machine: no durations, no absolute paths, no host name, no Docker image
ids, keys sorted.  Two builds of the same inputs therefore write the same
manifest byte for byte, and its sha256 is one line a CI log or release note
can carry.  `doit repro` compares two manifests: inputs apart from artifacts.

    inputs     source (kind, version or commit, archive sha256), patch series,
               config (variant, fragment digests, final .config digest),
               kernel (release, reproducible-builds variables, toolchain
               runtime and exact package versions), kmod sources, image
               (images/ files, rendered Dockerfile, ext4 settings, the base's
               and the toolchain's package sets)
    artifacts  the sha256 of bzImage, each file under modules/, each .ko under
               kmod/, each file under selftests/ (the KVM selftests, built
               from the tree), rootfs.ext4
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from . import records
from .errors import UserError
from .layout import Layout
from .records import (
    ConfigRecord,
    Ext4,
    ImageBase,
    ImageRecord,
    KernelRecord,
    KmodRecord,
    PackageSet,
    Record,
    SelftestsRecord,
    SeriesRecord,
    SourceRecord,
    Toolchain,
)
from .util import write_if_changed

SCHEMA = 1


class SourceInputs(Record):
    """What the tree is: where it lay or how it was named (git's repo and ref, an
    archive's path) would differ for the same bytes."""

    kind: str
    kernel_version: str
    source_date_epoch: int
    package: str | UnsetType = UNSET
    version: str | UnsetType = UNSET
    sha256: str | UnsetType = UNSET
    commit: str | UnsetType = UNSET
    signature_checked: bool | UnsetType = UNSET


class PatchInputs(Record):
    series: str | None
    digest: str
    sha256: dict[str, str]


class ConfigInputs(Record):
    variant: str
    fragments: dict[str, str]  # name -> sha256
    config_sha256: str


class KernelInputs(Record):
    release: str
    make_env: dict[str, str]
    toolchain: Toolchain


class KmodInputs(Record):
    sources: dict[str, str]


class PackageInputs(Record):
    """A package set by content: a tarball's sha256 and versions, or (a registry
    base) its manifest digest; never where the tarball lies."""

    digest: str | UnsetType = UNSET
    sha256: str | UnsetType = UNSET
    packages: dict[str, str] | UnsetType = UNSET


class ImageInputs(Record):
    files: dict[str, str]
    dockerfile_sha256: str
    ext4: Ext4
    with_kmod: bool
    with_selftests: bool
    base: PackageInputs
    toolchain: PackageInputs


class Inputs(Record):
    source: SourceInputs
    patches: PatchInputs
    config: ConfigInputs
    kernel: KernelInputs
    kmod: KmodInputs
    image: ImageInputs


class Manifest(Record):
    schema: int
    inputs: Inputs
    artifacts: dict[str, str]  # name -> sha256, sorted by name


def build(layout: Layout) -> Manifest:
    """The manifest of the build in `layout`, from its records."""
    source, series, config, kernel, kmod, image = (
        records.require(cls, layout) for cls in
        (SourceRecord, SeriesRecord, ConfigRecord, KernelRecord, KmodRecord, ImageRecord))
    inputs = Inputs(
        source=source_inputs(source),
        patches=PatchInputs(series=series.series, digest=series.digest,
                            sha256=series.patch_sha256),
        config=ConfigInputs(
            variant=config.variant,
            # A fragment outside the project is named by its file name.
            fragments={Path(name).name if Path(name).is_absolute() else name: sha
                       for name, sha in config.fragment_sha256.items()},
            config_sha256=config.config_sha256),
        kernel=KernelInputs(release=kernel.release, make_env=kernel.make_env,
                            toolchain=kernel.toolchain),
        kmod=KmodInputs(sources=kmod.source_sha256),
        image=ImageInputs(files=image.inputs, dockerfile_sha256=image.dockerfile_sha256,
                          ext4=image.ext4, with_kmod=image.with_kmod,
                          with_selftests=image.with_selftests,
                          base=_package_set(image.base), toolchain=_package_set(image.toolchain)),
    )
    selftests = records.require(SelftestsRecord, layout) if image.with_selftests else None
    artifacts = {"bzImage": kernel.bzImage_sha256, **kernel.module_sha256, **kmod.sha256,
                 **(selftests.sha256 if selftests else {}), "rootfs.ext4": image.rootfs_sha256}
    return Manifest(schema=SCHEMA, inputs=inputs, artifacts=dict(sorted(artifacts.items())))


def source_inputs(source: SourceRecord) -> SourceInputs:
    """What the tree is, from its record (not where it lay or how it was named)."""
    resolved = source.resolved
    return SourceInputs(kind=source.kind, kernel_version=source.kernel_version,
                        source_date_epoch=source.source_date_epoch,
                        package=resolved.package, version=resolved.version,
                        sha256=resolved.sha256, commit=resolved.commit,
                        signature_checked=resolved.signature_checked)


def _package_set(record: ImageBase | PackageSet) -> PackageInputs:
    if record.tarball is None:  # a registry base: its manifest digest
        return PackageInputs(digest=record.digest)
    return PackageInputs(sha256=record.sha256, packages=record.packages)


def dumps(manifest: Manifest) -> str:
    return json.dumps(msgspec.to_builtins(manifest), indent=2, sort_keys=True) + "\n"


def write(layout: Layout) -> str:
    """Write manifest.json (only when it changed); return its sha256."""
    text = dumps(build(layout))
    write_if_changed(layout.manifest, text)
    return hashlib.sha256(text.encode()).hexdigest()


def invalidate(layout: Layout) -> None:
    """A step is changing the artifacts: until `doit build` writes it again, no
    manifest may describe them."""
    layout.manifest.unlink(missing_ok=True)


def load(path: Path) -> Manifest:
    """A manifest from a file, checked enough to compare with."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest at {path}: run `doit build` first, or name one with "
                        "repro.against=PATH") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable manifest ({exc})") from None
    try:
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise msgspec.ValidationError(f"its schema is {data.get('schema')!r}"
                                          if isinstance(data, dict) else "not an object")
        return msgspec.convert(data, Manifest)
    except msgspec.ValidationError as exc:
        raise UserError(f"{path} is not a manifest of schema {SCHEMA} ({exc}); was it "
                        "written by `doit build` of this project?") from None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: every leaf under a dotted key."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


@dataclass(frozen=True)
class Difference:
    """One key whose value differs; None where a side does not have it."""

    key: str
    expected: Any
    got: Any


def differences(expected: object, got: object) -> list[Difference]:
    """Every leaf that differs between two manifests (or parts of them)."""
    flat_expected = flatten(msgspec.to_builtins(expected))
    flat_got = flatten(msgspec.to_builtins(got))
    return [Difference(key, flat_expected.get(key), flat_got.get(key))
            for key in sorted(set(flat_expected) | set(flat_got))
            if flat_expected.get(key) != flat_got.get(key)]
