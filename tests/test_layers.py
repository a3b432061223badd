"""The house's layers: pipeline/'s import graph, as pyproject.toml's contract says.

The command line sits on the drivers (bisect, repro, matrix, lava), which
run the chain, which runs the stage tasks, which call the stages, which sit
on the base (settings, records, layout, errors).  Nothing imports upward and
no import circle forms, so a nested run of the chain never needs a driver.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=root, capture_output=True, text=True,
                          check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


CIRCLES = """
import json, grimp
graph = grimp.build_graph("pipeline", cache_dir=None)
print(json.dumps(sorted(
    (a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
    if graph.find_shortest_chain(importer=b, imported=a))))
"""


def circles(root: Path) -> list[list[str]]:
    """Every direct import [a, b] of pipeline/ that a chain of imports leads back from b to a
    (read from the files, in a process of its own: the installed package stays out)."""
    proc = subprocess.run([sys.executable, "-c", CIRCLES], cwd=root, capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(root)})
    return json.loads(proc.stdout)


def test_the_layers_contract_holds():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_pipeline_has_no_import_circle():
    assert circles(ROOT) == []


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the project with the import `line` added to pipeline/`module`."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copytree(ROOT / "pipeline", copy / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    path = copy / "pipeline" / module
    text = path.read_text()
    future = "from __future__ import annotations\n"
    assert future in text
    path.write_text(text.replace(future, f"{future}{line}\n", 1))
    return copy


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The guest stage importing the chain: a nested chain's stage would need the chain."""
    planted = planted_copy(tmp_path, "guest.py", "from . import chain")
    proc = lint_imports(planted)
    assert proc.returncode != 0
    assert "pipeline.guest is not allowed to import pipeline.chain" in proc.stdout


def test_a_circle_between_siblings_is_refused(tmp_path):
    """Two stages of one layer may import each other's names, but not both ways."""
    planted = planted_copy(tmp_path, "results.py", "from . import guest")
    assert lint_imports(planted).returncode == 0  # the layers alone allow it
    assert ["pipeline.results", "pipeline.guest"] in circles(planted)
