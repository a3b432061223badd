"""QEMU argv assembly, the accelerator choice and the bounded line stream.

A working KVM cannot run on this machine (booting Linux under it hangs), so
the "probe works" case uses a stand-in script for QEMU, and says so.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline import guest, history, qemu, settings
from pipeline.errors import RunFailed, UserError
from pipeline.qemu import ACCELERATORS
from pipeline.results import Outcome, RunReport


def test_argv_is_assembled_from_parts(make_settings):
    s = make_settings()
    argv = guest.qemu_command(s, ACCELERATORS["tcg"], "boot").argv()
    assert argv[0] == "qemu-system-x86_64"
    assert "-no-reboot" in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-cpu") + 1] == "max"
    cmdline = argv[argv.index("-append") + 1].split()
    assert {"console=ttyS0", "panic=-1", "root=/dev/vda", "pipeline.suite=boot"} <= set(cmdline)
    drive = argv[argv.index("-drive") + 1]
    assert drive.endswith("rootfs.ext4,if=virtio,format=raw,snapshot=on")
    ports = [a for a in argv if a.startswith("virtserialport")]
    assert ports == ["virtserialport,chardev=ktap,name=ktap",
                     "virtserialport,chardev=status,name=status"]
    assert f"file,id=ktap,path={s.layout.results / 'ktap.log'}" in argv


def test_settings_reach_the_argv(make_settings):
    s = make_settings(**{"boot.memory_mb": "2048", "boot.smp": "4",
                         "boot.cmdline": "loglevel=8 pipeline.fault=hang",
                         "test.kvm_seconds": "7", "test.cases": "kvm.*effect"})
    argv = guest.qemu_command(s, ACCELERATORS["kvm"], "inject").argv()
    assert argv[argv.index("-m") + 1] == "2048"
    assert argv[argv.index("-smp") + 1] == "4"
    assert argv[argv.index("-cpu") + 1] == "host"
    cmdline = argv[argv.index("-append") + 1]
    assert cmdline.endswith("loglevel=8 pipeline.fault=hang")
    words = cmdline.split()
    assert {"pipeline.suite=inject", "pipeline.kvm_seconds=7", "pipeline.cases=kvm.*effect",
            "pipeline.lifecycle_cycles=50"} <= set(words)


def test_extra_disks_follow_the_root_disk_read_only(make_settings, tmp_path):
    first, second = tmp_path / "controls.tar", tmp_path / "data.img"
    first.write_bytes(b"\0" * 10240)
    second.write_bytes(b"\0" * 512)
    s = make_settings(**{"boot.disks": f"{first},{second}"})
    argv = guest.qemu_command(s, ACCELERATORS["tcg"], "faults").argv()
    drives = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-drive"]
    assert drives[0].endswith("rootfs.ext4,if=virtio,format=raw,snapshot=on")  # /dev/vda
    assert drives[1:] == [f"file={first},if=virtio,format=raw,readonly=on",
                          f"file={second},if=virtio,format=raw,readonly=on"]


def test_a_missing_extra_disk_is_named(make_settings, tmp_path):
    s = make_settings(**{"boot.disks": str(tmp_path / "nothing.tar")})
    with pytest.raises(UserError, match=r"boot.disks: .*nothing.tar does not exist"):
        guest.qemu_command(s, ACCELERATORS["tcg"], "faults")


def test_cases_select_suites(make_settings):
    s = make_settings(**{"boot.suite": "smoke,lifecycle,kvm"})
    assert guest.selected_suites(s) == "smoke,lifecycle,kvm"
    s = make_settings(**{"boot.suite": "smoke,lifecycle,kvm",
                         "test.cases": "kvm.kvm_patch_effect,smoke.*rate"})
    assert guest.selected_suites(s) == "smoke,kvm"  # boot.suite's order
    s = make_settings(**{"boot.suite": "smoke,lifecycle", "test.cases": "life*"})
    assert guest.selected_suites(s) == "lifecycle"


def test_cases_naming_no_suite_is_an_error(make_settings):
    s = make_settings(**{"boot.suite": "smoke,lifecycle", "test.cases": "kvm.*"})
    with pytest.raises(UserError, match=r"'kvm\.\*' matches none of the suites in "
                                        r"boot.suite \(smoke, lifecycle\)"):
        guest.selected_suites(s)


def fake_qemu(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-qemu"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def kvm_present(monkeypatch):
    real_exists = qemu.os.path.exists
    monkeypatch.setattr(qemu.os.path, "exists",
                        lambda p: True if p == "/dev/kvm" else real_exists(p))
    monkeypatch.setattr(qemu.os, "access", lambda p, mode: True)


def test_probe_works(tmp_path, kvm_present):
    """Stand-in for a host where KVM boots Linux: prints the first console line."""
    qemu_bin = fake_qemu(tmp_path, 'echo "[    0.000000] Linux version 6.12.117"; sleep 30')
    usable, why = qemu.probe_kvm(Path("bzImage"), tmp_path / "probe.log", seconds=10,
                                 qemu=qemu_bin)
    assert usable, why
    assert "first console line" in why


def test_probe_hangs(tmp_path, kvm_present):
    """What this machine's KVM does: nothing on the console, so the deadline decides."""
    qemu_bin = fake_qemu(tmp_path, "sleep 30")
    started = time.monotonic()
    usable, why = qemu.probe_kvm(Path("bzImage"), tmp_path / "probe.log", seconds=1,
                                 qemu=qemu_bin)
    assert not usable
    assert "printed nothing in 1 s" in why
    assert time.monotonic() - started < 10


