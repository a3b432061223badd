"""One writer per build dir: a second run waits or fails; a killed holder's lock is taken."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytest

from pipeline import lock, tasks
from pipeline.errors import BuildDirBusy, PipelineError
from pipeline.layout import Layout


def layout_of(tmp_path: Path) -> Layout:
    return Layout(project=tmp_path, build=tmp_path / "build", cache=tmp_path / "cache")


@pytest.fixture
def holder(tmp_path, hold_build_dir):
    return hold_build_dir(tmp_path / "build")


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, holder):
    with pytest.raises(BuildDirBusy) as busy, \
            lock.holding(layout_of(tmp_path), wait=False):
        pytest.fail("two holders")
    assert f"in use by another run (pid {holder.pid})" in str(busy.value)
    assert busy.value.exit_code == 3 and "paths.wait_lock=true" in str(busy.value)


def test_a_second_run_waits_and_takes_over_the_lock_of_a_killed_run(tmp_path, holder, caplog):
    got = threading.Event()

    def second_run():
        with lock.holding(layout_of(tmp_path), wait=True):
            got.set()

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        waiter = threading.Thread(target=second_run)
        waiter.start()
        assert not got.wait(1.0)  # still waiting: the holder runs
        assert f"in use by another run (pid {holder.pid}): waiting" in caplog.text
        holder.send_signal(signal.SIGKILL)  # killed mid-task: its lock is left behind
        waiter.join(30)
    assert got.is_set()
    assert (tmp_path / "build" / ".lock").read_text() != f"{holder.pid}\n"


def test_one_after_the_other_both_run(tmp_path):
    for _ in range(2):
        with lock.holding(layout_of(tmp_path), wait=False):
            pass


def test_a_nested_run_on_the_same_build_dir_is_a_bug_not_a_hang(tmp_path):
    with lock.holding(layout_of(tmp_path), wait=True), \
            pytest.raises(PipelineError, match="a nested run must use a build dir of its own"), \
            lock.holding(layout_of(tmp_path), wait=True):
        pass


def test_a_matrix_cell_step_does_not_take_the_top_build_dirs_lock(make_settings,
                                                                  hold_build_dir, monkeypatch):
    """`doit -n 2 matrix` runs two cells at once: each is a chain in a build dir of its
    own (which locks that), so the cell's step must not wait for the other's lock."""
    from pipeline.drivers import matrix
    from pipeline.drivers import tasks as all_tasks

    config = make_settings(**{"paths.wait_lock": "false"})
    hold_build_dir(config.layout.build)
    ran = []
    monkeypatch.setattr(matrix, "run_cell", lambda c, cell: ran.append(cell.name))
    run = tasks.RunState()
    declared = list(all_tasks.declare(config, run)["tasks"].tasks["matrix"]())
    cell = declared[0]
    assert cell["name"] != "summary"
    assert cell["actions"][0]() is None and ran == [cell["name"]]
    summary = next(task for task in declared if task["name"] == "summary")
    assert summary["actions"][0]() is not None  # it writes the top build dir: locked
    assert isinstance(run.error, BuildDirBusy)
