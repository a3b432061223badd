"""The drivers' doit tasks (bisect, repro, matrix, lava), declared on top of the stage tasks.

`declare(settings, run)` is the whole table the command line and dodo.py
load; a nested run of the chain (a driver's) declares only the stage tasks.
"""

from __future__ import annotations

from .. import tasks
from ..errors import PipelineError
from ..settings import Settings
from ..tasks import RunState, action, later, refusal, remover

# In the order `doit list` shows them, after the stage tasks.
DRIVER_TASKS = ("bisect", "repro", "matrix", "lava")


def declare(config: Settings, run: RunState | None = None) -> dict[str, object]:
    """Every task of the command line as a doit namespace: the stage tasks, then the
    drivers'."""
    run = run if run is not None else RunState()
    layout = config.layout

    def task_bisect():
        """Find the commit where the selected cases broke (bisect.good, bisect.bad; git source)."""
        return {
            "actions": [action("bisect", later("drivers.bisect.bisect"), config, run)],
            "verbosity": 2,
        }

    def task_repro():
        """Rebuild everything afresh, no cache read; compare with the manifest (repro.against)."""
        return {
            "actions": [action("repro", later("drivers.repro.repro"), config, run)],
            # Against the build's own manifest: that build first.
            "task_dep": [] if config.repro.against else ["build"],
            "clean": [remover(layout.repro)],
            "verbosity": 2,
        }

    def task_matrix():
        """Build and test every cell (kernel line x variant x patched/stock); one summary."""
        from .cells import cell_dir, picked_cells

        try:
            cells = picked_cells(config)
        except PipelineError as exc:
            # Only `doit matrix` reports it: other tasks do not need the matrix.
            cells, summary = [], refusal("matrix", exc, config, run)
        else:
            summary = action("matrix", later("drivers.matrix.finish"), config, run)
        run_cell = later("drivers.matrix.run_cell")
        for cell in cells:
            yield {
                "name": cell.name,
                "doc": f"{cell.line}, {cell.variant} variant, {cell.patch}: build and test in "
                       f"{cell_dir(layout, cell)}",
                # Unlocked: `doit -n 2 matrix` runs cells side by side, each a chain
                # that locks its own build dir.
                "actions": [action(f"matrix {cell.name}",
                                   lambda c, cell=cell: run_cell(c, cell), config, run,
                                   locked=False)],
                "clean": [remover(cell_dir(layout, cell))],
                "verbosity": 2,
            }
        # The cells' failures are rows of the summary, which runs after them all.
        yield {
            "name": "summary",
            "actions": [summary],
            "task_dep": [f"matrix:{cell.name}" for cell in cells],
            "clean": [remover(layout.matrix_summary, layout.matrix_junit, layout.matrix_page,
                              layout.matrix_kcidb)],
            "verbosity": 2,
        }

    def task_lava():
        """Write the suite as a LAVA job (build/lava/; lava.matrix: one per cell)."""
        # The settings are checked by a step of their own, first: a bad URL or case
        # glob stops `doit lava` before any build, and loading the tasks renders no job.
        yield {
            "name": "check",
            "doc": "Refuse what the LAVA job cannot carry, before any build",
            "actions": [action("lava", later("drivers.lava.check"), config, run)],
            "verbosity": 2,
        }
        yield {
            "name": "jobs",
            "doc": "Write the job definitions and the compressed image",
            "actions": [action("lava", later("drivers.lava.lava_jobs"), config, run)],
            "task_dep": ["lava:check"] + ([] if config.lava.matrix else ["build"]),
            "clean": [remover(layout.lava, layout.rootfs_zst)],
            "verbosity": 2,
        }

    return tasks.namespace(config, {**tasks.stage_tasks(config, run),
                                    **tasks.table(task_bisect, task_repro, task_matrix, task_lava)})
