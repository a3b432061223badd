"""One error hierarchy for the whole pipeline, and the exit codes it maps to.

Library code raises these; only the entry points (`python -m pipeline` and
doit's action wrapper in `pipeline.tasks`) print them.  Each message names
the problem and, where there is one, the fix.  The classes keep apart what a
script (and a bisection) must tell apart:

    code  class                 meaning                                   bisect
    0     -                     the chain did what was asked              good
    1     PipelineError         anything else (a bug of ours: report it)  abort
    2     UserError             your settings or input are wrong          abort
    2     InputUnavailable      repro: an input of the manifest cannot    -
                                be had here (a package version)
    3     EnvironmentProblem    the machine lacks something: a tool,      abort
                                dockerd, network, a mirror, disk space
    3     HostFailure           a build failed because of the machine:    retry,
                                a killed compiler, a full disk, no        then
                                memory (`pipeline.failure` tells it from  abort
                                the tree's failures by the evidence)
    4     BuildError            the kernel or a module does not compile   skip
                                (a compiler or linker diagnostic says so)
    5     TreeError             this tree cannot be built as asked: the   skip
                                series does not apply, a requested
                                option does not exist or survive, the
                                image cannot be made from it
    10-15 guest outcomes        see `pipeline.results.Outcome`            bad
    10    ArtifactsDiffer       repro: a rebuilt artifact differs         -
    11    InputsDiffer          repro: an input of the rebuild is not     -
                                the manifest's (whatever the artifacts)
    20    BisectAmbiguous       skipped commits leave several candidates  -
    *     MatrixFailed          a matrix cell failed: the first failing   -
                                cell's own code (pipeline.drivers.matrix)
    130   -                     interrupted (Ctrl-C)                      abort

A failed external command raises CommandError (code 1): the stage that ran
it decides what the failure means and raises one of the errors above.
"""

from __future__ import annotations

INTERRUPTED = 130


class PipelineError(Exception):
    """Base of every error the pipeline reports to its user."""

    exit_code = 1


class UserError(PipelineError):
    """Bad input: settings, a checksum, a ref, a file named in the settings."""

    exit_code = 2


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

    exit_code = 3


class HostFailure(EnvironmentProblem):
    """A command failed because of the machine (its output shows it), not the tree."""

    def __init__(self, message: str, out_of_memory: bool = False):
        super().__init__(message)
        self.out_of_memory = out_of_memory


class BuildError(PipelineError):
    """The kernel or a module failed to compile: the tree, not the machine or the input."""

    exit_code = 4


class TreeError(PipelineError):
    """This tree cannot be built as asked (a bisection skips such a commit)."""

    exit_code = 5


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

    exit_code = 10


class InputsDiffer(PipelineError):
    """`doit repro`: the rebuild's inputs are not the manifest's, so it verifies nothing."""

    exit_code = 11


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
