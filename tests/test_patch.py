"""Series selection and all-or-nothing application on a small fixture tree."""

from __future__ import annotations

import difflib
import hashlib
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, make_tarball

from pipeline import patch, records, sources
from pipeline.errors import PatchError
from pipeline.records import SeriesRecord


def diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                        f"a/{path}", f"b/{path}"))


def write_tree(root: Path, fake_tree_files: dict[str, str]) -> Path:
    """The fake kernel tree plus a kvm_main.c for the second patch."""
    for name, text in {**fake_tree_files, "virt/kvm/kvm_main.c": "a\nb\nc\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def tree(tmp_path, fake_tree_files) -> Path:
    return write_tree(tmp_path / "linux", fake_tree_files)


def snapshot(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): p.read_text() for p in sorted(tree.rglob("*"))
            if p.is_file()}


def write_series(dest: Path, patches: dict[str, str]) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in patches.items():
        (dest / name).write_text(text)
    (dest / "series").write_text("# the series\n" + "\n".join(patches) + "\n")
    return patch.read_series(dest / "series")


def x86_patch(line: int, new: str) -> str:
    old = "".join(f"line {i}\n" for i in range(1, 41))
    changed = old.replace(f"line {line}\n", f"{new}\n")
    return diff("arch/x86/kvm/x86.c", old, changed)


@pytest.fixture
def good_series(tmp_path) -> list[Path]:
    return write_series(tmp_path / "series-good", {
        "0001-x86.patch": x86_patch(5, "patched five"),
        "0002-main.patch": diff("virt/kvm/kvm_main.c", "a\nb\nc\n", "a\nB\nc\n"),
    })


def test_select_series_by_kernel_line(tmp_path):
    (tmp_path / "6.12").mkdir()
    (tmp_path / "6.12/series").write_text("x.patch\n")
    assert patch.select_series(tmp_path, "6.12.117") == tmp_path / "6.12/series"
    with pytest.raises(PatchError, match=r"no KVM patch series for Linux 6\.13 .* series for 6\.12"):
        patch.select_series(tmp_path, "6.13.1")


def test_series_names_missing_patch(tmp_path):
    (tmp_path / "series").write_text("0001-there.patch\n0002-gone.patch\n")
    (tmp_path / "0001-there.patch").write_text("")
    with pytest.raises(PatchError, match=r"series:2 names 0002-gone\.patch"):
        patch.read_series(tmp_path / "series")


def test_apply_then_second_run_is_noop(tree, good_series):
    patch.apply_series(tree, good_series)
    after = snapshot(tree)
    assert "patched five" in after["arch/x86/kvm/x86.c"]
    assert after["virt/kvm/kvm_main.c"] == "a\nB\nc\n"
    patch.apply_series(tree, good_series)
    assert snapshot(tree) == after


def test_failing_patch_applies_nothing_and_is_named(tree, tmp_path):
    pristine = snapshot(tree)
    series = write_series(tmp_path / "series-bad", {
        "0001-x86.patch": x86_patch(5, "patched five"),
        "0002-stale.patch": diff("virt/kvm/kvm_main.c", "x\ny\nz\n", "x\nY\nz\n"),
    })
    with pytest.raises(PatchError, match=r"0002-stale\.patch does not apply .*virt/kvm/kvm_main\.c"):
        patch.apply_series(tree, series)
    assert snapshot(tree) == pristine


def test_changed_series_repatches_from_pristine(tree, good_series, tmp_path):
    pristine = snapshot(tree)
    patch.apply_series(tree, good_series)
    # The new series edits the same line differently: it only applies to a pristine tree.
    new = write_series(tmp_path / "series-new", {"0001-x86.patch": x86_patch(5, "other five")})
    patch.apply_series(tree, new)
    after = snapshot(tree)
    assert "other five" in after["arch/x86/kvm/x86.c"]
    assert "patched five" not in after["arch/x86/kvm/x86.c"]
    assert after["virt/kvm/kvm_main.c"] == pristine["virt/kvm/kvm_main.c"]
    # And an empty series (patch.enabled=false) restores the pristine tree exactly.
    patch.apply_series(tree, [])
    assert snapshot(tree) == pristine


def test_tree_edited_after_patching_is_reported(tree, good_series, tmp_path):
    patch.apply_series(tree, good_series)
    (tree / "arch/x86/kvm/x86.c").write_text("someone edited this\n")
    new = write_series(tmp_path / "series-new", {"0001-x86.patch": x86_patch(6, "six")})
    with pytest.raises(PatchError, match="cannot be restored to pristine: remove"):
        patch.apply_series(tree, new)


def test_patch_inside_an_enclosing_git_repo(tmp_path, good_series, fake_tree_files):
    """build/src/linux lives inside the project's own repository."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    tree = write_tree(tmp_path / "build/src/linux", fake_tree_files)
    patch.apply_series(tree, good_series)
    assert "patched five" in (tree / "arch/x86/kvm/x86.c").read_text()


def test_patch_tree_task_records_series(make_settings, tmp_path, fake_tree_files, good_series):
    data = make_tarball({**fake_tree_files, "virt/kvm/kvm_main.c": "a\nb\nc\n"})
    (tmp_path / "k.tgz").write_bytes(data)
    s = make_settings(**{"source.kind": "local", "source.path": "k.tgz",
                         "source.sha256": hashlib.sha256(data).hexdigest()})
    sources.fetch_tree(s)
    series_dir = tmp_path / "patches/kvm/6.12"
    write_series(series_dir, {p.name: p.read_text() for p in good_series})
    record = patch.patch_tree(s)
    assert record.series == "patches/kvm/6.12/series"
    assert record.patches == ("0001-x86.patch", "0002-main.patch")
    assert records.load(SeriesRecord, s.layout) == record
    s_off = make_settings(**{"source.kind": "local", "source.path": "k.tgz",
                             "source.sha256": s.source.sha256, "patch.enabled": "false"})
    assert patch.patch_tree(s_off).patches == ()
    assert (s.layout.tree / "arch/x86/kvm/x86.c").read_text() == fake_tree_files["arch/x86/kvm/x86.c"]


def test_shipped_series_are_well_formed():
    for series in sorted((ROOT / "patches/kvm").glob("*/series")):
        patches = patch.read_series(series)
        assert len(patches) == 2
        text = patches[1].read_text()
        # Every touched KVM file includes the override, and nothing force-includes it.
        assert text.count("+#include <linux/kvm_preempt_count.h>") >= 8
        assert "-include" not in text
        assert "#ifndef CONFIG_PREEMPT_COUNT" in patches[0].read_text()
