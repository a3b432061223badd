"""`doit repro`: rebuild everything from nothing and compare with a manifest.

The rebuild runs the whole build chain in <build>/repro/build, made afresh,
with every cache that could hide a difference off: ccache off, the tree
extracted from its archive (not linked from the tree cache), the package
tarballs imported into dockerd again and `docker build --no-cache`.  Its
manifest is then compared with the build's own or with repro.against (one a
CI run published, with the artifacts and tarballs beside it): inputs apart
from artifacts.  Each artifact that differs gets a diffoscope report in
<build>/repro/diffoscope/ (rootfs.ext4 as the file trees it holds: diffoscope
on a raw ext4 image is a hexdump).

Exit codes (through `python -m pipeline repro`): 0 every artifact identical,
10 an artifact differs, 2 an input of the manifest is not available here
(a package set the mirror has moved on from, with no pinned tarball).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import chain, commands, manifest, tarballs
from .errors import ArtifactsDiffer, CommandError, InputUnavailable, PipelineError
from .layout import Layout
from .settings import Settings
from .util import atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

DIFFOSCOPE_SHOWN = 15  # lines of each report printed
INPUTS_SHOWN = 30  # input differences printed (all are in report.json)
DIFFOSCOPE_SECONDS = 600


@dataclass(frozen=True)
class ArtifactRow:
    name: str
    expected: str | None
    got: str | None
    note: str = ""  # e.g. a published file that does not match its own manifest

    @property
    def same(self) -> bool:
        return self.expected is not None and self.expected == self.got


def against_path(settings: Settings) -> Path:
    if settings.repro.against:
        return settings.resolve(settings.repro.against)
    return settings.layout.manifest


def rebuild_settings(settings: Settings, expected: dict[str, Any], published: Path) -> Settings:
    """The settings of the rebuild: its own build dir, every cache off, the manifest's
    package tarballs pinned when they were published beside it, and a Debian source
    pinned to the manifest's version unless source.version says otherwise."""
    layout = settings.layout
    image = dataclasses.replace(settings.image, docker_cache=False)
    for role in tarballs.ROLES:
        wanted = expected["inputs"]["image"][role].get("sha256")
        candidate = published / f"{role}.tar"
        value, _ = tarballs.choice(settings, role)
        if wanted and value == "mmdebstrap" and candidate.is_file() \
                and file_sha256(candidate) == wanted:
            log.info("repro: using the published %s tarball %s", role, candidate)
            image = dataclasses.replace(image, **{role: f"tarball:{candidate}",
                                                  f"{role}_sha256": wanted})
    source = dataclasses.replace(settings.source, tree_cache=False)
    want_source = expected["inputs"]["source"]
    if source.kind == "debian" and not source.version and want_source.get("kind") == "debian":
        source = dataclasses.replace(source, version=want_source["version"])
    return dataclasses.replace(
        settings, source=source, image=image,
        kernel=dataclasses.replace(settings.kernel, ccache="off"),
        paths=dataclasses.replace(settings.paths, build=str(layout.repro_build)))


def check_package_sets(settings: Settings, expected: dict[str, Any]) -> None:
    """The rebuild's package tarballs must hold the manifest's versions (else exit 2)."""
    problems = []
    for role in tarballs.ROLES:
        want = expected["inputs"]["image"][role]
        if "packages" not in want or not tarballs.is_local(settings, role):
            continue
        have = tarballs.ensure(settings, role)
        moved = manifest.differences(want["packages"], have.packages)
        if moved:
            shown = ", ".join(f"{d.key} {d.expected or '(none)'} (here: {d.got or 'none'})"
                              for d in moved[:8])
            more = f" and {len(moved) - 8} more" if len(moved) > 8 else ""
            problems.append(
                f"the manifest's {role} package set is not the one available here: "
                f"{shown}{more}. Pin the {role} tarball published with the manifest: "
                f"image.{role}=tarball:PATH image.{role}_sha256={want['sha256']} (or put it "
                f"beside the manifest as {role}.tar)")
    if problems:
        raise InputUnavailable("\n".join(problems))


