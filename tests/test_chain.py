"""The chain run in-process: exit codes per failure class, many runs in one process.

The stages run for real (doit, make, git apply, tar, docker's client) against
a stand-in kernel tree: its Makefile does the least each stage looks at and
fails on request (FAKE_FAIL=<target>), so every failure class is reached in
seconds.  The real kernel is built by the e2e tests.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from helpers import ROOT, make_tarball

from pipeline import chain, kbuild, records, settings, tasks
from pipeline import cli as entry
from pipeline.errors import INTERRUPTED
from pipeline.records import KernelRecord, KmodRecord, SourceRecord

FAKE_MAKEFILE = """\
VERSION = 6
PATCHLEVEL = 12
SUBLEVEL = 3
EXTRAVERSION =
# A stand-in for the kernel's build system (see tests/test_chain.py).
step = $(if $(M),kmod,$@)
fail = $(if $(filter $(step),$(FAKE_FAIL)),@echo "$(or $(FAKE_FAIL_TEXT),fake.c:1:1: error: $(step) fails)" && false)
REL = 6.12.3-fake
tinyconfig:
\t$(fail)
\tmkdir -p $(O) && printf 'CONFIG_TINY=y\\n' > $(O)/.config
olddefconfig:
\t$(fail)
\tgrep -v NOT_IN_THIS_TREE $(O)/.config > $(O)/.config.new; mv $(O)/.config.new $(O)/.config
bzImage:
\t$(fail)
\tmkdir -p $(O)/arch/x86/boot && echo kernel > $(O)/arch/x86/boot/bzImage
\techo map > $(O)/System.map
modules:
\t$(fail)
\tif [ -n "$(M)" ]; then echo ko > $(M)/fake.ko; else touch $(O)/Module.symvers; fi
kernelrelease:
\t@echo $(REL)
modules_install:
\tmkdir -p $(INSTALL_MOD_PATH)/lib/modules/$(REL)/kernel
\techo ko > $(INSTALL_MOD_PATH)/lib/modules/$(REL)/kernel/fake.ko
headers_install:
\tmkdir -p $(O)/usr/include/linux && echo '/* uapi */' > $(O)/usr/include/linux/kvm.h
"""
# tools/testing/selftests/Makefile: kselftest's install of one KVM "selftest".
FAKE_KSELFTEST = """\
install:
\t$(if $(filter selftests,$(FAKE_FAIL)),@echo "kvm_util.c:1:1: error: fails" && false)
\tmkdir -p $(INSTALL_PATH)/kvm
\tprintf '#!/bin/sh\\n' > $(INSTALL_PATH)/kvm/fake_test
\techo kvm:fake_test > $(INSTALL_PATH)/kselftest-list.txt
"""
# merge_config.sh -m -O DIR BASE FRAGMENT...: append the fragments (last one wins).
FAKE_MERGE = '#!/bin/sh\nbase=$4\nshift 4\ncat "$@" >>"$base"\n'


def fake_kernel_tarball(dest: Path) -> str:
    """A .tar.gz of the stand-in tree; returns its sha256."""
    merge = "scripts/kconfig/merge_config.sh"
    data = make_tarball({"Makefile": FAKE_MAKEFILE, merge: FAKE_MERGE,
                         "tools/testing/selftests/Makefile": FAKE_KSELFTEST,
                         "arch/x86/kvm/x86.c": "int x;\n"}, executable=(merge,))
    dest.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_chain(tmp_path, monkeypatch):
    """Overrides for a chain on the stand-in tree, in a private build dir and cache."""
    sha = fake_kernel_tarball(tmp_path / "linux.tar.gz")
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    return {"source.kind": "local", "source.path": str(tmp_path / "linux.tar.gz"),
            "source.sha256": sha, "patch.enabled": "false", "kernel.ccache": "off",
            "paths.build": str(tmp_path / "build"), "paths.cache": str(tmp_path / "cache")}


def words(overrides: dict[str, str], *tasks: str) -> list[str]:
    return [*tasks, *(f"{k}={v}" for k, v in overrides.items())]


def fragment(tmp_path: Path, text: str) -> str:
    path = tmp_path / "extra.config"
    path.write_text(text)
    return str(path)


# (failure, extra settings, FAKE_FAIL, tasks, exit code, words of the message)
FAILURES = [
    ("unknown setting", {"kernel.varient": "debug"}, "", ["build"], 2, "unknown setting"),
    ("unknown task", {}, "", ["kernal"], 2, "no task named 'kernal'"),
    ("fetch: checksum mismatch", {"source.sha256": "0" * 64}, "", ["fetch"], 2,
     "checksum mismatch"),
    ("fetch: missing ref", {"source.kind": "git", "source.repo": str(ROOT),
                            "source.ref": "no-such-ref"}, "", ["fetch"], 2, "is not a commit"),
    ("patch: series does not apply", {"patch.enabled": "true"}, "", ["patch"], 5,
     "does not apply"),
    ("config: option does not survive", {"kernel.fragments": "EXTRA"}, "", ["config"], 5,
     "CONFIG_NOT_IN_THIS_TREE=y (from"),
    ("config: olddefconfig fails", {}, "olddefconfig", ["config"], 5,
     "cannot be configured as asked"),
    ("kernel: does not compile", {}, "bzImage", ["kernel"], 4,
     "the kernel's build failed: fake.c:1:1: error: bzImage fails"),
    ("kmod: does not compile", {}, "kmod", ["kmod"], 4, "kmod/'s build failed: fake.c:1:1"),
    ("selftests: do not compile", {}, "selftests", ["selftests"], 4,
     "the KVM selftests' build failed: kvm_util.c:1:1: error: fails"),
    ("image: no Docker engine", {}, "", ["image"], 3, "DOCKER_HOST=tcp://127.0.0.1:9"),
]


@pytest.mark.parametrize(("extra", "fake_fail", "tasks", "code", "message"),
                         [row[1:] for row in FAILURES], ids=[row[0] for row in FAILURES])
def test_exit_code_per_failure_class(fake_chain, tmp_path, monkeypatch, capfd, extra,
                                     fake_fail, tasks, code, message):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    if fake_fail:
        monkeypatch.setenv("FAKE_FAIL", fake_fail)
    if extra.get("kernel.fragments") == "EXTRA":
        extra = {"kernel.fragments": fragment(tmp_path, "CONFIG_NOT_IN_THIS_TREE=y\n")}
    assert entry.main(words({**fake_chain, **extra}, *tasks)) == code
    out = capfd.readouterr()
    assert message in out.out + out.err
    assert "Traceback" not in out.out + out.err


def test_a_build_the_machine_failed_is_a_host_problem(fake_chain, monkeypatch, capfd):
    """Exit 3, not 4: a bisection must not skip a commit because the disk filled up."""
    monkeypatch.setenv("FAKE_FAIL", "bzImage")
    monkeypatch.setenv("FAKE_FAIL_TEXT", "{standard input}: Fatal error: can't write 4 bytes "
                                         "to section .text of init/main.o: 'No space left on "
                                         "device'")
    assert entry.main(words(fake_chain, "kernel")) == 3
    out = capfd.readouterr()
    assert "the kernel's build failed because of this machine, not the tree: the disk is " \
           "full: {standard input}: Fatal error" in out.out + out.err


def test_a_second_run_on_a_busy_build_dir_fails_or_waits(fake_chain, hold_build_dir, capfd):
    holder = hold_build_dir(Path(fake_chain["paths.build"]))
    assert entry.main(words({**fake_chain, "paths.wait_lock": "false"}, "fetch")) == 3
    out = capfd.readouterr()
    assert f"is in use by another run (pid {holder.pid})" in out.out + out.err
    holder.kill()  # gone mid-task: the next run takes its lock over
    holder.wait()
    assert entry.main(words({**fake_chain, "paths.wait_lock": "false"}, "fetch")) == 0


def test_two_runs_in_one_process_each_get_their_outcome(fake_chain, tmp_path):
    """A failure first, then a success and another failure: no stale error leaks."""
    bad = settings.load(ROOT, {**fake_chain, "source.sha256": "f" * 64})
    first = chain.run(["fetch"], bad)
    assert first.code == 2 and "checksum mismatch" in str(first.error)

    good = settings.load(ROOT, fake_chain)
    second = chain.run(["kmod"], good)
    assert second.ok and second.error is None
    assert records.load(KmodRecord, good.layout).modules == ("fake.ko",)

    other = settings.load(ROOT, {**fake_chain, "paths.build": str(tmp_path / "other"),
                                 "patch.enabled": "true"})
    third = chain.run(["kernel"], other)
    assert third.code == 5 and "does not apply" in str(third.error)
    # The first build dir is untouched by the other runs, and still up to date.
    assert chain.run(["kmod"], good).ok


def test_chain_runs_inside_a_running_doit_task(fake_chain, tmp_path):
    """bisect and repro call the chain from a task of their own."""
    outcomes = []

    def outer_action():
        bad = settings.load(ROOT, {**fake_chain, "source.sha256": "e" * 64})
        outcomes.append(chain.run(["fetch"], bad).code)
        outcomes.append(chain.run(["config"], settings.load(ROOT, fake_chain)).code)

    namespace = {
        "task_outer": lambda: {"actions": [outer_action], "verbosity": 2},
        "DOIT_CONFIG": {"dep_file": str(tmp_path / "outer.db"), "backend": "sqlite3"},
    }
    assert DoitMain(ModuleTaskLoader(namespace)).run(["outer"]) == 0
    assert outcomes == [2, 0]


def test_ctrl_c_says_interrupted_and_exits_130(fake_chain, monkeypatch, capfd):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(kbuild, "build_kernel", interrupted)
    assert entry.main(words(fake_chain, "kernel")) == INTERRUPTED
    err = capfd.readouterr().err
    assert "pipeline: interrupted" in err and "Traceback" not in err
    # Nothing of the kernel step was published; the next run just works.
    s = settings.load(ROOT, fake_chain)
    assert records.load(KernelRecord, s.layout) is None
    monkeypatch.undo()
    assert entry.main(words(fake_chain, "kernel")) == 0
    assert records.load(KernelRecord, s.layout).release == "6.12.3-fake"


def test_record_of_another_schema_makes_its_step_run_again(fake_chain):
    s = settings.load(ROOT, fake_chain)
    assert chain.run(["fetch"], s).ok
    path = records.path(SourceRecord, s.layout)
    path.write_text(path.read_text().replace('"schema": 1', '"schema": 999'))
    assert records.load(SourceRecord, s.layout) is None
    assert chain.run(["fetch"], s).ok
    assert records.load(SourceRecord, s.layout) is not None


def test_results_and_records_are_readable_by_other_users(fake_chain):
    s = settings.load(ROOT, fake_chain)
    assert chain.run(["kernel"], s).ok
    for path in (s.layout.kernel_json, s.layout.modules_sha256, records.path(SourceRecord,
                                                                               s.layout)):
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_a_stages_code_is_what_it_imports():
    """kbuild's code: kbuild.py and the modules it imports, transitively; not the guest's."""
    files = tasks.code_files(kbuild)
    for name in ("kbuild.py", "kmake.py", "records.py", "settings.py", "errors.py"):
        assert tasks.PACKAGE / name in files, name
    for name in ("guest.py", "qemu.py", "tasks.py", "chain.py", "drivers/bisect/__init__.py"):
        assert tasks.PACKAGE / name not in files, name


def test_a_change_of_the_stages_code_makes_it_run_again(fake_chain, monkeypatch):
    s = settings.load(ROOT, fake_chain)
    code = [tasks.PACKAGE / "kbuild.py"]
    monkeypatch.setattr(tasks, "code_files", lambda stage: code)
    assert chain.run(["kernel"], s).ok
    built = s.layout.kernel_json.stat().st_mtime_ns
    assert chain.run(["kernel"], s).ok
    assert s.layout.kernel_json.stat().st_mtime_ns == built  # up to date
    code.append(tasks.PACKAGE / "kmake.py")  # as if kmake.py had changed
    assert chain.run(["kernel"], s).ok
    assert s.layout.kernel_json.stat().st_mtime_ns != built
