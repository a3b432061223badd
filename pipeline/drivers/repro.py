"""`doit repro`: rebuild everything from nothing and compare with a manifest.

The rebuild runs the whole build chain in <build>/repro/build, made afresh,
with every cache that could hide a difference off: ccache reads nothing (its
"recache" mode: every object is compiled afresh, then stored, so a later
build at the same paths, e.g. any kernel.runtime=docker build, is warm), the tree
extracted from its archive (not linked from the tree cache), the package
tarballs imported into dockerd again and `docker build --no-cache`.  Its
manifest is then compared with the build's own or with repro.against (one a
CI run published, with the artifacts and tarballs beside it): inputs apart
from artifacts.  Each artifact that differs gets a diffoscope report in
<build>/repro/diffoscope/ (rootfs.ext4 as the file trees it holds: diffoscope
on a raw ext4 image is a hexdump).

Exit codes (through `python -m pipeline repro`): 0 every input the same and
every artifact identical; 11 an input differs (the rebuild is not of the
manifest's inputs, so identical artifacts prove nothing about them: each
difference is named); 10 the inputs are the same and an artifact differs;
2 an input of the manifest is not available here (a package set the mirror
has moved on from, with no pinned tarball).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgspec import UNSET

from .. import chain, commands, manifest, tarballs
from ..errors import (
    ArtifactsDiffer,
    CommandError,
    CommandTimedOut,
    InputsDiffer,
    InputUnavailable,
    PipelineError,
)
from ..layout import Layout
from ..manifest import Manifest
from ..settings import Settings, derive
from ..util import atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

DIFFOSCOPE_SHOWN = 15  # lines of each report printed
DIFFOSCOPE_MOST = 6  # differing artifacts explained (a toolchain change moves every module)
DIFFOSCOPE_SECONDS = 300
INPUTS_SHOWN = 30  # input differences printed (all are in report.json)


@dataclass(frozen=True)
class ArtifactRow:
    name: str
    expected: str | None  # the manifest's digest
    got: str | None  # the rebuild's
    published: str | None = None  # the file beside the manifest, when it is there

    @property
    def note(self) -> str:
        if self.published is not None and self.published != self.expected:
            return "the published file does not match its own manifest"
        return ""

    @property
    def same(self) -> bool:
        return self.expected is not None and self.expected == self.got and not self.note


def against_path(settings: Settings) -> Path:
    if settings.repro.against:
        return settings.resolve(settings.repro.against)
    return settings.layout.manifest


def rebuild_settings(settings: Settings, expected: Manifest, published: Path) -> Settings:
    """The settings of the rebuild: its own build dir, every cache off, the manifest's
    package tarballs pinned when they were published beside it, and a Debian source
    pinned to the manifest's version unless source.version says otherwise."""
    layout = settings.layout
    image: dict[str, Any] = {"docker_cache": False}
    for role in tarballs.ROLES:
        wanted = getattr(expected.inputs.image, role).sha256
        candidate = published / f"{role}.tar"
        value, _ = tarballs.choice(settings, role)
        if wanted and value == "mmdebstrap" and candidate.is_file() \
                and tarballs.sha256_of(candidate) == wanted:
            log.info("repro: using the published %s tarball %s", role, candidate)
            image.update({role: f"tarball:{candidate}", f"{role}_sha256": wanted})
    source: dict[str, Any] = {"tree_cache": False}
    want_source = expected.inputs.source
    if settings.source.kind == "debian" and not settings.source.version \
            and want_source.kind == "debian":
        source["version"] = want_source.version
    ccache = "off"
    if settings.kernel.ccache != "off" and (settings.kernel.runtime == "docker"
                                            or shutil.which("ccache")):
        ccache = "recache"
    return derive(settings, {"source": source, "image": image,
                             "kernel": {"ccache": ccache, "ccache_remote": ""},
                             "paths": {"build": str(layout.repro_build)}}, "the rebuild")