def rebuild(settings: Settings) -> float:
    """The whole build chain in a fresh directory; return its duration."""
    build = settings.layout.build
    remove_tree(build)
    print(f"repro: rebuilding in {build}: ccache off, tree extracted afresh, package "
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


def artifact_rows(expected: dict[str, Any], published: Path,
                  got: dict[str, Any]) -> list[ArtifactRow]:
    """Every artifact of either manifest; a file published beside the expected
    manifest counts by its own bytes (it may have been changed after the build)."""
    rows = []
    want, have = expected["artifacts"], got["artifacts"]
    for name in sorted(set(want) | set(have)):
        digest, note = want.get(name), ""
        path = published / name
        if digest is not None and path.is_file():
            actual = file_sha256(path)
            if actual != digest:
                note = "the published file does not match its own manifest"
                digest = actual
        rows.append(ArtifactRow(name, digest, have.get(name), note))
    return rows


def _diffoscope(old: Path, new: Path, report: Path) -> list[str]:
    """diffoscope's text report on two files or trees; its first lines."""
    if shutil.which("diffoscope") is None:
        return ["diffoscope is not installed (scripts/setup installs diffoscope-minimal)"]
    report.parent.mkdir(parents=True, exist_ok=True)
    argv = ["diffoscope", "--text", str(report), "--no-progress", str(old), str(new)]
    log.info("$ %s", commands.quote(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=DIFFOSCOPE_SECONDS)
    except subprocess.TimeoutExpired:
        return [f"diffoscope took longer than {DIFFOSCOPE_SECONDS} s; no report"]
    if done.returncode not in (0, 1):  # 1: they differ
        return [f"diffoscope failed: {done.stderr.strip()[-500:]}"]
    return report.read_text(errors="replace").splitlines()[:DIFFOSCOPE_SHOWN]


def _ext4_tree(image: Path, dest: Path) -> None:
    """The file tree inside an ext4 image, without mounting it."""
    dest.mkdir(parents=True)
    try:
        commands.run(["debugfs", "-R", f"rdump / {dest}", image])
    except CommandError as exc:
        raise ArtifactsDiffer(f"cannot read the file tree of {image}:\n{exc.output_tail}") \
            from None


def explain(row: ArtifactRow, published: Path, rebuilt: Path, reports: Path) -> list[str]:
    """diffoscope on one differing artifact whose both copies are here."""
    old, new = published / row.name, rebuilt / row.name
    if not (old.is_file() and new.is_file()):
        return [f"(no diffoscope report: {old if not old.is_file() else new} is not here)"]
    report = reports / (row.name.replace("/", "_") + ".txt")
    if row.name != "rootfs.ext4":
        return _diffoscope(old, new, report)
    with tempfile.TemporaryDirectory(dir=reports.parent, prefix=".ext4-") as tmp:
        _ext4_tree(old, Path(tmp) / "expected")
        _ext4_tree(new, Path(tmp) / "rebuilt")
        return _diffoscope(Path(tmp) / "expected", Path(tmp) / "rebuilt", report)


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text[:16] if len(text) == 64 else text


def print_report(inputs: list[manifest.Difference], rows: list[ArtifactRow],
                 against: Path) -> None:
    width = max(len(row.name) for row in rows)
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


def compare(expected: dict[str, Any], published: Path, rebuilt_layout: Layout,
            reports: Path) -> tuple[list[manifest.Difference], list[ArtifactRow], dict]:
    got = manifest.load(rebuilt_layout.manifest)
    inputs = manifest.differences(expected["inputs"], got["inputs"])
    rows = artifact_rows(expected, published, got)
    remove_tree(reports)
    explained = {}
    for row in rows:
        if not row.same:
            explained[row.name] = explain(row, published, rebuilt_layout.artifacts, reports)
    return inputs, rows, explained


def repro(settings: Settings) -> None:
    """The `repro` task."""
    layout = settings.layout
    against = against_path(settings)
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
    report = {
        "against": str(against), "rebuilt": str(fresh.layout.build), "seconds": seconds,
        "inputs": [dataclasses.asdict(diff) for diff in inputs],
        "artifacts": [{**dataclasses.asdict(row), "same": row.same,
                       "diffoscope": explained.get(row.name)} for row in rows],
    }
    atomic_write_text(layout.repro_report, json.dumps(report, indent=2, sort_keys=True) + "\n")
    differing = [row.name for row in rows if not row.same]
    if differing:
        raise ArtifactsDiffer(
            f"{len(differing)} of {len(rows)} artifacts differ from {against}: "
            f"{', '.join(differing[:5])}{' ...' if len(differing) > 5 else ''} (report: "
            f"{layout.repro_report})")
    print(f"repro: all {len(rows)} artifacts identical to {against}", flush=True)
