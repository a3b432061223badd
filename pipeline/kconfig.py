"""Configure the kernel from tinyconfig plus fragments, then verify the result.

olddefconfig silently drops options whose dependencies are missing (the
classic: VIRTIO_PCI vanishes without VIRTIO_MENU and the guest cannot mount
its root).  So every option a fragment asks for is checked in the final
.config, and one that did not survive is an error naming it and its fragment.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from . import failure, kmake, records
from .errors import CommandError, ConfigError, SettingsError
from .kmake import Make
from .records import ConfigRecord, SourceRecord
from .settings import VARIANTS, Settings
from .sources import kernel_line
from .util import file_sha256, remove_tree

log = logging.getLogger("pipeline")

# Every variant's fragments: the common ones, then the variant's own (settings.VARIANTS).
COMMON_FRAGMENTS = ("guest.config", "kvm.config", "selftests.config")
VARIANT_FRAGMENTS = {variant: (*COMMON_FRAGMENTS, own) for variant, own in VARIANTS.items()}
_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def fragment_paths(settings: Settings, version: str) -> list[Path]:
    """The variant's fragments for a kernel version, then kernel.fragments
    (checked to exist by settings).

    kconfig/<VERSION.PATCHLEVEL>/NAME, where it exists, stands in for
    kconfig/NAME on that line: an option renamed since (6.1's RETPOLINE is
    MITIGATION_RETPOLINE from 6.9 on) or a choice that line makes otherwise
    cannot be asked for by one fragment, since every option asked for is
    checked.
    """
    line_dir = settings.layout.fragments_dir / kernel_line(version)
    paths = [line_dir / name if (line_dir / name).is_file()
             else settings.layout.fragments_dir / name
             for name in VARIANT_FRAGMENTS[settings.kernel.variant]]
    return paths + user_fragment_paths(settings)


def all_fragment_paths(settings: Settings) -> list[Path]:
    """Every fragment the variant may use on any line: the config task's
    inputs, declared before the tree (and so its version) is known.  An edit
    of another line's fragment reruns config for nothing; the kernel is not
    rebuilt, as its .config comes out the same."""
    root = settings.layout.fragments_dir
    names = VARIANT_FRAGMENTS[settings.kernel.variant]
    per_line = sorted(path for name in names for path in root.glob(f"*/{name}"))
    return [root / name for name in names] + per_line + user_fragment_paths(settings)


def user_fragment_paths(settings: Settings) -> list[Path]:
    """kernel.fragments, as paths."""
    return [settings.resolve(name) for name in settings.kernel.fragments]


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
            raise SettingsError(f"{origin}:{number}: not a CONFIG_ line: {raw!r}")
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


def config_commands(make: Make, fragments: list[Path]) -> list[list[str | Path]]:
    """tinyconfig, the fragments merged in, olddefconfig (run from the tree)."""
    seen = make.paths
    return [make.argv("tinyconfig"),
            [seen.tree / "scripts/kconfig/merge_config.sh", "-m", "-O", seen.kbuild,
             seen.kernel_config, *(make.inside(path) for path in fragments)],
            make.argv("olddefconfig")]


def _project_name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def configure(settings: Settings) -> ConfigRecord:
    """The `config` task: write and verify build/kbuild/.config."""
    layout = settings.layout
    source = records.require(SourceRecord, layout)
    kbuild = layout.kbuild
    if kbuild.exists() and not kmake.kbuild_belongs_to(kbuild, source.tree_id):
        # Archives keep old file times, so make would trust objects of another tree.
        log.info("%s was built from another tree; starting it afresh", kbuild)
        remove_tree(kbuild)
    kbuild.mkdir(parents=True, exist_ok=True)
    (kbuild / kmake.TREE_ID_MARKER).write_text(source.tree_id + "\n")

    fragments = fragment_paths(settings, source.kernel_version)
    wanted = requested_options(fragments)
    make = kmake.for_settings(settings, source.source_date_epoch)
    config = layout.kernel_config
    try:
        for argv in config_commands(make, fragments):
            make.run(argv, cwd=layout.tree)
        verify(wanted, parse_config(config.read_text()), settings.root)
    except CommandError as exc:
        config.unlink(missing_ok=True)
        raise failure.unless_host("configuring the kernel", exc, ConfigError(
            f"this tree cannot be configured as asked ({exc.argv_text}):\n"
            f"{exc.output_tail}")) from None
    except BaseException:
        # A .config that failed verification must not look like a finished step.
        config.unlink(missing_ok=True)
        raise
    record = ConfigRecord(
        tree_id=source.tree_id,
        variant=settings.kernel.variant,
        fragments=tuple(_project_name(p, settings.root) for p in fragments),
        fragment_sha256={_project_name(p, settings.root): file_sha256(p) for p in fragments},
        checked_options=len(wanted),
        config_sha256=file_sha256(config),
    )
    records.save(record, layout)
    log.info("configured %s kernel: %d requested options all present", settings.kernel.variant,
             len(wanted))
    return record