def check_package_sets(settings: Settings, expected: Manifest) -> None:
    """The rebuild's package tarballs must hold the manifest's versions (else exit 2)."""
    problems = []
    for role in tarballs.ROLES:
        want = getattr(expected.inputs.image, role)
        if want.packages is UNSET or not tarballs.is_local(settings, role):
            continue
        have = tarballs.ensure(settings, role)
        moved = manifest.differences(want.packages, have.packages)
        if moved:
            shown = ", ".join(f"{d.key} {d.expected or '(none)'} (here: {d.got or 'none'})"
                              for d in moved[:8])
            more = f" and {len(moved) - 8} more" if len(moved) > 8 else ""
            problems.append(
                f"the manifest's {role} package set is not the one available here: "
                f"{shown}{more}. Pin the {role} tarball published with the manifest: "
                f"image.{role}=tarball:PATH image.{role}_sha256={want.sha256} (or put it "
                f"beside the manifest as {role}.tar)")
    if problems:
        raise InputUnavailable("\n".join(problems))


def rebuild(settings: Settings) -> float:
    """The whole build chain in a fresh directory; return its duration."""
    build = settings.layout.build
    remove_tree(build)
    cache = "ccache off" if settings.kernel.ccache == "off" else "ccache compiling afresh"
    print(f"repro: rebuilding in {build}: {cache}, tree extracted afresh, package "
          "tarballs imported again, docker build --no-cache", flush=True)
    started = time.monotonic()
    outcome = chain.run(["build"], settings)
    seconds = time.monotonic() - started
    if outcome.error is not None:
        raise outcome.error
    if not outcome.ok:
        raise PipelineError(f"the rebuild in {build} failed (exit {outcome.code}); its "
                            f"logs are in {settings.layout.logs}")
    print(f"repro: rebuilt in {seconds // 60:.0f} min {seconds % 60:.0f} s", flush=True)
    return seconds


def artifact_rows(expected: Manifest, published: Path, got: Manifest) -> list[ArtifactRow]:
    """Every artifact of either manifest; a file published beside the expected
    manifest counts by its own bytes (it may have been changed after the build)."""
    rows = []
    want, have = expected.artifacts, got.artifacts
    for name in sorted(set(want) | set(have)):
        path = published / name
        actual = file_sha256(path) if name in want and path.is_file() else None
        rows.append(ArtifactRow(name, want.get(name), have.get(name), actual))
    return rows


def _diffoscope(old: Path, new: Path, report: Path) -> list[str]:
    """diffoscope's text report on two files or trees; its first lines."""
    if shutil.which("diffoscope") is None:
        return ["diffoscope is not installed (scripts/setup installs diffoscope-minimal)"]
    report.parent.mkdir(parents=True, exist_ok=True)
    argv = ["diffoscope", "--text", str(report), "--no-progress", str(old), str(new)]
    if old.is_dir():
        # Extracted trees: their files' times and owners are the extraction's,
        # not the image's, and would drown what differs inside the files.
        argv[1:1] = ["--exclude-directory-metadata=yes"]
    try:
        commands.run(argv, timeout=DIFFOSCOPE_SECONDS)
    except CommandTimedOut:
        return [f"diffoscope took longer than {DIFFOSCOPE_SECONDS} s; no report"]
    except CommandError as exc:
        if exc.returncode != 1:  # 1: they differ
            return [f"diffoscope failed: {exc.output_tail[-500:]}"]
        if report.is_file():
            return report.read_text(errors="replace").splitlines()[:DIFFOSCOPE_SHOWN]
    # Equal contents: for rootfs.ext4 the difference is in the image itself
    # (its metadata, times, owners or layout), not in the files it holds.
    return ["diffoscope finds the contents equal: only the container's own bytes differ"
            " (for rootfs.ext4: file metadata or the image's layout)"]


def explain(row: ArtifactRow, published: Path, rebuilt: Path, reports: Path) -> list[str]:
    """diffoscope on one differing artifact whose both copies are here."""
    old, new = published / row.name, rebuilt / row.name
    if not (old.is_file() and new.is_file()):
        return [f"(no diffoscope report: {old if not old.is_file() else new} is not here)"]
    report = reports / (row.name.replace("/", "_") + ".txt")
    if row.name != "rootfs.ext4":
        return _diffoscope(old, new, report)
    with tempfile.TemporaryDirectory(dir=reports.parent, prefix=".ext4-") as tmp:
        trees = []
        for image, side in ((old, "expected"), (new, "rebuilt")):
            tree = Path(tmp) / side
            tree.mkdir()
            try:  # the file tree inside the image, without mounting it
                commands.run(["debugfs", "-R", f"rdump / {tree}", image])
            except CommandError as exc:
                return [f"cannot read the files of {image}: {exc.output_tail[-300:]}"]
            trees.append(tree)
        return _diffoscope(*trees, report)


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text[:16] if len(text) == 64 else text


