"""One error hierarchy for the whole pipeline, and the one table of its exit codes.

Library code raises these; only the entry points (`python -m pipeline` and
doit's action wrapper in `pipeline.tasks`) print them.  Each message names
the problem and, where there is one, the fix.  Each class's exit code is a
row of `Exit`, which also says what a bisection makes of it; `--help`,
bisect's verdicts, the guest's outcomes (`pipeline.results.Outcome`) and
the README's table are made from or checked against it.

A failed external command raises CommandError (code 1): the stage that ran
it decides what the failure means and raises one of the other errors.
"""

from __future__ import annotations

import enum


class Exit(enum.Enum):
    """Every exit code of `python -m pipeline`: (code, the tasks it is for (none: any),
    what a bisection step makes of it, what it means).

    A code can mean something else for one task (repro's 10 and 11); `code`
    None is the matrix's "the first failing cell's code"."""

    PASSED = (0, (), "good", "passed: the chain did what was asked")
    CULPRIT_FOUND = (0, ("bisect",), "", "the first bad commit was found")
    REPRODUCED = (0, ("repro",), "", "every input the same and every artifact identical")
    CELLS_PASSED = (0, ("matrix",), "", "every cell passed")
    STEP_GOOD = (0, ("step",), "good", "the commit is good")
    FAILED = (1, (), "abort", "anything else: a bug of the pipeline (please report it)")
    STEP_BAD = (1, ("step",), "bad", "the commit is bad")
    BAD_INPUT = (2, (), "abort",
                 "your settings or input are wrong: an unknown key, a bad value, a fragment "
                 "file that does not exist, a checksum mismatch, a ref or package version that "
                 "does not exist")
    BISECT_BAD_INPUT = (2, ("bisect",), "", "bad input: settings, refs, a bad ref that passes")
    INPUT_UNAVAILABLE = (2, ("repro",), "",
                         "an input of the manifest is not available here (a package version "
                         "the mirror no longer has and no pinned tarball holds: it names the "
                         "packages), or no or no readable manifest, or `repro.rebuild=false` "
                         "without an earlier rebuild")
    HOST_PROBLEM = (3, (), "try once more (half the make jobs after running out of memory), "
                           "then abort",
                    "the machine lacks something or failed: a tool, dockerd (the message names "
                    "the address tried), the network, a mirror that `apt-get` inside the image "
                    "build cannot reach; a build, `docker build`, `mkfs` or `debugfs` that "
                    "failed because of the machine (docs/test-suites.md, \"Host or tree\")")
    BUILD_ERROR = (4, (), "skip",
                   "the kernel, one of our modules or the KVM selftests do not compile: a "
                   "compiler, assembler, linker or modpost diagnostic in the log says so (or "
                   "kmod/ warns with W=1)")
    TREE_ERROR = (5, (), "skip",
                  "this tree cannot be built as asked: the KVM series does not apply or there "
                  "is none for this kernel line, a requested option does not exist or does not "
                  "survive `olddefconfig`, the image cannot be made from it")
    TEST_FAILURES = (10, ("boot", "test"), "bad",
                     "test failures (or the suite sent no exit status)")
    ARTIFACTS_DIFFER = (10, ("repro",), "", "the inputs are the same and an artifact differs")
    CONSOLE_BADNESS = (11, ("boot", "test"), "bad",
                       "the console shows a kernel complaint: WARN, BUG, oops, lockdep, KASAN, "
                       "\"scheduling while atomic\", \"sleeping function called from invalid "
                       "context\"")
    INPUTS_DIFFER = (11, ("repro",), "",
                     "an input differs (whatever the artifacts say; the message says that too)")
    KERNEL_PANIC = (12, ("boot", "test"), "bad", "kernel panic")
    BOOT_TIMEOUT = (13, ("boot", "test"), "bad",
                    "boot timeout: init did not start within `boot.boot_timeout`")
    TEST_TIMEOUT = (14, ("boot", "test"), "bad",
                    "test timeout: the run did not end within `boot.test_timeout`")
    QEMU_FAILED = (15, ("boot", "test"), "abort", "QEMU failed to start")
    BISECT_AMBIGUOUS = (20, ("bisect",), "",
                        "skipped commits leave several candidates for the first bad commit "
                        "(listed, as `git bisect` does)")
    STEP_SKIP = (125, ("step",), "skip", "the commit cannot be judged: skip it")
    INTERRUPTED = (130, (), "abort",
                   "interrupted (Ctrl-C): nothing half-written, the next run just works")
    STEP_ABORT = (255, ("step",), "abort", "abort the bisection (bad input or a host problem)")
    CELL_FAILED = (None, ("matrix",), "",
                   "a cell failed: the first failing cell's own code (e.g. 4 for a kernel "
                   "that does not compile, 10 for test failures)")

    def __init__(self, code: int | None, tasks: tuple[str, ...], bisect: str, meaning: str):
        self.code = code
        self.tasks = tasks
        self.bisect = bisect
        self.meaning = meaning

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")

    @classmethod
    def of(cls, code: int, task: str = "") -> Exit:
        """The row of `code` (for `task`, else for any task); FAILED for a code not in the table."""
        rows = [row for row in cls if row.code == code]
        return next((row for row in rows if task in row.tasks),
                    next((row for row in rows if not row.tasks), cls.FAILED))


