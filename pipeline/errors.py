"""One error hierarchy for the whole pipeline.

Library code raises these; only the command-line boundary (doit actions via
`pipeline.tasks`, `python -m pipeline`) prints them and exits.  Each message
names the problem and, where there is one, the fix.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline reports to its user."""

    exit_code = 1


class UserError(PipelineError):
    """Bad input: settings, a checksum, a ref, a patch series that does not fit."""

    exit_code = 2


class SettingsError(UserError):
    """A settings file or a key=value override is wrong."""


class SourceError(UserError):
    """The kernel source cannot be fetched as configured."""


class PatchError(UserError):
    """The KVM patch series does not fit the fetched tree."""


class ConfigError(UserError):
    """The kernel configuration did not come out as requested."""


class BuildError(PipelineError):
    """The kernel or a module failed to compile: the tree, not the machine or the input."""

    exit_code = 4


class EnvironmentProblem(PipelineError):
    """The machine lacks something: a tool, a daemon, network, disk space."""

    exit_code = 3


class CommandError(EnvironmentProblem):
    """An external command failed; carries the command and the tail of its output."""

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
