"""The matrix's cells: kernel line x variant x patched/stock, picked by matrix.cells.

Apart from the matrix's run (pipeline.drivers.matrix) so that declaring the
matrix's tasks, on every doit start, imports the settings alone.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import SettingsError
from ..layout import Layout
from ..settings import Settings


@dataclass(frozen=True)
class Cell:
    line: str  # a Debian kernel source package: linux-source-6.12
    variant: str
    patch: str  # "patched" or "stock"

    @property
    def name(self) -> str:
        return f"{self.line.removeprefix('linux-source-')}-{self.variant}-{self.patch}"


def all_cells(config: Settings) -> list[Cell]:
    matrix = config.matrix
    return [Cell(line, variant, patch) for line in matrix.lines for variant in matrix.variants
            for patch in matrix.patch]


def picked_cells(config: Settings) -> list[Cell]:
    """The cells matrix.cells picks (all when empty); a glob that picks none is an error."""
    cells = all_cells(config)
    globs = [glob for glob in config.matrix.cells.split(",") if glob]
    if not globs:
        return cells
    for glob in globs:
        if not any(fnmatch.fnmatchcase(cell.name, glob) for cell in cells):
            raise SettingsError(f"matrix.cells picks no cell with {glob!r}; the cells are "
                                f"{', '.join(cell.name for cell in cells)}")
    return [cell for cell in cells
            if any(fnmatch.fnmatchcase(cell.name, glob) for glob in globs)]


def cell_settings(config: Settings, cell: Cell) -> Settings:
    """The run's settings with the cell's own, then matrix.settings' matching entries."""
    changes: dict[str, dict[str, Any]] = {
        "source": {"kind": "debian", "package": cell.line, "version": ""},
        "kernel": {"variant": cell.variant},
        "patch": {"enabled": cell.patch == "patched"},
        # One run per cell: test.repeat is for hunting a flake in one build dir.
        "test": {"repeat": 1},
        "paths": {"build": str(cell_dir(config.layout, cell))},
    }
    for glob, sections in config.matrix.settings.items():
        if fnmatch.fnmatchcase(cell.name, glob):
            for section, keys in sections.items():
                changes.setdefault(section, {}).update(keys)
    return settings.derive(config, changes, f"matrix cell {cell.name}")


def cell_dir(layout: Layout, cell: Cell) -> Path:
    return layout.matrix / cell.name


def cell_record(layout: Layout, cell: Cell) -> Path:
    return cell_dir(layout, cell) / "matrix-cell.json"
