"""The verdict cache: the runs done on each commit, keyed by all that decides them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec

from ... import kconfig
from ...records import write_typed
from ...settings import SECTIONS, Settings, keys_of
from .verdicts import Run

# The pipeline's own code (pipeline/): a verdict holds for the code that gave it.
PIPELINE_CODE = Path(__file__).resolve().parents[2]


def _digest_tree(digest: hashlib._Hash, top: Path) -> None:
    """Every file under `top` (a file: itself), by name relative to it, into `digest`."""
    paths = sorted(top.rglob("*")) if top.is_dir() else [top]
    for path in paths:
        if path.is_file() and "__pycache__" not in path.parts:
            name = path.relative_to(top) if top.is_dir() else path.name
            digest.update(f"{top.name}/{name}".encode() + b"\0" + path.read_bytes() + b"\0")


# Settings that cannot change a commit's verdict: where things go, how fast and
# through which caches the build runs (ccache's objects are the compiler's), the
# other drivers' own settings, and the bisection's (each step's settings already
# carry their effect: the commit, bisect.series as patch.series; the runs are
# cached, not the verdicts, so bisect.runs and bisect.symptom only re-judge them).
# Every other setting, a new one too, is in the key: a miss costs a rebuild, a
# stale hit a wrong answer.
NOT_DECIDING = frozenset({
    "source", "bisect", "repro", "matrix", "lava", "paths",
    "kernel.jobs", "kernel.ccache", "kernel.ccache_remote", "kernel.ccache_remote_mode",
    "kernel.verbose",
    "image.docker_cache", "boot.dry_run", "test.repeat",
})


def deciding_settings(settings: Settings) -> dict[str, Any]:
    """Every setting but NOT_DECIDING's, as {"section.key": value}."""
    return {f"{section}.{key}": getattr(getattr(settings, section), key)
            for section in SECTIONS if section not in NOT_DECIDING
            for key in keys_of(section)
            if f"{section}.{key}" not in NOT_DECIDING}


def verdict_key(settings: Settings, commit: str) -> str:
    """What decides a commit's verdict: the commit, the project's inputs, every setting
    that reaches the kernel, the image and the guest run, and the pipeline's own code."""
    layout = settings.layout
    digest = hashlib.sha256(commit.encode() + b"\0")
    tops = [layout.series_root, layout.fragments_dir, layout.kmod_sources, layout.images_root,
            PIPELINE_CODE]
    for top in tops + kconfig.user_fragment_paths(settings):
        _digest_tree(digest, top)
    digest.update(json.dumps(deciding_settings(settings), sort_keys=True).encode())
    return digest.hexdigest()


class CacheEntry(msgspec.Struct):
    commit: str
    runs: list[Run]


class VerdictCache:
    """verdict key -> the commit and the runs done on it, in one JSON file written
    atomically; a file that does not read as one is an empty cache."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries = msgspec.json.decode(path.read_bytes(), type=dict[str, CacheEntry])
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            self.entries = {}

    def runs(self, key: str) -> list[Run]:
        entry = self.entries.get(key)
        return list(entry.runs) if entry else []

    def add(self, key: str, commit: str, run: Run) -> None:
        self.entries.setdefault(key, CacheEntry(commit, [])).runs.append(run)
        write_typed(self.path, self.entries)