def test_probe_without_dev_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu.os.path, "exists", lambda p: False)
    usable, why = qemu.probe_kvm(Path("bzImage"), tmp_path / "probe.log")
    assert not usable and why == "/dev/kvm does not exist"


def test_auto_choice_is_cached_per_host(make_settings):
    s = make_settings()
    calls = []

    def probe(kernel, log_file):
        calls.append(kernel)
        return False, "probe said no"

    cache, probe_log = s.layout.accel_verdict, s.layout.results / "kvm-probe.log"
    first = qemu.choose_accelerator("auto", Path("bzImage"), cache, probe_log, probe=probe)
    second = qemu.choose_accelerator("auto", Path("bzImage"), cache, probe_log, probe=probe)
    assert first.accel.name == second.accel.name == "tcg"
    assert len(calls) == 1
    assert second.why == "probe said no (cached verdict)"
    cached = json.loads((s.layout.cache / "accel.json").read_text())
    assert cached["accel"] == "tcg"


def test_forced_accelerator_skips_probe(make_settings):
    s = make_settings(**{"boot.accel": "kvm"})
    choice = qemu.choose_accelerator(s.boot.accel, Path("bzImage"), s.layout.accel_verdict,
                                     s.layout.results / "kvm-probe.log", probe=pytest.fail)
    assert choice.accel.name == "kvm" and choice.why == "boot.accel = kvm"


def test_stream_kills_at_the_deadline_and_reaps(tmp_path):
    run = qemu.stream(["sh", "-c", "echo one; echo two; exec sleep 30"], tmp_path / "out.log",
                      deadline=1)
    assert run.timed_out == "run"
    assert run.lines == ["one", "two"]
    assert (tmp_path / "out.log").read_text() == "one\ntwo\n"
    assert run.seconds < 10
    zombies = subprocess.run(["ps", "-o", "stat=,comm=", "--ppid", str(os.getpid())],
                             capture_output=True, text=True).stdout
    assert "Z" not in zombies.split()


def test_stream_marker_deadline_is_a_boot_timeout(tmp_path):
    run = qemu.stream(["sh", "-c", "echo booting; exec sleep 30"], tmp_path / "out.log",
                      deadline=20, marker="init started", marker_deadline=1)
    assert run.timed_out == "boot"
    assert run.first_marker_seconds is None


def test_stream_marker_then_exit(tmp_path):
    run = qemu.stream(["sh", "-c", "echo init started; echo done; exit 3"],
                      tmp_path / "out.log", deadline=20, marker="init started", marker_deadline=5)
    assert run.timed_out is None and run.returncode == 3
    assert run.first_marker_seconds is not None


def test_missing_qemu_is_an_environment_problem(tmp_path):
    from pipeline.errors import EnvironmentProblem
    with pytest.raises(EnvironmentProblem, match="not installed"):
        qemu.stream(["/nonexistent/qemu"], tmp_path / "out.log", deadline=1)


def test_default_settings_use_auto(tmp_path):
    assert settings.load(tmp_path).boot.accel == "auto"


