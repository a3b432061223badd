"""Configure the kernel from tinyconfig plus fragments, then verify the result.

olddefconfig silently drops options whose dependencies are missing (the
classic: VIRTIO_PCI vanishes without VIRTIO_MENU and the guest cannot mount
its root).  So every option a fragment asks for is checked in the final
.config, and one that did not survive is an error naming it and its fragment.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from . import commands
from .errors import ConfigError
from .fetch import read_record
from .kmake import kbuild_belongs_to, make_argv, make_env
from .settings import Settings
from .util import atomic_write_text, remove_tree

log = logging.getLogger("pipeline")

VARIANT_FRAGMENTS = {
    "default": ("guest.config", "kvm.config", "production.config"),
    "debug": ("guest.config", "kvm.config", "debug.config"),
}
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def fragment_paths(settings: Settings) -> list[Path]:
    paths = [settings.root / "kconfig" / name
             for name in VARIANT_FRAGMENTS[settings.kernel.variant]]
    paths += [settings.resolve(name) for name in settings.kernel.fragments]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"config fragment {path} does not exist (kernel.fragments)")
    return paths


def parse_config(text: str, origin: str = "", strict: bool = False) -> dict[str, str | None]:
    """CONFIG_* values of a .config or fragment; None means "is not set"."""
    values: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if match := _SET.match(line):
            values[match[1]] = match[2]
        elif match := _UNSET.match(line):
            values[match[1]] = None
        elif strict and line and not line.startswith("#"):
            raise ConfigError(f"{origin}:{number}: not a CONFIG_ line: {raw!r}")
    return values


def requested_options(fragments: list[Path]) -> dict[str, tuple[str | None, Path]]:
    """What the fragments ask for, later fragments winning (as merge_config does)."""
    wanted: dict[str, tuple[str | None, Path]] = {}
    for path in fragments:
        for name, value in parse_config(path.read_text(), str(path), strict=True).items():
            wanted[name] = (value, path)
    return wanted


def _shown(name: str, value: str | None) -> str:
    return f"{name}={value}" if value not in (None, "n") else f"{name} unset"


def verify(wanted: dict[str, tuple[str | None, Path]], final: dict[str, str | None],
           root: Path) -> None:
    problems = []
    for name, (value, path) in sorted(wanted.items()):
        want = None if value == "n" else value
        have = None if final.get(name) == "n" else final.get(name)
        if want != have:
            where = path.relative_to(root) if path.is_relative_to(root) else path
            problems.append(f"  {_shown(name, want)} (from {where}) came out as "
                            f"{_shown(name, have)}")
    if problems:
        raise ConfigError(
            "requested kernel options did not survive olddefconfig:\n" + "\n".join(problems)
            + "\nAn option disappears when its dependencies are off or its name changed in "
            "this kernel; `make menuconfig` (search with /) shows what it depends on."
        )


def configure(settings: Settings) -> dict:
    """The `config` task: write and verify build/kbuild/.config."""
    fetched = read_record(settings)
    if fetched is None:
        raise ConfigError("no fetched tree: run `doit fetch` first")
    kbuild = settings.kbuild_dir
    if kbuild.exists() and not kbuild_belongs_to(kbuild, fetched["tree_id"]):
        # Archives keep old file times, so make would trust objects of another tree.
        log.info("%s was built from another tree; starting it afresh", kbuild)
        remove_tree(kbuild)
    kbuild.mkdir(parents=True, exist_ok=True)
    (kbuild / ".pipeline-tree-id").write_text(fetched["tree_id"] + "\n")

    fragments = fragment_paths(settings)
    wanted = requested_options(fragments)
    env = make_env(settings, fetched["resolved"]["source_date_epoch"])
    config = kbuild / ".config"
    try:
        commands.run(make_argv(settings, "tinyconfig"), env=env)
        commands.run([settings.tree_dir / "scripts/kconfig/merge_config.sh", "-m", "-O",
                      kbuild, config, *fragments], cwd=settings.tree_dir, env=env)
        commands.run(make_argv(settings, "olddefconfig"), env=env)
        verify(wanted, parse_config(config.read_text()), settings.root)
    except BaseException:
        # A .config that failed verification must not look like a finished step.
        config.unlink(missing_ok=True)
        raise
    record = {
        "variant": settings.kernel.variant,
        "fragments": [str(p) for p in fragments],
        "checked_options": len(wanted),
    }
    atomic_write_text(settings.stamps_dir / "config.json", json.dumps(record, indent=2) + "\n")
    log.info("configured %s kernel: %d requested options all present", settings.kernel.variant,
             len(wanted))
    return record
