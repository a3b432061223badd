"""Run the chain's tasks through doit's API and say how it went.

`run(words, settings)` can be called many times in one process, with other
settings and build dirs each time, also from inside a running doit task
(bisect and repro do exactly that): every call declares its own tasks,
its own RunState and its own doit dependency file.  A nested run has the
stage tasks only; the command line passes `declare` to add the drivers'.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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


def check_words(words: list[str], names: list[str]) -> None:
    """Reject a task name the chain does not have, before doit sees it."""
    asked = words[1:] if words and words[0] in DOIT_COMMANDS else words
    for name in asked:
        if name not in names:
            raise UserError(f"no task named {name!r}; the tasks are {', '.join(names)}")


def run(words: list[str], config: Settings,
        declare: Callable[[Settings, tasks.RunState], dict[str, object]] = tasks.declare
        ) -> Outcome:
    """Run the tasks in `words` (optionally after a doit command such as `clean`)."""
    state = tasks.RunState()
    namespace = declare(config, state)
    check_words(words, tasks.task_names(namespace))
    config.layout.build.mkdir(parents=True, exist_ok=True)
    # doit's default output stream is the sys.stdout of when doit was imported;
    # the caller's current one is where a nested or captured run must report.
    namespace["DOIT_CONFIG"]["outfile"] = sys.stdout
    status = DoitMain(_Loader(namespace)).run(list(words))
    if state.error is not None:
        return Outcome(state.error.exit_code, state.error)
    # doit: 0 done, 1 a task failed, 2 a task errored, 3 an error before tasks ran.
    return Outcome(0 if status == 0 else 1)
