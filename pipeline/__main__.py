"""`python -m pipeline TASK... [section.key=value...]`: doit with exit codes per outcome.

doit itself exits 0-3 whatever went wrong; scripts and `git bisect run`
need to tell a bad input from a broken machine from a kernel that does not
compile.  Exit codes:

    0  success
    1  a task failed for another reason (see its message)
    2  bad input: settings, checksum, ref, a patch series that does not fit
    3  the machine lacks something: a tool, a daemon, network
    4  the kernel or a module failed to build
"""

from __future__ import annotations

import sys
from pathlib import Path

from doit.doit_cmd import DoitMain

from . import tasks

DODO = Path(__file__).resolve().parent.parent / "dodo.py"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = DoitMain().run(["-f", str(DODO), *args])
    if tasks.last_error is not None:
        return tasks.last_error.exit_code
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
