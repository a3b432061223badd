"""Run the chain's tasks through doit's API and say how it went.

`run(tasks, settings)` can be called many times in one process, with other
settings and build dirs each time, also from inside a running doit task
(bisect and repro do exactly that): every call declares its own tasks,
its own RunState and its own doit dependency file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from doit.cmd_base import NamespaceTaskLoader
from doit.doit_cmd import DoitMain

from . import tasks
from .errors import PipelineError, UserError
from .settings import Settings

# doit commands that may stand in front of the task names.
DOIT_COMMANDS = ("run", "list", "clean", "forget", "info")


@dataclass(frozen=True)
class Outcome:
    """How one run of the chain ended: the exit code and, if a step failed, its error."""

    code: int
    error: PipelineError | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0


class _Loader(NamespaceTaskLoader):
    """doit's loader for a namespace made by tasks.declare()."""

    def __init__(self, namespace: dict[str, object]):
        super().__init__()
        self.namespace = namespace


def check_words(words: list[str]) -> None:
    """Reject a task name the chain does not have, before doit sees it."""
    names = words[1:] if words and words[0] in DOIT_COMMANDS else words
    for name in names:
        if name not in tasks.TASKS:
            raise UserError(f"no task named {name!r}; the tasks are {', '.join(tasks.TASKS)}")


def run(words: list[str], config: Settings) -> Outcome:
    """Run the tasks in `words` (optionally after a doit command such as `clean`)."""
    check_words(words)
    state = tasks.RunState()
    config.layout.build.mkdir(parents=True, exist_ok=True)
    namespace = tasks.declare(config, state)
    # doit's default output stream is the sys.stdout of when doit was imported;
    # the caller's current one is where a nested or captured run must report.
    namespace["DOIT_CONFIG"]["outfile"] = sys.stdout
    status = DoitMain(_Loader(namespace)).run(list(words))
    if state.error is not None:
        return Outcome(state.error.exit_code, state.error)
    # doit: 0 done, 1 a task failed, 2 a task errored, 3 an error before tasks ran.
    return Outcome(0 if status == 0 else 1)