def print_report(inputs: list[manifest.Difference], rows: list[ArtifactRow],
                 against: Path) -> None:
    width = max([len(row.name) for row in rows] + [8])
    print(f"\nrepro: artifacts, rebuilt vs {against}")
    for row in rows:
        status = "same" if row.same else "DIFFERS"
        note = f"  ({row.note})" if row.note else ""
        print(f"  {row.name:<{width}}  {status:<7}  {_short(row.expected)}  {_short(row.got)}"
              f"{note}")
    if not inputs:
        print("repro: inputs: all the same")
        return
    print(f"repro: inputs that differ ({len(inputs)}; expected, then rebuilt):")
    for diff in inputs[:INPUTS_SHOWN]:
        print(f"  {diff.key}: {_short(diff.expected)} -> {_short(diff.got)}")
    if len(inputs) > INPUTS_SHOWN:
        print(f"  ... and {len(inputs) - INPUTS_SHOWN} more (the report has them all)")


def compare(expected: Manifest, published: Path, rebuilt_layout: Layout,
            reports: Path) -> tuple[list[manifest.Difference], list[ArtifactRow], dict]:
    got = manifest.load(rebuilt_layout.manifest)
    inputs = manifest.differences(expected.inputs, got.inputs)
    rows = artifact_rows(expected, published, got)
    explained = {}
    for row in (row for row in rows if not row.same):
        if len(explained) == DIFFOSCOPE_MOST:
            explained[row.name] = [f"(not explained: diffoscope runs on the first "
                                   f"{DIFFOSCOPE_MOST} that differ)"]
        else:
            explained[row.name] = explain(row, published, rebuilt_layout.artifacts, reports)
    return inputs, rows, explained


def repro(settings: Settings) -> None:
    """The `repro` task."""
    layout = settings.layout
    against = against_path(settings)
    # Nothing of an earlier repro may pass for this one's, whatever happens next.
    layout.repro_report.unlink(missing_ok=True)
    remove_tree(layout.repro_diffs)
    expected = manifest.load(against)
    published = against.parent
    fresh = rebuild_settings(settings, expected, published)
    seconds = None
    if settings.repro.rebuild:
        check_package_sets(fresh, expected)
        seconds = rebuild(fresh)
    elif not fresh.layout.manifest.is_file():
        raise InputUnavailable(f"repro.rebuild=false compares the last rebuild, but there is "
                               f"none in {fresh.layout.build}: run `doit repro` first")
    inputs, rows, explained = compare(expected, published, fresh.layout, layout.repro_diffs)
    print_report(inputs, rows, against)
    for name, lines in explained.items():
        print(f"\nrepro: {name} differs; diffoscope (first lines, the whole report is in "
              f"{layout.repro_diffs}):")
        print("\n".join(f"  {text}" for text in lines))
    differing = [row.name for row in rows if not row.same]
    verdict = ("inputs differ" if inputs else "artifacts differ" if differing
               else "identical")
    report = {
        "verdict": verdict, "against": str(against), "rebuilt": str(fresh.layout.build),
        "seconds": seconds,
        "inputs": [dataclasses.asdict(diff) for diff in inputs],
        "artifacts": [{**dataclasses.asdict(row), "same": row.same, "note": row.note,
                       "diffoscope": explained.get(row.name)} for row in rows],
    }
    atomic_write_text(layout.repro_report, json.dumps(report, indent=2, sort_keys=True) + "\n")
    if inputs:
        artifacts = (f"{len(differing)} of {len(rows)} artifacts differ" if differing
                     else f"all {len(rows)} artifacts are identical")
        raise InputsDiffer(
            f"{len(inputs)} input(s) of the rebuild are not those of {against}: "
            f"{', '.join(diff.key for diff in inputs[:5])}{' ...' if len(inputs) > 5 else ''}; "
            f"{artifacts}, but that does not verify the manifest. Rebuild with its inputs "
            f"(its kernel.runtime and toolchain, source version, series, fragments, images/ "
            f"and kmod/ as recorded) (report: {layout.repro_report})")
    if differing:
        raise ArtifactsDiffer(
            f"{len(differing)} of {len(rows)} artifacts differ from {against}: "
            f"{', '.join(differing[:5])}{' ...' if len(differing) > 5 else ''} (report: "
            f"{layout.repro_report})")
    print(f"repro: every input the same, all {len(rows)} artifacts identical to {against}",
          flush=True)
