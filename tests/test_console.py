"""The console classifier on consoles captured from our own guest runs."""

from pathlib import Path

import pytest

from pipeline import console

GOLDEN = Path(__file__).parent / "golden"


def findings_of(name: str) -> list[console.Finding]:
    return console.classify((GOLDEN / name).read_text().splitlines())


def test_clean_boot_has_no_findings():
    assert findings_of("boot-passed.console") == []


def test_hang_alone_has_no_findings():
    """A hang is the deadline's business, not the console's."""
    assert findings_of("hang.console") == []


def test_captured_panic():
    (finding,) = findings_of("panic.console")
    assert finding.kind == "panic"
    assert "Attempted to kill init" in finding.line
    lines = (GOLDEN / "panic.console").read_text().splitlines()
    assert lines[finding.line_number - 1].strip() == finding.line


# The kernel's own headline formats (printk strings of __warn(), __schedule_bug(),
# __might_resched(), print_circular_bug(), kasan_report(), die()).
@pytest.mark.parametrize(("line", "kind"), [
    ("[   12.3] WARNING: CPU: 1 PID: 88 at kmod/sched_inject.c:120 inj_timer_fn+0x55/0x90 [sched_inject]",
     "warning"),
    ("[    5.1] BUG: scheduling while atomic: kworker/0:1/42/0x00000002", "scheduling while atomic"),
    ("[    5.1] BUG: sleeping function called from invalid context at kernel/time/sleep_timeout.c:311",
     "sleeping in atomic context"),
    ("[    7.0] WARNING: possible circular locking dependency detected", "lockdep"),
    ("[    7.0] WARNING: suspicious RCU usage", "lockdep"),
    ("[    8.0] BUG: KASAN: slab-use-after-free in inj_stop+0x10/0x20", "kasan"),
    ("[    9.0] Oops: general protection fault, probably for non-canonical address", "oops"),
    ("[    9.0] BUG: kernel NULL pointer dereference, address: 0000000000000000", "bug"),
    ("[   30.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kvm-hlt:99]", "soft lockup"),
    ("[   40.0] rcu: INFO: rcu_sched self-detected stall on CPU", "rcu stall"),
])
def test_kernel_headlines(line, kind):
    (finding,) = console.classify([line])
    assert finding.kind == kind


def test_ordinary_lines_are_not_findings():
    assert console.classify(["[ 0.1] Linux version 6.12.117", "pipeline-init: running suite boot",
                             "[ 1.0] kvm_amd: Nested Virtualization enabled",
                             "WARNING: this is a userspace message without CPU/PID"]) == []


def test_captured_warn():
    """A real WARN (inject_target's debugfs hook) from our own guest."""
    findings = findings_of("warn.console")
    assert [f.kind for f in findings] == ["warning"]
    assert "inj_warn_write" in findings[0].line
