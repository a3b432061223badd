"""Host or tree: failed builds blamed by their evidence, on real failures of real tools."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pipeline import commands, failure, image, kbuild, tasks
from pipeline.errors import (
    BuildError,
    CommandError,
    CommandTimedOut,
    HostFailure,
    PatchError,
    UserError,
)

# Heavy enough that cc1 needs far more than the memory limit below, and runs long
# enough to be killed mid-compile.
HEAVY_C = "".join(f"int g{n}(int a) {{ int b[100]; for (int i = 0; i < 100; i++) "
                  f"b[i] = a * i + {n}; return b[a % 100]; }}\n" for n in range(3000))


def failed(argv: list[str], cwd: Path) -> CommandError:
    with pytest.raises(CommandError) as raised:
        commands.run(argv, cwd=cwd)
    return raised.value


def blamed_as(exc: CommandError, tmp_path: Path) -> BuildError | HostFailure:
    log_file = tmp_path / "build.log"
    log_file.write_text(exc.output_tail)
    error = kbuild.build_failed("the kernel's build", exc, log_file)
    assert isinstance(error, (BuildError, HostFailure))
    return error


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 KiB tmpfs: a real full disk."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", mount], check=True)
    yield mount
    subprocess.run(["umount", mount], check=True)


def test_a_command_past_its_time_limit_is_killed_with_its_output():
    """Without the limit the command would end well (exit 0, after 30 s): no error."""
    with pytest.raises(CommandTimedOut) as killed:
        commands.run(["sh", "-c", "echo started; sleep 30"], timeout=1)
    assert killed.value.output_tail == "started"
    assert "killed after 1 s" in str(killed.value)
    assert commands.run(["echo", "quick"], timeout=30) == "quick\n"
    with pytest.raises(CommandError) as failed:  # failing in time: not a time-out
        commands.run(["false"], timeout=30)
    assert not isinstance(failed.value, CommandTimedOut) and failed.value.returncode == 1


def test_a_time_limit_kills_the_children_that_outlive_the_command(tmp_path):
    """The shell exits at once; its child holds the output pipe and would mark its end
    with a file: the limit kills it before that."""
    done = tmp_path / "child-finished"
    with pytest.raises(CommandTimedOut):
        commands.run(["sh", "-c", f"(sleep 8; touch {done}) & echo started; exit 3"],
                     timeout=1)
    assert not done.exists()


def test_a_compile_error_is_the_trees(tmp_path):
    (tmp_path / "bad.c").write_text("int f(void) { return x; }\n")
    error = blamed_as(failed(["gcc", "-c", "bad.c", "-o", "bad.o"], tmp_path), tmp_path)
    assert isinstance(error, BuildError) and error.exit_code == 4
    assert "bad.c:1:22: error: " in str(error) and "undeclared" in str(error)


def test_a_link_error_is_the_trees(tmp_path):
    (tmp_path / "main.c").write_text("int missing(void);\nint main(void) { return missing(); }\n")
    error = blamed_as(failed(["gcc", "main.c", "-o", "main"], tmp_path), tmp_path)
    assert isinstance(error, BuildError)
    assert "undefined reference to `missing'" in str(error)


def test_a_compiler_out_of_memory_is_the_hosts(tmp_path):
    """Under a real memory limit cc1 fails to allocate (or to load, or crashes)."""
    (tmp_path / "heavy.c").write_text(HEAVY_C)
    exc = failed(["sh", "-c", "ulimit -v 45000; exec gcc -O2 -c heavy.c -o heavy.o"], tmp_path)
    error = blamed_as(exc, tmp_path)
    assert isinstance(error, HostFailure) and error.exit_code == 3
    assert error.out_of_memory, str(error)


def test_a_compiler_the_oom_killer_killed_is_the_hosts(tmp_path):
    (tmp_path / "heavy.c").write_text(HEAVY_C)
    gcc = subprocess.Popen(["gcc", "-O2", "-c", "heavy.c", "-o", "heavy.o"], cwd=tmp_path,
                           stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{gcc.pid}/task/{gcc.pid}/children")
    deadline = time.monotonic() + 30
    while not children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.01)
    cc1 = children.read_text().split()
    assert cc1, "gcc started no compiler"
    subprocess.run(["kill", "-KILL", cc1[0]], check=True)  # as the OOM killer does
    _, stderr = gcc.communicate()
    blamed = failure.blame(stderr, gcc.returncode)
    assert blamed.host and blamed.out_of_memory
    assert "Killed signal terminated program cc1" in blamed.evidence


def test_a_full_disk_is_the_hosts_although_the_assembler_complains(tmp_path, tiny_disk):
    (tmp_path / "heavy.c").write_text(HEAVY_C)
    exc = failed(["gcc", "-O2", "-g", "-c", "heavy.c", "-o", str(tiny_disk / "heavy.o")],
                 tmp_path)
    error = blamed_as(exc, tmp_path)
    assert isinstance(error, HostFailure) and not error.out_of_memory
    assert "the disk is full" in str(error) and "No space left on device" in str(error)


def test_a_stopped_dockerd_is_the_hosts(tmp_path):
    exc = failed(["docker", "-H", f"unix://{tmp_path}/docker.sock", "run", "--rm",
                  "kvm-pipeline/toolchain", "make"], tmp_path)
    error = blamed_as(exc, tmp_path)
    assert isinstance(error, HostFailure)
    assert "the Docker daemon failed" in str(error)


def test_a_failure_without_any_diagnostic_is_the_hosts(tmp_path):
    (tmp_path / "Makefile").write_text("all:\n\t@exit 1\n")
    error = blamed_as(failed(["make"], tmp_path), tmp_path)
    assert isinstance(error, HostFailure)
    assert "without a compiler, linker or modpost diagnostic" in str(error)


@pytest.mark.parametrize(("returncode", "killed"), [(-9, "SIGKILL"), (137, "SIGKILL"),
                                                    (-15, "SIGTERM")])
def test_a_command_killed_by_a_signal_is_the_hosts(returncode, killed):
    blamed = failure.blame("kernel/fork.c:12:1: error: this diagnostic came first\n",
                           returncode)
    assert blamed.host and killed in blamed.evidence


def test_modpost_is_the_trees():
    blamed = failure.blame('ERROR: modpost: "kvm_x" [arch/x86/kvm/kvm-amd.ko] undefined!\n'
                           "make[2]: *** [scripts/Makefile.modpost:145: Module.symvers] "
                           "Error 1\n", 2)
    assert not blamed.host and blamed.evidence.startswith("ERROR: modpost:")


def test_an_image_too_small_is_a_setting_and_a_full_disk_the_host(make_settings, tmp_path,
                                                                  tiny_disk):
    tree = tmp_path / "rootfs"
    tree.mkdir()
    (tree / "big").write_bytes(b"\xa5" * (257 << 20))  # the smallest image is 256 MiB
    s = make_settings(**{"image.size_mb": "256"})
    with pytest.raises(UserError, match=r"do not fit in image\.size_mb=256"):
        image.make_ext4(s, tree, tmp_path / "rootfs.ext4")
    with pytest.raises(HostFailure, match="the disk is full"):
        image.make_ext4(make_settings(), tree, tiny_disk / "rootfs.ext4")


def test_our_own_write_to_a_full_disk_is_the_hosts(make_settings, tiny_disk):
    """A record or log the pipeline writes itself: an OSError, not a command's output."""
    run = tasks.RunState()

    def write_a_record(_settings):
        (tiny_disk / "record.json").write_bytes(b"x" * (1 << 20))

    failed = tasks.action("kernel", write_a_record, make_settings(), run)()
    assert failed is not None and isinstance(run.error, HostFailure)
    assert "the kernel step failed because of this machine" in str(run.error)
    assert "the disk is full" in str(run.error)

    def a_bug(_settings):
        raise FileNotFoundError("not ours to judge")

    with pytest.raises(FileNotFoundError):
        tasks.action("kernel", a_bug, make_settings(), tasks.RunState())()


def test_a_patch_or_config_step_the_disk_failed_is_not_the_trees():
    full = CommandError("git apply", 1, "error: unable to write file 'x.c' mode 100644: "
                                        "No space left on device")
    tree_error = PatchError("does not apply")
    assert isinstance(failure.unless_host("git apply", full, tree_error), HostFailure)
    broken = CommandError("git apply", 1, "error: patch failed: arch/x86/kvm/x86.c:12")
    assert failure.unless_host("git apply", broken, tree_error) is tree_error


def test_a_checkout_onto_a_full_disk_is_the_hosts(tmp_path, tiny_disk):
    """git says only "unable to write file": the full file system it wrote to says why."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "big.c").write_bytes(b"/* filler */\n" * 8192)
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@b"}
    for argv in (["init", "-q"], ["add", "big.c"], ["commit", "-qm", "big"]):
        commands.run(["git", *argv], cwd=repo, env=env)
    exc = failed(["git", "--git-dir", str(repo / ".git"), "--work-tree", str(tiny_disk),
                  "read-tree", "--reset", "-u", "HEAD"], tmp_path)
    error = failure.machine_error("checking out", exc, tiny_disk)
    assert isinstance(error, HostFailure) and "the disk is full" in str(error), str(error)
