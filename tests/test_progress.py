"""Live progress: a line per finished case as the guest writes its KTAP, a status line on
a terminal, plain lines in a log."""

from __future__ import annotations

import io
import multiprocessing
import os
from pathlib import Path

from test_history import finished_run

from pipeline import commands, guest, history, kbuild, progress, qemu

GOLDEN = Path(__file__).parent / "golden"


def grown(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_each_case_shows_once_when_its_result_line_is_written(tmp_path):
    """The KTAP file as the guest writes it, in three pieces: a case shows as soon as its
    result line is there, never before (one still running) and never twice."""
    lines = (GOLDEN / "kselftest-run.ktap").read_text().splitlines()
    ktap_log = tmp_path / "ktap.log"
    follower = guest.CaseFollower(ktap_log, "main")
    assert follower.finished() == []  # nothing written yet
    first_selftest = next(n for n, line in enumerate(lines) if line == "    ok 1 cpuid_test")
    grown(ktap_log, lines[:first_selftest])  # the selftest's runs are there, its result not
    early = follower.finished()
    assert early and not any("cpuid_test" in line for line in early)
    assert all(line.split()[1].startswith(("smoke.", "lifecycle.", "sections.", "kvm."))
               for line in early), early
    grown(ktap_log, lines[:first_selftest + 1])
    middle = follower.finished()
    assert middle == ["  ok      kselftest.cpuid_test  alone ok, injected ok, 0 injections  5.4 s"]
    assert follower.finished() == []  # the file did not grow
    grown(ktap_log, lines)
    rest = follower.finished()
    # Read as it grew, the run shows what it shows read at once: each case once.
    at_once = guest.CaseFollower(GOLDEN / "kselftest-run.ktap", "main").finished()
    assert early + middle + rest == at_once
    assert len(at_once) == len(set(at_once)) == len(follower.shown)
    assert sum("kselftest." in line for line in at_once) == 41  # its plan: 1..41


def test_a_failed_case_says_so(tmp_path):
    ktap_log = tmp_path / "ktap.log"
    grown(ktap_log, ["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: smoke",
                     "    1..2", "    # duration_ms: 1500", "    ok 1 one",
                     "    not ok 2 two # SKIP no KVM", ])
    assert guest.CaseFollower(ktap_log, "main").finished() == [
        "  ok      smoke.one  1.5 s", "  skip    smoke.two  no KVM"]


def test_a_log_gets_plain_lines_and_a_heartbeat_when_quiet(monkeypatch):
    out = io.StringIO()
    with progress.Progress("guest smoke", expected=125, out=out) as shown:
        shown.done("  ok      smoke.one")
        shown.tick("1 cases done")
        assert out.getvalue() == "  ok      smoke.one\n"  # not quiet for long yet
        monkeypatch.setattr(progress, "HEARTBEAT", 0)
        shown.tick("2 cases done")
    assert out.getvalue().splitlines()[1] == "guest smoke: 0:00 of ~2:05, 2 cases done ..."


def test_a_terminal_gets_a_status_line_below_the_finished_cases():
    out = io.StringIO()
    with progress.Progress("guest smoke", out=out, live=True) as shown:
        shown.done("  ok      smoke.one")
        shown.tick("1 cases done")
    text = out.getvalue()
    assert "  ok      smoke.one" in text
    assert "guest smoke: 0:00, 1 cases done" in text  # rich's status line


def test_stream_ticks_while_the_guest_is_quiet(tmp_path):
    ticks = []
    run = qemu.stream(["sh", "-c", "echo one; sleep 2.5; echo two"], tmp_path / "out.log",
                      deadline=20, on_tick=lambda: ticks.append(1))
    assert run.timed_out is None and run.lines == ["one", "two"]
    assert len(ticks) >= 2


def test_the_last_finished_run_of_the_suite_is_what_to_expect(make_settings):
    layout = make_settings().layout
    assert history.last_run(layout, "smoke") is None
    finished_run(layout, "passed", 1_700_000_000, suite="smoke")
    history.keep_previous(layout)
    finished_run(layout, "passed", 1_700_000_100, suite="kvm")
    history.keep_previous(layout)
    kept = history.last_run(layout, "smoke")
    assert kept is not None and kept.name.endswith("-smoke-passed")
    assert os.path.isfile(kept / "results.json")


class ShellMake:
    """A stand-in for kmake.Make whose make prints what kbuild prints."""

    def __init__(self, script: str):
        self.script = script

    def run(self, argv, stats_log=None, **kwargs):
        return commands.run(["sh", "-c", self.script], **kwargs)


KBUILD_OUTPUT = ("printf '  HOSTCC  scripts/basic/fixdep\\n  WRAP    x.h\\n  CC      init/main.o\\n"
                 "  CC [M]  arch/x86/kvm/x86.o\\n  AR      lib/lib.a\\n  AS      entry.o\\n'")


def test_a_build_shows_one_progress_line_and_keeps_makes_output_in_its_log(
        make_settings, tmp_path, capsys):
    log_file = tmp_path / "kernel.log"
    output = kbuild.make_with_progress(ShellMake(KBUILD_OUTPUT), ["make"], "kernel", log_file,
                                       make_settings(), kbuild.KERNEL_OBJECT, expected=8)
    shown = capsys.readouterr().out
    assert "x86.o" not in shown and "x86.o" in output and "x86.o" in log_file.read_text()
    assert shown == f"kernel: 4 objects made in 0:00 (log: {log_file})\n"
    # The next build expects what this one made.
    assert kbuild.count_lines(log_file, kbuild.KERNEL_OBJECT) == 4


def test_kernel_verbose_shows_makes_own_output(make_settings, tmp_path, capsys):
    kbuild.make_with_progress(ShellMake(KBUILD_OUTPUT), ["make"], "kernel",
                              tmp_path / "kernel.log",
                              make_settings(**{"kernel.verbose": "true"}),
                              kbuild.KERNEL_OBJECT, expected=0)
    shown = capsys.readouterr().out
    assert "  CC [M]  arch/x86/kvm/x86.o\n" in shown and "objects made" not in shown


def test_a_line_the_guest_is_still_writing_waits_for_its_end(tmp_path):
    ktap_log = tmp_path / "ktap.log"
    grown(ktap_log, ["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: smoke",
                     "    1..2", "    ok 1 one"])
    follower = guest.CaseFollower(ktap_log, "main")
    with open(ktap_log, "a") as out:
        out.write("    ok 2 tw")
    assert follower.finished() == ["  ok      smoke.one"]
    with open(ktap_log, "a") as out:
        out.write("o # SKIP no KVM\n")
    assert follower.finished() == ["  skip    smoke.two  no KVM"]


def test_a_progress_inside_another_shows_in_its_status_line():
    """The kernel's build inside the kernel stage: one status line, the inner words in it."""
    out, elsewhere = io.StringIO(), io.StringIO()
    with progress.Progress("kernel", out=out, live=True) as stage:
        with progress.Progress("make", out=elsewhere, live=True) as build:
            build.tick("12 objects")
            assert stage.__rich__().startswith("make: 0:00, 12 objects")
            build.done("  kernel: 12 objects made")
        assert stage.__rich__() == "kernel: 0:00"
    assert out.getvalue().count("  kernel: 12 objects made") == 1  # through the outer one
    assert elsewhere.getvalue() == ""  # the inner one draws nothing of its own


def _live_in_a_worker(answers):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    answers.put(progress.Progress("cell", out=Terminal()).live)


def test_a_worker_of_a_parallel_doit_prints_plain_lines():
    """`doit -n 2 matrix` runs cells in worker processes sharing one terminal."""
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    worker = context.Process(target=_live_in_a_worker, args=(answers,))
    worker.start()
    worker.join(30)
    assert answers.get(timeout=5) is False
