#!/usr/bin/env python3
"""Regenerate the KVM preempt-count series for one kernel line.

    patches/kvm/generate.py /path/to/linux-6.12 patches/kvm/6.12

Finds every KVM translation unit that calls preempt_disable()/get_cpu(),
adds `#include <linux/kvm_preempt_count.h>` after its top include block (not
after its last #include: x86.c and nested.c include X-macro files mid-file),
and writes a two-patch quilt series with git format-patch.  Review the result
by hand; it is a starting point for porting, not a substitute for reading.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = "include/linux/kvm_preempt_count.h"
INCLUDE_LINE = "#include <linux/kvm_preempt_count.h>\t/* must stay last, see there */"
CALLERS = re.compile(r"\b(preempt_disable|preempt_enable|get_cpu|put_cpu)\(\)")
DIRS = ("arch/x86/kvm", "virt/kvm")

HEADER_TEXT = """\
/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Make KVM's non-preemptible regions visible in preempt_count() on kernels
 * built without CONFIG_PREEMPT_COUNT.
 *
 * There preempt_disable() and preempt_enable() are barrier(), so code that
 * looks at preempt_count() from an interrupt (a sampling profiler, a fault
 * injector that decides whether the interrupted task may sleep) cannot tell
 * that KVM is in, say, vcpu_enter_guest()'s window where the task must not
 * migrate.  Redefined here, they always bump and drop the per-CPU count.
 *
 * Include this file LAST, after the whole include block of a KVM .c file.
 * The redefinition then only reaches call sites expanded in that file:
 * preempt_disable()/preempt_enable() and the macros built on them such as
 * get_cpu()/put_cpu().  Inline functions of headers included earlier keep
 * their original bodies.  That matters: force-including this before the
 * headers would turn the inline spin_unlock() of a !PREEMPTION kernel into a
 * decrement whose out-of-line spin_lock() never incremented, and the count
 * would underflow on every CPU.
 *
 * With CONFIG_PREEMPT_COUNT the stock definitions already count (and on
 * PREEMPTION kernels also reschedule in preempt_enable()), so this file does
 * nothing there.
 */
#ifndef _LINUX_KVM_PREEMPT_COUNT_H
#define _LINUX_KVM_PREEMPT_COUNT_H

#include <linux/preempt.h>

#ifndef CONFIG_PREEMPT_COUNT

#undef preempt_disable
#define preempt_disable() \\
do { \\
	preempt_count_inc(); \\
	barrier(); \\
} while (0)

#undef preempt_enable
#define preempt_enable() \\
do { \\
	barrier(); \\
	preempt_count_dec(); \\
} while (0)

#endif /* !CONFIG_PREEMPT_COUNT */

#endif /* _LINUX_KVM_PREEMPT_COUNT_H */
"""

MESSAGES = {
    1: """\
KVM: add kvm_preempt_count.h: count preemption without PREEMPT_COUNT

On kernels built without CONFIG_PREEMPT_COUNT (PREEMPT_NONE or
PREEMPT_VOLUNTARY without PREEMPT_DYNAMIC or the debug options that select
it) preempt_disable() is only a compiler barrier.  Tools that sample
preempt_count() from interrupt context then cannot see that KVM is inside a
region where its task must not sleep or migrate.

Add a header that KVM files include last, redefining preempt_disable() and
preempt_enable() to always update preempt_count on such kernels.
""",
    2: """\
KVM: x86: count preemption in every KVM file that disables it

Include <linux/kvm_preempt_count.h> after the include block of each KVM
translation unit that calls preempt_disable(), preempt_enable(), get_cpu()
or put_cpu(), so all of KVM's non-preemptible regions, vcpu_enter_guest()'s
above all, show in preempt_count() on kernels without CONFIG_PREEMPT_COUNT.
""",
}


def top_include_block_end(lines: list[str]) -> int:
    """Index of the line after which the top include block ends (depth 0)."""
    last, depth, pending, in_comment = None, 0, False, False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if in_comment:
            in_comment = "*/" not in stripped
            continue
        if stripped.startswith("/*"):
            in_comment = "*/" not in stripped
            continue
        if not stripped or stripped.startswith("//"):
            continue
        if stripped.startswith("#"):
            directive = stripped[1:].strip().split(" ")[0].split("\t")[0]
            if directive.startswith("if"):
                depth += 1
            elif directive == "endif":
                depth -= 1
                if depth == 0 and pending:
                    last, pending = i, False
            elif directive == "include":
                if depth == 0:
                    last = i
                else:
                    pending = True
            continue
        if last is not None:
            return last
    raise SystemExit("no include block found")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def main() -> None:
    tree, out = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted(
        str(p.relative_to(tree))
        for d in DIRS for p in (tree / d).rglob("*.c")
        if CALLERS.search(p.read_text(errors="replace"))
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in files:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tree / name, work / name)
        git("init", "-q", cwd=work)
        git("add", "-A", cwd=work)
        git("-c", "user.name=kvm-pipeline", "-c", "user.email=kvm-pipeline@localhost",
            "commit", "-qm", "base", cwd=work)
        (work / HEADER).parent.mkdir(parents=True, exist_ok=True)
        (work / HEADER).write_text(HEADER_TEXT)
        for number, paths in ((1, [HEADER]), (2, files)):
            if number == 2:
                for name in files:
                    lines = (work / name).read_text().split("\n")
                    lines.insert(top_include_block_end(lines) + 1, INCLUDE_LINE)
                    (work / name).write_text("\n".join(lines))
            git("add", *paths, cwd=work)
            git("-c", "user.name=kvm-pipeline", "-c", "user.email=kvm-pipeline@localhost",
                "commit", "-q", "-s", "-m", MESSAGES[number], cwd=work)
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.patch"):
            old.unlink()
        names = git("format-patch", "--no-signature", "--zero-commit", "--no-numbered",
                    "-o", str(out.resolve()), "HEAD~2", cwd=work).split()
    (out / "series").write_text("".join(Path(n).name + "\n" for n in names))
    print("\n".join(names))


if __name__ == "__main__":
    main()
