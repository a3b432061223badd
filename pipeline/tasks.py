"""doit glue: the chain's stage tasks, declared from one Settings value.

`declare(settings, run)` returns the stage tasks (fetch to test) as a doit
namespace; `pipeline.chain` hands them to doit's API, and the drivers
(`pipeline.drivers.tasks`) add their own tasks on top for the command line
and dodo.py.  Each action is one stage function of `pipeline/` called with
the settings; a stage that raises a PipelineError fails its task with the
one-paragraph message (no traceback) and leaves the error in `run` (a
RunState of this one run of the chain: nothing is kept in module globals, so
the chain can run many times in one process).

A task is stale when its inputs, its settings subset, the code of its stage,
or its record changed; a record of another schema counts as missing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from doit.exceptions import TaskFailed
from doit.tools import config_changed

from . import (
    failure,
    image,
    kbuild,
    kconfig,
    lock,
    manifest,
    patch,
    progress,
    records,
    selftests,
    settings,
    sources,
)
from .errors import PipelineError
from .records import (
    ConfigRecord,
    ImageRecord,
    KernelRecord,
    KmodRecord,
    SelftestsRecord,
    SeriesRecord,
    SourceRecord,
)
from .util import remove_tree

log = logging.getLogger("pipeline")

PACKAGE = Path(__file__).resolve().parent  # pipeline/

# In the order `doit list` shows them: the table of contents.
STAGE_TASKS = ("fetch", "patch", "config", "kernel", "kmod", "selftests", "image", "build",
               "boot", "test")
BUILD_TASKS = ("fetch", "patch", "config", "kernel", "kmod", "selftests", "image")


@dataclass
class RunState:
    """What one run of the chain learnt: the error that failed a step, if any."""

    error: PipelineError | None = None


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes: while a progress status line
    is up, that is rich's stand-in, which prints the line above the status."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging() -> None:
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("  %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def overrides_from_argv(argv: list[str]) -> dict[str, str]:
    """The `section.key=value` words of a doit command line (options start with '-')."""
    words = [word for word in argv if "=" in word and not word.startswith("-")]
    return dict(word.split("=", 1) for word in words)


def action(step: str, func: Callable[[settings.Settings], object], config: settings.Settings,
           run: RunState, locked: bool = True) -> Callable[[], TaskFailed | None]:
    """A doit python-action running `func(config)` with the build dir locked (unless
    `locked` is false: a step whose work is a nested chain in a build dir of its own,
    which locks that), its error kept in `run`."""

    def run_step() -> TaskFailed | None:
        try:
            with lock.holding(config.layout, config.paths.wait_lock) if locked \
                    else contextlib.nullcontext(), progress.Progress(step):
                func(config)
        except PipelineError as exc:
            run.error = exc
            return TaskFailed(f"{step}: {exc}")
        except OSError as exc:  # our own write to a full disk, say: the machine's
            host = failure.os_error(f"the {step} step", exc)
            if host is None:
                raise
            run.error = host
            return TaskFailed(f"{step}: {host}")
        return None

    run_step.__name__ = f"{step}_step"
    return run_step


def later(name: str) -> Callable[..., object]:
    """The stage function `module.function` of pipeline/, imported when the task runs.

    Every doit command loads every task, a no-op `doit build` too: the stages
    only some tasks run (a bisection, a repro, a guest run, a matrix) and all
    they import stay unloaded until then."""
    module, _, function = name.rpartition(".")

    def call(config: settings.Settings, *args: object) -> object:
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)(config,
                                                                                     *args)

    call.__name__ = function
    return call


def refusal(step: str, error: PipelineError, config: settings.Settings,
            run: RunState) -> Callable[[], TaskFailed | None]:
    """The action of a task whose settings were refused while tasks were declared:
    it fails with that error when (and only when) the task is run."""

    def refuse(_config: settings.Settings) -> None:
        raise error

    return action(step, refuse, config, run)


def code_files(stage: ModuleType) -> list[Path]:
    """The files of a stage's code: its module and every module of pipeline/ it imports,
    transitively (read from the files, not imported)."""
    todo, seen = [Path(stage.__file__).resolve()], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imports(path))
    return sorted(seen)


# A relative import: its dots, the module after them, the names (maybe parenthesised).
_RELATIVE_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+"
                              r"(\([^)]*\)|[^\n]*)", re.MULTILINE)


@functools.cache
def _imports(path: Path) -> tuple[Path, ...]:
    """The files of pipeline/ that the module at `path` imports: its relative imports
    (the package's own), read as text (parsing every module on each doit start costs more
    than the rest of a no-op build)."""
    found = set()
    for dots, module, names in _RELATIVE_IMPORT.findall(path.read_text()):
        base = path.parent
        for _ in range(len(dots) - 1):
            base = base.parent
        if module:
            base = base.joinpath(*module.split("."))
        words = re.sub(r"#[^\n]*", "", names).strip("()").split(",")
        candidates = [base, *(base / word.split()[0] for word in words if word.strip())]
        for name in candidates:
            found.update(file.resolve() for file in (name.with_suffix(".py"),
                                                     name / "__init__.py")
                         if file.is_file() and file.resolve().is_relative_to(PACKAGE))
    return tuple(sorted(found))


class unchanged(config_changed):
    """doit uptodate: the step's settings and code are as at its last run.

    The code is the stage module's with everything of pipeline/ it imports
    (`code_files`), hashed only when doit asks (not for every task loaded).
    One per task: doit keeps a single saved value for it, so two in one task
    would overwrite each other and the task never settles.
    """

    def __init__(self, settings_part: object, stage: ModuleType):
        super().__init__({})
        self.settings_part = settings_part
        self.stage = stage

    def _calc_digest(self) -> str:
        code = "".join(_file_digest(path) for path in code_files(self.stage))
        self.config = {"settings": self.settings_part, "code": code}
        return super()._calc_digest()


@functools.cache
def _file_digest(path: Path) -> str:
    """One code file's name and bytes, hashed once per process (stages share most files)."""
    name = path.relative_to(PACKAGE).as_posix().encode()
    return hashlib.sha256(name + b"\0" + path.read_bytes()).hexdigest()