def exit_table() -> str:
    """The exit codes as the README's markdown table, from `Exit`."""
    lines = ["| code | task | meaning | bisect step |", "|---|---|---|---|"]
    for row in sorted(Exit, key=lambda row: (row.code is None, row.code or 0)):
        tasks = ", ".join(f"`{task}`" for task in row.tasks) or "any"
        code = "*" if row.code is None else row.code
        lines.append(f"| {code} | {tasks} | {row.meaning} | {row.bisect} |")
    return "\n".join(lines) + "\n"


INTERRUPTED = Exit.INTERRUPTED.code


class PipelineError(Exception):
    """Base of every error the pipeline reports to its user."""

    exit_code = Exit.FAILED.code


class UserError(PipelineError):
    """Bad input: settings, a checksum, a ref, a file named in the settings."""

    exit_code = Exit.BAD_INPUT.code


class SettingsError(UserError):
    """A settings file or a key=value override is wrong."""


class SourceError(UserError):
    """The kernel source cannot be fetched as configured."""


class MissingStepError(UserError):
    """A step's input is not there: an earlier task has not run in this build dir."""

    def __init__(self, what: str, task: str):
        super().__init__(f"{what} is missing: run `doit {task}` first")


class EnvironmentProblem(PipelineError):
    """The machine lacks something: a tool, a daemon, network, disk space."""

    exit_code = Exit.HOST_PROBLEM.code


class HostFailure(EnvironmentProblem):
    """A command failed because of the machine (its output shows it), not the tree."""

    def __init__(self, message: str, out_of_memory: bool = False):
        super().__init__(message)
        self.out_of_memory = out_of_memory


class BuildError(PipelineError):
    """The kernel or a module failed to compile: the tree, not the machine or the input."""

    exit_code = Exit.BUILD_ERROR.code


class TreeError(PipelineError):
    """This tree cannot be built as asked (a bisection skips such a commit)."""

    exit_code = Exit.TREE_ERROR.code


class PatchError(TreeError):
    """The KVM patch series does not fit the fetched tree."""


class ConfigError(TreeError):
    """The kernel configuration did not come out as requested."""


class ImageError(TreeError):
    """The guest image cannot be made from these artifacts."""


class InputUnavailable(UserError):
    """`doit repro`: an input the manifest names is not available on this machine."""


class ArtifactsDiffer(PipelineError):
    """`doit repro`: the rebuild's artifacts are not the manifest's."""

    exit_code = Exit.ARTIFACTS_DIFFER.code


class InputsDiffer(PipelineError):
    """`doit repro`: the rebuild's inputs are not the manifest's, so it verifies nothing."""

    exit_code = Exit.INPUTS_DIFFER.code


class CommandError(PipelineError):
    """An external command failed; carries the command and the tail of its output.

    The stage that ran the command catches it and raises the error that says
    what the failure means (a compile error, a series that does not apply, a
    mirror that cannot be reached).  One that escapes a stage exits 1.
    """

    def __init__(self, argv_text: str, returncode: int, output_tail: str, hint: str = ""):
        self.argv_text = argv_text
        self.returncode = returncode
        self.output_tail = output_tail
        message = f"command failed with exit status {returncode}: {argv_text}"
        if output_tail:
            message += "\n--- last lines of its output ---\n" + output_tail
        if hint:
            message += "\n" + hint
        super().__init__(message)


class CommandTimedOut(CommandError):
    """An external command ran past its time limit and was killed."""

    def __init__(self, argv_text: str, seconds: float, output_tail: str):
        super().__init__(argv_text, -9, output_tail, f"killed after {seconds:.0f} s")
        self.seconds = seconds


class BuildDirBusy(EnvironmentProblem):
    """Another run holds the build dir (paths.wait_lock=false)."""


class BaseImageError(UserError):
    """image.base cannot be pulled: a wrong reference or an unreachable registry."""


class RunFailed(PipelineError):
    """The guest run ended in an outcome other than PASSED (a `pipeline.results.Outcome`,
    whose value is its exit code)."""

    def __init__(self, outcome: enum.Enum, why: str):
        super().__init__(f"{outcome.label}: {why}")
        self.outcome = outcome
        self.exit_code = outcome.value


class MatrixFailed(PipelineError):
    """A cell of the matrix failed; the exit code is the first failing cell's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class BisectAmbiguous(PipelineError):
    """Skipped commits leave several candidates for the first bad commit."""

    exit_code = Exit.BISECT_AMBIGUOUS.code