def fake_run_suite(verdicts: list[str], ktap: str):
    """guest.run_suite for test.repeat: each run writes `ktap` with its verdict in
    place of {v} and fails if that is "not ok"; a run past the list is Ctrl-C."""
    left = iter(verdicts)

    def fake_run(settings, suite, extra_cmdline=(), results=None):
        verdict = next(left, None)
        if verdict is None:
            raise KeyboardInterrupt
        results.mkdir(parents=True)
        (results / "ktap.log").write_text(ktap.format(v=verdict))
        if verdict != "ok":
            raise RunFailed(Outcome.TEST_FAILURES, "1 failed")
        return RunReport(suite=suite, outcome=Outcome.PASSED, why="", accel="tcg",
                         accel_why="", guest_status=0, seconds={})

    return fake_run


def test_repeat_summarises_each_case_and_raises_the_first_failure(make_settings, monkeypatch,
                                                                   capsys):
    """test.repeat: every run goes on; per-case pass counts; the first failure's exit code."""
    s = make_settings(**{"boot.suite": "smoke", "test.repeat": "3"})
    monkeypatch.setattr(guest, "run_suite", fake_run_suite(
        ["ok", "not ok", "ok"],
        "KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 rate\n"
        "    {v} 2 integrity\n{v} 1 smoke\n"))
    with pytest.raises(RunFailed) as failure:
        guest.test_suite(s)
    assert failure.value.exit_code == Outcome.TEST_FAILURES.value
    summary = json.loads((s.layout.results / "repeat.json").read_text())
    assert summary["outcomes"] == ["passed", "test failures", "passed"]
    assert summary["cases"] == {"smoke.rate": {"passed": 3},
                                "smoke.integrity": {"passed": 2, "failed": 1}}
    assert "smoke.integrity  2/3  (failed 1)" in capsys.readouterr().out


def test_a_repeat_cut_short_keeps_the_summary_of_its_finished_runs(make_settings, monkeypatch):
    """Ctrl-C (or a killed job) in run 3 of 5: repeat.json holds runs 1 and 2."""
    s = make_settings(**{"boot.suite": "smoke", "test.repeat": "5"})
    monkeypatch.setattr(guest, "run_suite", fake_run_suite(
        ["ok", "not ok"],
        "KTAP version 1\n1..1\n    KTAP version 1\n    1..1\n    {v} 1 rate\n{v} 1 smoke\n"))
    with pytest.raises(KeyboardInterrupt):
        guest.test_suite(s)
    summary = json.loads((s.layout.results / "repeat.json").read_text())
    assert summary["runs"] == 2 and summary["planned"] == 5
    assert summary["outcomes"] == ["passed", "test failures"]
    assert summary["cases"] == {"smoke.rate": {"passed": 1, "failed": 1}}
    # The next run keeps it in the history under the failure it holds.
    assert history.keep_previous(s.layout).name.endswith("-smoke-test_failures")


def test_the_monitor_command_returns_the_output_without_echo_or_escapes(tmp_path):
    """What QEMU's HMP sends over its socket: a banner, the echoed command with
    readline escapes, the output, the next prompt."""
    path = tmp_path / "monitor"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"QEMU 7.2.19 monitor - type 'help' for more information\r\n(qemu) ")
            assert conn.recv(100) == b"info registers -a\n"
            conn.sendall(b"info registers -a\x1b[K\r\n\r\nCPU#0\r\nRIP=ffffffff8134f8af RFL=00000246\r\n"
                         b"(qemu) ")

    thread = threading.Thread(target=serve)
    thread.start()
    out = qemu.monitor_command(path, "info registers -a", seconds=5)
    thread.join()
    server.close()
    assert out.strip() == "CPU#0\nRIP=ffffffff8134f8af RFL=00000246"


def test_symbolize_names_kernel_text_only(tmp_path):
    system_map = tmp_path / "System.map"
    system_map.write_text("ffffffff81000000 T _text\nffffffff8134f89c T default_idle\n"
                          "ffffffff8134f8c0 t other\nffffffff81600000 T _etext\n"
                          "ffffffff81800000 D some_data\n")
    registers = ("CPU#0\nRIP=ffffffff8134f8af RFL=00000246\nCPU#1\nRIP=ffffffffa0045f97 RFL=2\n"
                 "CPU#2\nRIP=0000000000402ff1 RFL=2\n")
    assert qemu.symbolize(registers, system_map) == [
        "CPU 0: RIP=ffffffff8134f8af default_idle+0x13",
        "CPU 1: RIP=ffffffffa0045f97 not in the kernel's text (a module, user space or a nested guest)",
        "CPU 2: RIP=0000000000402ff1 not in the kernel's text (a module, user space or a nested guest)",
    ]
