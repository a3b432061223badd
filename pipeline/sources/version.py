"""What kernel a tree holds, from its top-level Makefile."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import SourceError


def kernel_version(tree: Path) -> str:
    """"6.12.117" from the tree's top-level Makefile."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except FileNotFoundError:
        raise SourceError(f"{tree} has no top-level Makefile: not a kernel tree") from None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d*)", text, re.M))
    if not fields.get("VERSION") or not fields.get("PATCHLEVEL"):
        raise SourceError(f"{tree}/Makefile has no VERSION/PATCHLEVEL: not a kernel tree")
    return ".".join(fields[k] for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL") if fields.get(k))


def kernel_line(version: str) -> str:
    """"6.12" from "6.12.117": the line patches/kvm/ and kconfig/ keep per-line files for."""
    return ".".join(version.split(".")[:2])
