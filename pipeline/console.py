"""Classify a guest's serial console: what went wrong in the kernel, if anything.

Each finding is a kind, the line number and the line, so a report can quote
it.  The patterns are the kernel's own headlines (panic(), __warn(), die(),
__schedule_bug(), __might_resched(), lockdep, KASAN, RCU).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# (kind, pattern), most specific first: a line gets the first kind that matches.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern)) for kind, pattern in (
        ("panic", r"Kernel panic - not syncing"),
        ("scheduling while atomic", r"BUG: scheduling while atomic"),
        ("sleeping in atomic context",
         r"BUG: sleeping function called from invalid context"),
        ("kasan", r"BUG: KASAN: "),
        ("lockdep", r"WARNING: (possible (circular|recursive) locking|inconsistent lock state"
                    r"|suspicious RCU usage|bad unlock balance|held lock freed)"),
        ("rcu stall", r"rcu: INFO: rcu_\w+ (self-)?detected stalls?"),
        ("soft lockup", r"watchdog: BUG: soft lockup"),
        ("hung task", r"INFO: task .* blocked for more than"),
        ("oops", r"(Oops: |general protection fault|BUG: unable to handle)"),
        ("bug", r"(kernel BUG at |BUG: )"),
        ("warning", r"WARNING: CPU: \d+ PID: \d+ at "),
    )
)


@dataclass(frozen=True)
class Finding:
    kind: str
    line_number: int
    line: str


def classify(lines: Iterable[str]) -> list[Finding]:
    findings = []
    for number, line in enumerate(lines, 1):
        for kind, pattern in PATTERNS:
            if pattern.search(line):
                findings.append(Finding(kind, number, line.strip()))
                break
    return findings


def has_panic(findings: list[Finding]) -> bool:
    return any(f.kind == "panic" for f in findings)
