"""The boundary between doit and the pipeline: settings loading and task actions.

dodo.py declares tasks; the actions it names are built here.  A step that
raises a PipelineError fails its task with the one-paragraph message (no
traceback), and the error is kept so `python -m pipeline` can turn it into
an exit code.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from doit import doit_cmd
from doit.exceptions import TaskFailed
from doit.tools import config_changed

from . import commands, settings
from .errors import PipelineError
from .kbuild import journal_path
from .util import atomic_write_text, remove_tree

log = logging.getLogger("pipeline")

# The error that failed the last step, for the exit code of `python -m pipeline`.
last_error: PipelineError | None = None


def setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("  %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def load_settings(root: Path) -> settings.Settings:
    """Settings from doit's command-line `key=value` variables; exits on bad input."""
    # doit only offers get_var(name); the whole dict is needed to reject typos.
    overrides = dict(doit_cmd._CMDLINE_VARS or {})
    try:
        return settings.load(root, overrides)
    except PipelineError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def action(step: str, func: Callable[[settings.Settings], object],
           config: settings.Settings) -> Callable[[], TaskFailed | None]:
    """A doit python-action running `func(config)` and journalling its commands."""

    def run_step() -> TaskFailed | None:
        global last_error
        with commands.journal() as ran:
            try:
                func(config)
            except PipelineError as exc:
                last_error = exc
                return TaskFailed(f"{step}: {exc}")
        atomic_write_text(journal_path(config, step), "".join(f"{c}\n" for c in ran))
        return None

    run_step.__name__ = f"{step}_step"
    return run_step


def code_version(*modules: object) -> str:
    """A digest of the modules implementing a step: changed code makes the step stale."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def unchanged(settings_part: object, *modules: object) -> config_changed:
    """doit uptodate: the step's settings and code are as at its last run.

    One config_changed per task: doit keeps a single saved value for it, so
    two in one task would overwrite each other and the task never settles.
    """
    return config_changed({"settings": settings_part, "code": code_version(*modules)})


def remover(*paths: Path) -> Callable[[], None]:
    """A doit clean action removing files and directories a task made."""

    def clean() -> None:
        for path in paths:
            if path.exists() or path.is_symlink():
                print(f"removing {path}")
                remove_tree(path)

    return clean
