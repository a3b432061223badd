"""QEMU: the command line, a usable accelerator, and the guest as a line stream.

The argv is assembled from small parts (machine, cpu, memory, kernel and
command line, root disk, console, virtio-serial ports) so a dry run can print
it and tests can assert on it.  `auto` acceleration is decided by really
booting the kernel under KVM for a few seconds: /dev/kvm existing does not
mean Linux boots on it (in a nested VM it may hang at 100% sys time).
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import platform
import queue
import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import commands
from .errors import EnvironmentProblem, PipelineError
from .util import atomic_write_text

log = logging.getLogger("pipeline")

QEMU = "qemu-system-x86_64"
PROBE_SECONDS = 20
TICK = 1.0  # seconds between on_tick calls of stream()
# The first line Linux prints on the serial console.
PROBE_MARKER = "Linux version"


@dataclass(frozen=True)
class Accelerator:
    name: str
    argv: tuple[str, ...]


ACCELERATORS = {
    "kvm": Accelerator("kvm", ("-accel", "kvm", "-cpu", "host")),
    # -cpu max offers SVM, so the guest can run KVM (kvm-amd) nested.
    "tcg": Accelerator("tcg", ("-accel", "tcg", "-cpu", "max")),
}


def with_cpu(accel: Accelerator, cpu: str) -> Accelerator:
    """`accel` with QEMU's -cpu set to `cpu` (boot.cpu; empty: the accelerator's own)."""
    if not cpu:
        return accel
    argv = list(accel.argv)
    argv[argv.index("-cpu") + 1] = cpu
    return Accelerator(accel.name, tuple(argv))


@dataclass(frozen=True)
class Choice:
    accel: Accelerator
    why: str


@dataclass
class QemuCommand:
    """A QEMU command line built from parts; `argv()` joins them."""

    accel: Accelerator
    kernel: Path
    cmdline: list[str]
    memory_mb: int = 1024
    smp: int = 2
    root_disk: Path | None = None
    disks: tuple[Path, ...] = ()  # more, read-only: /dev/vdb, /dev/vdc...
    ports: dict[str, Path] = field(default_factory=dict)  # virtio-serial name -> host file
    monitor: Path | None = None  # a unix socket for QEMU's human monitor (HMP)

    def argv(self) -> list[str]:
        argv = [QEMU, "-nodefaults", "-no-reboot", "-display", "none",
                "-machine", "pc", *self.accel.argv,
                "-m", str(self.memory_mb), "-smp", str(self.smp),
                "-kernel", str(self.kernel), "-append", " ".join(self.cmdline),
                # The serial console is QEMU's stdout: the host reads it as lines.
                "-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"]
        if self.root_disk is not None:
            # snapshot=on: the guest's writes never reach the image artifact.
            argv += ["-drive", f"file={self.root_disk},if=virtio,format=raw,snapshot=on"]
        for disk in self.disks:
            argv += ["-drive", f"file={disk},if=virtio,format=raw,readonly=on"]
        if self.ports:
            argv += ["-device", "virtio-serial-pci"]
            for name, path in self.ports.items():
                argv += ["-chardev", f"file,id={name},path={path}",
                         "-device", f"virtserialport,chardev={name},name={name}"]
        if self.monitor is not None:
            argv += ["-monitor", f"unix:{self.monitor},server=on,wait=off"]
        return argv

    def shell(self) -> str:
        return shlex.join(self.argv())


# ------------------------------------------------------------------ the stream


@dataclass
class Run:
    """What a bounded QEMU run produced."""

    lines: list[str]
    returncode: int | None  # None: killed at a deadline
    timed_out: str | None   # which deadline: "boot" or "run"
    seconds: float
    first_marker_seconds: float | None = None


def stream(argv: list[str], log_file: Path, *, deadline: float, marker: str | None = None,
           marker_deadline: float | None = None,
           on_line: Callable[[str], None] | None = None,
           on_tick: Callable[[], None] | None = None,
           on_timeout: Callable[[], None] | None = None) -> Run:
    """Run argv, teeing its output lines to `log_file`, killing it at a deadline.

    `deadline` bounds the whole run; `marker_deadline`, if given, bounds the time
    until a line containing `marker` appears (e.g. the guest's init starting).
    `on_tick` runs about every TICK seconds, lines or not (live progress);
    `on_timeout` runs at a deadline, before the kill (to look at the hung guest).
    """
    log.info("$ %s", shlex.join(argv))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except FileNotFoundError:
        raise EnvironmentProblem(f"{argv[0]} is not installed; run scripts/setup") from None
    lines_q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines_q.put(line.rstrip("\r\n"))
        lines_q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    run = Run(lines=[], returncode=None, timed_out=None, seconds=0.0)
    next_tick = TICK
    try:
        with open(log_file, "w") as out:
            while True:
                now = time.monotonic() - started
                if on_tick is not None and now >= next_tick:
                    on_tick()
                    next_tick = now + TICK
                limit = deadline
                if marker_deadline is not None and run.first_marker_seconds is None:
                    limit = min(limit, marker_deadline)
                wait = limit - now
                if on_tick is not None:
                    wait = min(wait, next_tick - now)
                try:
                    line = lines_q.get(timeout=max(0.0, wait))
                except queue.Empty:
                    if time.monotonic() - started < limit:
                        continue  # a tick is due, not a deadline
                    # Whichever deadline `limit` was: the marker's unless the run's is sooner.
                    boot_limited = (marker_deadline is not None
                                    and run.first_marker_seconds is None
                                    and marker_deadline < deadline)
                    run.timed_out = "boot" if boot_limited else "run"
                    if on_timeout is not None:
                        on_timeout()
                    break
                if line is None:
                    break
                out.write(line + "\n")
                out.flush()
                run.lines.append(line)
                if on_line:
                    on_line(line)
                if marker and run.first_marker_seconds is None and marker in line:
                    run.first_marker_seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        returncode = proc.wait()  # reaped even when killed: no zombie QEMU
        run.returncode = None if run.timed_out else returncode
        run.seconds = time.monotonic() - started
    return run


# ------------------------------------------------------------------ a hung guest

MONITOR_SECONDS = 10
_PROMPT = b"(qemu) "
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def monitor_command(socket_path: Path, command: str, seconds: float = MONITOR_SECONDS) -> str:
    """One HMP command's output over QEMU's monitor socket (escape codes removed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(seconds)
        conn.connect(str(socket_path))
        _read_until_prompt(conn)  # the banner
        conn.sendall(command.encode() + b"\n")
        received = _read_until_prompt(conn)
    text = _ESCAPES.sub("", received.decode(errors="replace")).replace("\r", "")
    lines = text.split("\n")
    # The monitor echoes the command first and ends with its next prompt.
    if lines and lines[0].strip().endswith(command):
        lines = lines[1:]
    return "\n".join(line for line in lines if line.strip() != _PROMPT.decode().strip())


def _read_until_prompt(conn: socket.socket) -> bytes:
    received = b""
    while not received.endswith(_PROMPT):
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def symbolize(registers: str, system_map: Path) -> list[str]:
    """'CPU n: RIP=... symbol+offset' for each vCPU in `info registers -a` output.

    Only the kernel's own text has names in System.map; a module's or a nested
    guest's address is shown as it is.
    """
    symbols: list[tuple[int, str]] = []
    if system_map.is_file():
        for line in system_map.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":
                symbols.append((int(parts[0], 16), parts[2]))
        symbols.sort()
    starts = [address for address, _ in symbols]
    text_end = next((address for address, name in symbols if name == "_etext"), 0)
    out = []
    for cpu, rip in enumerate(re.findall(r"RIP=([0-9a-f]{16})", registers)):
        address = int(rip, 16)
        index = bisect.bisect_right(starts, address) - 1
        where = "not in the kernel's text (a module, user space or a nested guest)"
        if index >= 0 and address < text_end:
            name_start, name = symbols[index]
            where = f"{name}+{address - name_start:#x}"
        out.append(f"CPU {cpu}: RIP={rip} {where}")
    return out


# ------------------------------------------------------------------ accelerator


def _cache_key() -> dict:
    try:
        qemu_version = commands.run([QEMU, "--version"]).splitlines()[0]
    except PipelineError:  # no QEMU: the boot itself will say so
        qemu_version = "unknown"
    return {"host": platform.node(), "host_kernel": platform.release(), "qemu": qemu_version}


def probe_kvm(kernel: Path, log_file: Path, seconds: float = PROBE_SECONDS,
              qemu: str = QEMU) -> tuple[bool, str]:
    """Boot `kernel` under KVM until its first console line, within `seconds`."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not accessible to this user"
    cmd = QemuCommand(ACCELERATORS["kvm"], kernel, ["console=ttyS0", "panic=-1"], memory_mb=256,
                      smp=1)
    argv = [qemu, *cmd.argv()[1:]]
    run = stream(argv, log_file, deadline=seconds, marker=PROBE_MARKER)
    if run.first_marker_seconds is not None:
        return True, (f"a KVM probe boot printed its first console line after "
                      f"{run.first_marker_seconds:.1f} s")
    if run.timed_out:
        return False, f"a KVM probe boot printed nothing in {seconds:.0f} s (KVM unusable here)"
    last = run.lines[-1][:160] if run.lines else f"exit status {run.returncode}"
    return False, f"a KVM probe boot failed: {last}"


def choose_accelerator(wanted: str, kernel: Path, cache: Path, probe_log: Path,
                       probe: Callable[[Path, Path], tuple[bool, str]] = probe_kvm) -> Choice:
    """The accelerator to use, and why; `auto` probes once per host, cached in `cache`."""
    if wanted != "auto":
        return Choice(ACCELERATORS[wanted], f"boot.accel = {wanted}")
    key = _cache_key()
    try:
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return Choice(ACCELERATORS[cached["accel"]], cached["why"] + " (cached verdict)")
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        pass
    probe_log.parent.mkdir(parents=True, exist_ok=True)
    usable, why = probe(kernel, probe_log)
    accel = "kvm" if usable else "tcg"
    atomic_write_text(cache, json.dumps({"key": key, "accel": accel, "why": why}, indent=2))
    return Choice(ACCELERATORS[accel], why)