def has_record(cls: type, config: settings.Settings) -> Callable[[], bool]:
    """doit uptodate: the step's record is there and of this schema."""
    return lambda: records.load(cls, config.layout) is not None


def remover(*paths: Path) -> Callable[[], None]:
    """A doit clean action removing files and directories a task made."""

    def clean() -> None:
        for path in paths:
            if path.exists() or path.is_symlink():
                print(f"removing {path}")
                remove_tree(path)

    return clean


def write_manifest(config: settings.Settings) -> None:
    layout = config.layout
    digest = manifest.write(layout)
    shown = layout.manifest.relative_to(config.root) if layout.manifest.is_relative_to(
        config.root) else layout.manifest
    print(f"manifest sha256 {digest}  {shown}", flush=True)


def stage_tasks(config: settings.Settings, run: RunState) -> TaskTable:
    """The task table of the stages, fetch to test."""
    layout = config.layout
    # Where make runs: changing it rebuilds config, kernel and kmod.
    runtime = {"runtime": config.kernel.runtime, "toolchain": config.image.toolchain,
               "toolchain_sha256": config.image.toolchain_sha256}

    def record_of(cls: type) -> Path:
        return records.path(cls, layout)

    def task_fetch():
        """Fetch the kernel tree into build/src/linux (source.kind: debian, tarball, local, git)."""
        return {
            "actions": [action("fetch", sources.fetch_tree, config, run)],
            # Only the identity of the tree matters: refetching for a code change would
            # throw away the kernel build for nothing.
            "uptodate": [lambda: sources.is_current(config)],
            "targets": [record_of(SourceRecord)],
            "clean": [remover(layout.tree, record_of(SourceRecord), layout.git_dir,
                              layout.git_index)],
        }

    def task_patch():
        """Apply the KVM preempt-count series from patches/kvm/ (all or nothing)."""
        return {
            "actions": [action("patch", patch.patch_tree, config, run)],
            "file_dep": [record_of(SourceRecord), *patch.all_series_files(config)],
            "uptodate": [unchanged(config.digest("patch"), patch),
                         has_record(SeriesRecord, config)],
            "targets": [record_of(SeriesRecord)],
            "clean": True,
        }

    def task_config():
        """Configure: tinyconfig + kconfig/ fragments for the variant, every option verified."""
        return {
            "actions": [action("config", kconfig.configure, config, run)],
            # The source record too: a git tree moved in place keeps its tree id.
            "file_dep": [record_of(SourceRecord), record_of(SeriesRecord),
                         *kconfig.all_fragment_paths(config)],
            "uptodate": [unchanged({"variant": config.kernel.variant,
                                    "fragments": config.kernel.fragments, **runtime},
                                   kconfig),
                         has_record(ConfigRecord, config)],
            "targets": [layout.kernel_config, record_of(ConfigRecord)],
            "clean": True,
        }

    def task_kernel():
        """Build bzImage and modules; publish them in build/artifacts/."""
        return {
            "actions": [action("kernel", kbuild.build_kernel, config, run)],
            "file_dep": [layout.kernel_config, record_of(SourceRecord), record_of(SeriesRecord)],
            "uptodate": [unchanged(runtime, kbuild),
                         has_record(KernelRecord, config)],
            "targets": [layout.bzimage, layout.kernel_json, layout.modules_sha256],
            "clean": [remover(layout.kbuild, layout.artifacts)],
        }

    def task_kmod():
        """Build kmod/ (sched_inject.ko, inject_target.ko) against the kernel, W=1, warning-free."""
        return {
            "actions": [action("kmod", kbuild.build_kmod, config, run)],
            "file_dep": [layout.modules_sha256, *kbuild.kmod_sources(config)],
            "uptodate": [unchanged(runtime, kbuild),
                         has_record(KmodRecord, config)],
            "targets": [layout.kmod_sha256, record_of(KmodRecord)],
            "clean": [remover(layout.kmod_work, layout.kmod, layout.kmod_sha256,
                              record_of(KmodRecord))],
        }

    def task_selftests():
        """Build the kernel's KVM selftests from the same tree (kselftest install) for the image."""
        return {
            "actions": [action("selftests", selftests.build_selftests, config, run)],
            # A new tree or series runs the action, which rebuilds only when the files
            # the selftests are built from changed (selftests.inputs_key); a new
            # config or anything else does not run it.
            "file_dep": [record_of(SourceRecord), record_of(SeriesRecord)],
            "uptodate": [unchanged({"build": config.kselftest.build, **runtime},
                                   selftests),
                         has_record(SelftestsRecord, config) if config.kselftest.build
                         else (lambda: not layout.selftests.exists())],
            "targets": [layout.selftests_sha256],
            "clean": [remover(layout.selftests_work, layout.selftests, layout.selftests_sha256,
                              record_of(SelftestsRecord))],
        }

    def task_image():
        """Bake the guest image in Docker (images/) into build/artifacts/rootfs.ext4."""
        return {
            "actions": [action("image", image.build_image, config, run)],
            "file_dep": [layout.modules_sha256, layout.kmod_sha256, layout.selftests_sha256,
                         *image.image_inputs(config)],
            "uptodate": [unchanged(config.digest("image"), image),
                         has_record(ImageRecord, config)],
            "targets": [layout.rootfs, layout.image_json, layout.dockerfile],
            "clean": [remover(layout.image_work, layout.rootfs, layout.image_json,
                              layout.dockerfile)],
        }

    def task_build():
        """Everything up to a bootable guest; reproducer.sh and manifest.json from the records."""
        return {
            # Always runs (it is cheap): the manifest's sha256 ends every build's output.
            "actions": [action("reproducer", later("reproducer.write"), config, run),
                        action("manifest", write_manifest, config, run)],
            "task_dep": list(BUILD_TASKS),
            "targets": [layout.reproducer, layout.manifest],
            "clean": [remover(layout.reproducer, layout.manifest)],
            "verbosity": 2,
        }

    def task_boot():
        """Boot the guest under QEMU and run the boot checks; results in build/results/."""
        return {
            "actions": [action("boot", later("guest.boot_checks"), config, run)],
            "task_dep": ["kernel", "kmod", "image"],
            "clean": [remover(layout.results, layout.results_history)],
            "verbosity": 2,
        }

    def task_test():
        """Boot the guest and run the suite (boot.suite); JUnit, JSON, KTAP in build/results/."""
        return {
            "actions": [action("test", later("guest.test_suite"), config, run)],
            "task_dep": ["kernel", "kmod", "image"],
            "clean": [remover(layout.results, layout.results_history)],
            "verbosity": 2,
        }

    return table(task_fetch, task_patch, task_config, task_kernel, task_kmod, task_selftests,
                 task_image, task_build, task_boot, task_test)


