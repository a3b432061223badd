"""The doit command line: table of contents and bad input, no kernel build."""

import re
import subprocess
import sys

from helpers import ROOT, doit

from pipeline import records
from pipeline.errors import Exit, exit_table
from pipeline.layout import Layout
from pipeline.records import SourceRecord


def test_doit_list_reads_like_a_table_of_contents():
    out = doit("list").stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == ["fetch", "patch", "config", "kernel", "kmod", "selftests", "image", "build",
                     "boot", "test", "bisect", "repro", "matrix", "lava"]


def test_bad_setting_on_command_line_fails_cleanly(tmp_path):
    proc = doit("build", "kernel.variant=fast", f"paths.build={tmp_path}/b", check=False)
    assert proc.returncode == 3  # doit's "error before tasks ran", as the README says
    assert "kernel.variant in the command line is 'fast': allowed values are default, debug" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


def test_unknown_key_on_command_line(tmp_path):
    proc = doit("build", "kernel.varient=debug", f"paths.build={tmp_path}/b", check=False)
    assert proc.returncode == 3
    assert "unknown setting kernel.varient=debug" in proc.stderr


def test_failing_step_reports_without_traceback(tmp_path):
    proc = doit("fetch", "source.package=linux-source-0.1", f"paths.build={tmp_path}/b",
                f"paths.cache={tmp_path}/c", check=False)
    assert proc.returncode == 1  # doit: a task failed
    out = proc.stdout + proc.stderr
    assert "fetch: apt knows no package 'linux-source-0.1'" in out
    assert "Traceback" not in out
    assert not (tmp_path / "b/src/linux").exists()


def run_pipeline(*args: str):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_entry_point_exit_code_for_bad_setting(tmp_path):
    proc = run_pipeline("build", "kernel.jobs=lots", f"paths.build={tmp_path}/b")
    assert proc.returncode == 2
    assert "kernel.jobs=lots" in proc.stderr


def test_entry_point_exit_code_for_bad_source(tmp_path):
    proc = run_pipeline("fetch", "source.version=0-nope", f"paths.build={tmp_path}/b",
                        f"paths.cache={tmp_path}/c")
    assert proc.returncode == 2
    assert "not on the mirror" in proc.stdout + proc.stderr


def test_clean_keeps_the_download_cache(tmp_path, http_server):
    """`doit clean` removes what the tasks made; downloads stay for the next build."""
    import hashlib

    from helpers import FAKE_MAKEFILE, make_tarball
    data = make_tarball({"Makefile": FAKE_MAKEFILE})
    http_server.files["/linux.tar.gz"] = data
    args = [f"paths.build={tmp_path}/b", f"paths.cache={tmp_path}/c", "source.kind=tarball",
            f"source.url={http_server.url}/linux.tar.gz",
            f"source.sha256={hashlib.sha256(data).hexdigest()}"]
    doit("fetch", *args)
    source_record = records.path(SourceRecord, Layout(ROOT, tmp_path / "b", tmp_path / "c"))
    assert (tmp_path / "b/src/linux/Makefile").is_file() and source_record.is_file()
    cached = list((tmp_path / "c/tarballs").iterdir())
    assert len(cached) == 1
    doit("clean", "fetch", *args)
    assert not (tmp_path / "b/src/linux").exists()
    assert not source_record.exists()
    assert list((tmp_path / "c/tarballs").iterdir()) == cached


def test_the_readmes_exit_code_table_is_the_codes():
    """The README's table is pipeline.errors.Exit's, row for row (regenerate it with
    `python -c 'from pipeline.errors import exit_table; print(exit_table())'`)."""
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- exit codes: generated from pipeline.errors.Exit, checked by tests/test_cli.py -->\n"
    assert marker in readme
    table = readme.split(marker, 1)[1].split("\n\n", 1)[0] + "\n"
    assert table == exit_table()


def test_help_describes_every_task_and_exit_code():
    out = run_pipeline("--help").stdout
    tasks = out.split("tasks:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in tasks][:14] == [
        "fetch", "patch", "config", "kernel", "kmod", "selftests", "image", "build", "boot",
        "test", "bisect", "repro", "matrix", "lava"]
    assert all(len(line.split()) > 3 for line in tasks), tasks  # a description each
    # Each exit code's entry: "  CODE" then its words, wrapped; one per row of Exit, in order.
    block = out.split("exit codes", 1)[1].split("\n", 1)[1]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n(?=  \S)", block.strip("\n"))]
    wanted = []
    for row in Exit:
        where = f"{', '.join(row.tasks)}: " if row.tasks else ""
        bisect = f" [bisect: {row.bisect}]" if row.bisect else ""
        code = "*" if row.code is None else row.code
        wanted.append(" ".join(f"{code} {where}{row.meaning}{bisect}".split()))
    assert entries == wanted
