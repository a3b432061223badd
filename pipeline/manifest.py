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

from . import records
from .errors import UserError
from .layout import Layout
from .records import (
    ConfigRecord,
    ImageRecord,
    KernelRecord,
    KmodRecord,
    SelftestsRecord,
    SeriesRecord,
    SourceRecord,
)
from .util import write_if_changed

SCHEMA = 1
# Resolved source fields that say what the tree is (where it lay or how it was
# named, e.g. git's repo and ref, would differ for the same bytes).
CONTENT_FIELDS = ("package", "version", "sha256", "commit", "signature_checked")


def build(layout: Layout) -> dict[str, Any]:
    """The manifest of the build in `layout`, from its records."""
    source, series, config, kernel, kmod, image = (
        records.require(cls, layout) for cls in
        (SourceRecord, SeriesRecord, ConfigRecord, KernelRecord, KmodRecord, ImageRecord))
    inputs = {
        "source": {"kind": source.kind, "kernel_version": source.kernel_version,
                   "source_date_epoch": source.source_date_epoch,
                   **{k: v for k, v in source.resolved.items() if k in CONTENT_FIELDS}},
        "patches": {"series": series.series, "digest": series.digest,
                    "sha256": series.patch_sha256},
        "config": {"variant": config.variant,
                   # A fragment outside the project is named by its file name.
                   "fragments": {Path(name).name if Path(name).is_absolute() else name: sha
                                 for name, sha in config.fragment_sha256.items()},
                   "config_sha256": config.config_sha256},
        "kernel": {"release": kernel.release, "make_env": kernel.make_env,
                   "toolchain": kernel.toolchain},
        "kmod": {"sources": kmod.source_sha256},
        "image": {"files": image.inputs, "dockerfile_sha256": image.dockerfile_sha256,
                  "ext4": image.ext4, "with_kmod": image.with_kmod,
                  "with_selftests": image.with_selftests,
                  "base": _package_set(image.base), "toolchain": _package_set(image.toolchain)},
    }
    selftests = records.require(SelftestsRecord, layout) if image.with_selftests else None
    artifacts = {"bzImage": kernel.bzImage_sha256, **kernel.module_sha256, **kmod.sha256,
                 **(selftests.sha256 if selftests else {}), "rootfs.ext4": image.rootfs_sha256}
    return {"schema": SCHEMA, "inputs": inputs, "artifacts": dict(sorted(artifacts.items()))}


def _package_set(record: dict[str, Any]) -> dict[str, Any]:
    """A package set by content: the digest and versions, not where the tarball lies."""
    if record.get("tarball") is None:  # a registry base: its manifest digest
        return {"digest": record["digest"]}
    return {"sha256": record["sha256"], "packages": record["packages"]}


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write(layout: Layout) -> str:
    """Write manifest.json (only when it changed); return its sha256."""
    text = dumps(build(layout))
    write_if_changed(layout.manifest, text)
    return hashlib.sha256(text.encode()).hexdigest()


def invalidate(layout: Layout) -> None:
    """A step is changing the artifacts: until `doit build` writes it again, no
    manifest may describe them."""
    layout.manifest.unlink(missing_ok=True)


def load(path: Path) -> dict[str, Any]:
    """A manifest from a file, checked enough to compare with."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no manifest at {path}: run `doit build` first, or name one with "
                        "repro.against=PATH") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA \
            or not isinstance(data.get("inputs"), dict) \
            or not isinstance(data.get("artifacts"), dict):
        raise UserError(f"{path} is not a manifest of schema {SCHEMA} (with inputs and "
                        "artifacts); was it written by `doit build` of this project?")
    return data


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


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[Difference]:
    flat_expected, flat_got = flatten(expected), flatten(got)
    return [Difference(key, flat_expected.get(key), flat_got.get(key))
            for key in sorted(set(flat_expected) | set(flat_got))
            if flat_expected.get(key) != flat_got.get(key)]