def declare(config: settings.Settings, run: RunState | None = None) -> dict[str, object]:
    """The stage tasks and DOIT_CONFIG of one chain, as a doit namespace."""
    return namespace(config, stage_tasks(config, run if run is not None else RunState()))


TaskTable = dict[str, Callable[[], object]]


def table(*creators: Callable[[], object]) -> TaskTable:
    """Task creators `task_NAME` (their docstring is the task's doc) by task name, in order."""
    return {creator.__name__.removeprefix("task_"): creator for creator in creators}


class Tasks:
    """A task table as one doit creator, yielding every task in the table's order.

    doit loads the creators of a namespace in the order of their source lines
    (of their names, from dodo.py); one creator keeps `doit list` in the
    order of the chain, the drivers' tasks after the stages'.
    """

    def __init__(self, tasks: TaskTable):
        self.tasks = tasks

    def create_doit_tasks(self) -> Iterator[dict]:
        for name, creator in self.tasks.items():
            made = creator()
            doc = inspect.getdoc(creator)
            if isinstance(made, dict):
                yield {"basename": name, "doc": doc, **made}
            else:  # a group: its doc, then its subtasks
                yield {"basename": name, "name": None, "doc": doc}
                yield from ({"basename": name, **subtask} for subtask in made)


def namespace(config: settings.Settings, tasks: TaskTable) -> dict[str, object]:
    """A task table and its DOIT_CONFIG as the namespace doit loads (dodo.py's globals)."""
    return {
        "DOIT_CONFIG": {
            "default_tasks": ["build"],
            "backend": "sqlite3",
            "dep_file": str(config.layout.doit_db),
            "verbosity": 2,
        },
        "tasks": Tasks(tasks),
    }


def task_names(namespace: dict[str, object]) -> list[str]:
    """The task names of a namespace made by `namespace`, in order."""
    return list(namespace["tasks"].tasks)
