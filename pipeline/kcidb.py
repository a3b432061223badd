"""build/results/kcidb.json: a guest run as KernelCI's common results database takes it.

KCIDB (schema 5.3) knows three objects here: the checkout (which tree, which
patch series), the build (which configuration and toolchain, which artifacts)
and the tests (one per case and per selftest, and one for the boot).  Every
field comes from the stage records and the run's results.json, never from a
log; what KCIDB has no field for (artifact digests, injections) is in `misc`.

IDs are "kvm_pipeline:" and digests: the checkout's of what the tree is and
the series' patches, the build's of the checkout, the .config and the
artifacts, a test's of the build, the run's results and the test's path, so
the same build and run always give the same document and two runs never
share a test id.  Submitting it: `kcidb-submit` (see docs/kcidb.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import msgspec

from . import manifest, records
from .layout import Layout
from .records import KernelRecord, KmodRecord, SeriesRecord, SourceRecord
from .results import RunResult
from .util import atomic_write_text

ORIGIN = "kvm_pipeline"
VERSION = {"major": 5, "minor": 3}
# KTAP statuses (pipeline.ktap.Status values) as KCIDB's: a known failure (TODO) did not
# judge the code; a test that passed without an injection ran, but says nothing.
STATUS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "todo": "SKIP",
          "crashed": "ERROR", "no tests": "MISS", "not exercised": "DONE"}
EXCERPT_LINES = 20
_NOT_IN_PATH = re.compile(r"[^a-zA-Z0-9_-]+")


def _id(*parts: object) -> str:
    text = "\0".join(str(part) for part in parts)
    return f"{ORIGIN}:{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def patchset_hash(series: SeriesRecord) -> str:
    """KCIDB's: sha256 over each patch's sha256 and a newline, in order ("" for none)."""
    if not series.patches:
        return ""
    hashes = "".join(series.patch_sha256[name] + "\n" for name in series.patches)
    return hashlib.sha256(hashes.encode()).hexdigest()


def checkout(source: SourceRecord, series: SeriesRecord) -> dict[str, object]:
    resolved, identity = source.resolved, source.identity
    names = {"debian": resolved.package, "git": Path(str(identity.repo)).name.removesuffix(".git"),
             "tarball": str(identity.url).rstrip("/").rsplit("/", 1)[-1],
             "local": Path(str(identity.path)).name}
    what = {"debian": f"Debian {resolved.package} {resolved.version}",
            "git": f"{identity.repo} at {resolved.commit}",
            "tarball": f"{identity.url} (sha256 {resolved.sha256})",
            "local": f"{identity.path} (sha256 {resolved.sha256})"}
    shown = {k: v for k, v in sorted(msgspec.to_builtins(resolved).items()) if k != "tarball"}
    # What the tree is, as the manifest names it: the same tree, the same checkout.
    content = msgspec.to_builtins(manifest.source_inputs(source))
    entry: dict[str, object] = {
        "id": _id(json.dumps(content, sort_keys=True), patchset_hash(series)),
        "origin": ORIGIN,
        "tree_name": names[source.kind],
        "patchset_hash": patchset_hash(series),
        "comment": f"Linux {source.kernel_version}: {what[source.kind]}; "
                   + (f"KVM series {series.series} ({len(series.patches)} patches)"
                      if series.series else "stock KVM"),
        "valid": True,
        "misc": {"source": source.kind, "resolved": shown, "patches": list(series.patches)},
    }
    if source.kind == "git":
        entry["git_commit_hash"] = resolved.commit
        if re.match(r"^(https?|git)://", str(identity.repo)):
            entry["git_repository_url"] = identity.repo
    return entry


def build(checkout_id: str, kernel: KernelRecord, kmod: KmodRecord | None) -> dict[str, object]:
    artifacts = {"bzImage": kernel.bzImage_sha256, **kernel.module_sha256,
                 **(kmod.sha256 if kmod else {})}
    return {
        "checkout_id": checkout_id,
        "id": _id(checkout_id, kernel.config_sha256, json.dumps(artifacts, sort_keys=True)),
        "origin": ORIGIN,
        "architecture": "x86_64",
        "config_name": kernel.variant,
        "compiler": kernel.environment.gcc.splitlines()[0] if kernel.environment.gcc else "",
        "duration": kernel.seconds.get("build", 0.0),
        "status": "PASS",
        "comment": f"Linux {kernel.release}, {kernel.variant} configuration, "
                   f"{kernel.toolchain.runtime} toolchain",
        "misc": {"config_sha256": kernel.config_sha256, "artifacts_sha256": artifacts,
                 "toolchain": msgspec.to_builtins(kernel.toolchain),
                 "make_env": kernel.make_env},
    }


def _path(names: list[str]) -> str:
    return ".".join(_NOT_IN_PATH.sub("_", name).strip("_") or "_" for name in names)


def tests(build_id: str, run: RunResult, run_digest: str) -> list[dict[str, object]]:
    environment = {"comment": f"QEMU, {run.accelerator.name} ({run.accelerator.why})"}
    # The boot passed when init started (QEMU itself failing is the harness's error).
    boot_status = "PASS" if run.seconds.get("to_init", 0) > 0 else (
        "ERROR" if run.outcome == "qemu failed" else "FAIL")
    found = [{
        "build_id": build_id, "id": _id(build_id, run_digest, "boot"), "origin": ORIGIN,
        "path": "boot", "status": boot_status, "environment": environment,
        "duration": run.seconds.get("to_init", 0.0),
        "comment": f"the guest run: {run.outcome}" + (f" ({run.why})" if run.why else ""),
    }]
    injections = {verdict.name: verdict.injections for verdict in run.kselftests}
    for names, case in run.tests.cases():
        path = _path(names)
        entry: dict[str, object] = {
            "build_id": build_id, "id": _id(build_id, run_digest, path), "origin": ORIGIN,
            "path": path, "status": STATUS.get(case.status, "ERROR"),
            "environment": environment,
        }
        if case.seconds is not None:
            entry["duration"] = case.seconds
        if case.directive:
            entry["comment"] = case.directive
        if case.status in ("failed", "crashed") and case.diagnostics:
            entry["log_excerpt"] = "\n".join(case.diagnostics[-EXCERPT_LINES:])
        if names[-1] in injections and len(names) == 2 and names[0] == "kselftest":
            entry["misc"] = {"injections": injections[names[-1]]}
        found.append(entry)
    return found


def document(layout: Layout, run: RunResult, results_json: Path) -> dict[str, object]:
    """The KCIDB document of the build in `layout` and the run in `results_json`."""
    source, series = records.require(SourceRecord, layout), records.require(SeriesRecord, layout)
    kernel, kmod = records.require(KernelRecord, layout), records.load(KmodRecord, layout)
    the_checkout = checkout(source, series)
    the_build = build(the_checkout["id"], kernel, kmod)
    run_digest = hashlib.sha256(results_json.read_bytes()).hexdigest()
    return {"version": VERSION, "checkouts": [the_checkout], "builds": [the_build],
            "tests": tests(the_build["id"], run, run_digest)}


def merge(paths: list[Path], dest: Path) -> Path | None:
    """One document of several runs' kcidb.json (a matrix's cells, a bisection's steps):
    each checkout and build once, every test; None when there is none to merge."""
    merged: dict[str, dict[str, dict]] = {"checkouts": {}, "builds": {}, "tests": {}}
    for path in paths:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a run that wrote none (it failed before its guest)
        if not isinstance(document, dict):
            continue
        for kind, objects in merged.items():
            for entry in document.get(kind, []):
                if isinstance(entry, dict) and "id" in entry:
                    objects.setdefault(entry["id"], entry)
    if not merged["tests"]:
        dest.unlink(missing_ok=True)  # no earlier matrix's or bisection's may pass for this one
        return None
    text = json.dumps({"version": VERSION, **{kind: list(objects.values())
                                              for kind, objects in merged.items()}}, indent=2)
    atomic_write_text(dest, text + "\n")
    return dest


def write(layout: Layout, run: RunResult, results: Path) -> Path:
    """kcidb.json beside the run's results.json."""
    dest = results / "kcidb.json"
    text = json.dumps(document(layout, run, results / "results.json"), indent=2)
    atomic_write_text(dest, text + "\n")
    return dest
