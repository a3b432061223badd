"""Settings: one frozen, typed value, validated once.

Layers, later wins: the embedded `default.toml`, an optional user file
(`pipeline.toml` in the project, or the file named by `settings=PATH`), then
`section.key=value` overrides from the doit command line.  Every error names
the key, where it came from and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import ccache
from .errors import SettingsError
from .layout import Layout

USER_FILE = "pipeline.toml"
SOURCE_KINDS = ("debian", "tarball", "local", "git")
VARIANTS = ("default", "debug")
CCACHE_MODES = ("auto", "on", "off", "recache")
RUNTIMES = ("host", "docker")
ACCELERATORS = ("auto", "kvm", "tcg")
# How the selftests' injected pass injects: the timer in KVM's ranges, the
# points of images/kvm-points, or both.
KSELFTEST_INJECT = ("timer", "targeted", "both")
BISECT_FIND = ("regression", "fix")


@dataclass(frozen=True)
class SourceSettings:
    kind: str
    package: str
    version: str
    url: str
    signature_url: str
    keyring: str
    path: str
    sha256: str
    repo: str
    ref: str
    tree_cache: bool


@dataclass(frozen=True)
class PatchSettings:
    enabled: bool
    series: str


@dataclass(frozen=True)
class KernelSettings:
    variant: str
    fragments: tuple[str, ...]
    jobs: int
    ccache: str
    ccache_remote: str
    ccache_remote_mode: str
    runtime: str


@dataclass(frozen=True)
class ImageSettings:
    base: str
    base_sha256: str
    toolchain: str
    toolchain_sha256: str
    docker_cache: bool
    suite: str
    mirror: str
    source_date_epoch: int
    size_mb: int
    uuid: str


@dataclass(frozen=True)
class BootSettings:
    accel: str
    memory_mb: int
    smp: int
    boot_timeout: int
    test_timeout: int
    cmdline: str
    suite: str
    dry_run: bool
    cpu: str
    disks: str


@dataclass(frozen=True)
class TestSettings:
    cases: str
    repeat: int
    injection_seconds: int
    section_seconds: int
    kvm_seconds: int
    lifecycle_cycles: int
    allow_skips: str
    min_exercised_percent: int

    def guest_parameters(self) -> list[str]:
        """The kernel command-line words the suites read (as PIPELINE_NAME)."""
        words = [f"pipeline.{name}={getattr(self, name)}" for name in
                 ("injection_seconds", "section_seconds", "kvm_seconds", "lifecycle_cycles")]
        if self.cases:
            words.append(f"pipeline.cases={self.cases}")
        return words


@dataclass(frozen=True)
class KselftestSettings:
    build: bool
    tests: str
    timeout: int
    inject: str
    exercised_at: int

    def guest_parameters(self) -> list[str]:
        """The kernel command-line words the kselftest suite reads."""
        return [f"pipeline.kselftest_timeout={self.timeout}",
                f"pipeline.kselftest_inject={self.inject}",
                *([f"pipeline.kselftests={self.tests}"] if self.tests else [])]


@dataclass(frozen=True)
class BisectSettings:
    good: str
    bad: str
    runs: int
    series: str
    find: str
    paths: tuple[str, ...]
    symptom: str


@dataclass(frozen=True)
class ReproSettings:
    against: str
    rebuild: bool


@dataclass(frozen=True)
class MatrixSettings:
    lines: tuple[str, ...]
    variants: tuple[str, ...]
    patch: tuple[str, ...]
    cells: str
    settings: tuple[str, ...]


@dataclass(frozen=True)
class LavaSettings:
    artifacts_url: str
    device_type: str
    kvm: bool
    matrix: bool


@dataclass(frozen=True)
class PathSettings:
    build: str
    cache: str
    wait_lock: bool


@dataclass(frozen=True)
class Settings:
    source: SourceSettings
    patch: PatchSettings
    kernel: KernelSettings
    image: ImageSettings
    boot: BootSettings
    test: TestSettings
    kselftest: KselftestSettings
    bisect: BisectSettings
    repro: ReproSettings
    matrix: MatrixSettings
    lava: LavaSettings
    paths: PathSettings
    root: Path  # the project directory; relative paths are resolved against it

    @property
    def layout(self) -> Layout:
        """Every path under the build dir, the cache and the project."""
        if self.paths.cache:
            cache = self.resolve(self.paths.cache)
        else:
            xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            cache = Path(xdg) / "kvm-pipeline"
        return Layout(project=self.root, build=self.resolve(self.paths.build), cache=cache)

    def resolve(self, path: str) -> Path:
        return self.root / Path(path).expanduser()

    def digest(self, *sections: str) -> str:
        """A stable hash of the named sections, for doit's config_changed."""
        data = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


SECTIONS = {
    "source": SourceSettings,
    "patch": PatchSettings,
    "kernel": KernelSettings,
    "image": ImageSettings,
    "boot": BootSettings,
    "test": TestSettings,
    "kselftest": KselftestSettings,
    "bisect": BisectSettings,
    "repro": ReproSettings,
    "matrix": MatrixSettings,
    "lava": LavaSettings,
    "paths": PathSettings,
}
ALLOWED = {
    ("source", "kind"): SOURCE_KINDS,
    ("kernel", "variant"): VARIANTS,
    ("kernel", "ccache"): CCACHE_MODES,
    ("kernel", "ccache_remote_mode"): ccache.REMOTE_MODES,
    ("kernel", "runtime"): RUNTIMES,
    ("boot", "accel"): ACCELERATORS,
    ("kselftest", "inject"): KSELFTEST_INJECT,
    ("bisect", "find"): BISECT_FIND,
}
# What each source kind needs, checked after all layers are merged.
REQUIRED_BY_KIND = {
    "debian": ("package",),
    "tarball": ("url", "sha256"),
    "local": ("path", "sha256"),
    "git": ("repo", "ref"),
}
# Lower bounds of numbers where 0 makes no sense.
MINIMUM = {
    ("image", "size_mb"): 256,
    ("boot", "memory_mb"): 128,
    ("boot", "smp"): 1,
    ("boot", "boot_timeout"): 1,
    ("boot", "test_timeout"): 1,
    ("test", "repeat"): 1,
    ("test", "injection_seconds"): 1,
    ("test", "section_seconds"): 1,
    ("test", "kvm_seconds"): 2,
    ("test", "lifecycle_cycles"): 1,
    ("bisect", "runs"): 1,
    ("kselftest", "exercised_at"): 1,
}
# Case globs travel on the kernel command line: no blanks, quotes or '='.
CASES_RE = re.compile(r"^[A-Za-z0-9_.*?\[\],-]*$")
# Matrix cells: a kernel line (a Debian linux-source package), a variant, the
# series applied or not; "GLOB:section.key=value" sets a key for some cells.
MATRIX_LINE_RE = re.compile(r"^linux-source-[0-9][0-9.]*$")
MATRIX_PATCH = ("patched", "stock")
MATRIX_WORD_RE = re.compile(r"^([A-Za-z0-9_.*?\[\]-]+):([a-z_]+)\.([a-z_0-9]+)=(.*)$")
# What makes a cell that cell (or the matrix itself): matrix.settings may not set them.
MATRIX_OWN_KEYS = ("paths.build", "source.kind", "source.package", "source.version",
                   "kernel.variant", "patch.enabled", "test.repeat")
MATRIX_SPLIT_RE = re.compile(r",(?=[A-Za-z0-9_.*?\[\]-]+:[a-z_]+\.[a-z_0-9]+=)")
# Selftest globs too; names are the kselftest list's (basenames, no '/').
KSELFTESTS_RE = re.compile(r"^[A-Za-z0-9_*?\[\],-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _field_types(section: str) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(SECTIONS[section])}


def _check_value(section: str, key: str, value: Any, origin: str) -> Any:
    """Check one value against its field type; return it normalised."""
    name = f"{section}.{key}"
    ftype = _field_types(section)[key]
    if ftype == "bool":
        ok, want = isinstance(value, bool), "true or false"
    elif ftype == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        want = "a whole number >= 0"
    elif ftype.startswith("tuple"):
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        want = "a list of strings"
        value = tuple(value) if ok else value
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise SettingsError(f"{name} in {origin} is {value!r}: it must be {want}")
    minimum = MINIMUM.get((section, key), 0)
    if ftype == "int" and value < minimum:
        raise SettingsError(f"{name} in {origin} is {value}: it must be at least {minimum}")
    allowed = ALLOWED.get((section, key))
    if allowed and value not in allowed:
        raise SettingsError(
            f"{name} in {origin} is {value!r}: allowed values are {', '.join(allowed)}"
        )
    return value


def _merge(merged: dict, origins: dict, data: dict, origin: str) -> None:
    for section, table in data.items():
        if section not in SECTIONS:
            raise SettingsError(
                f"unknown section [{section}] in {origin}: known sections are "
                f"{', '.join(SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise SettingsError(f"{section} in {origin} must be a table ([{section}])")
        for key, value in table.items():
            if key not in _field_types(section):
                raise SettingsError(
                    f"unknown key {section}.{key} in {origin}: [{section}] knows "
                    f"{', '.join(_field_types(section))}"
                )
            merged[section][key] = _check_value(section, key, value, origin)
            origins[(section, key)] = origin


def _parse_override(section: str, key: str, text: str, origin: str) -> Any:
    """Turn a command-line string into the field's type."""
    ftype = _field_types(section)[key]
    if ftype == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{section}.{key}={text} in {origin}: it must be true or false")
    if ftype == "int":
        try:
            return int(text)
        except ValueError:
            raise SettingsError(
                f"{section}.{key}={text} in {origin}: it must be a whole number"
            ) from None
    if (section, key) == ("matrix", "settings"):
        # A value may hold commas itself ("6.1-*:test.cases=smoke,kvm"): an entry
        # starts only where the next GLOB:section.key= does.
        return [part for part in MATRIX_SPLIT_RE.split(text) if part]
    if ftype.startswith("tuple"):
        return [part for part in text.split(",") if part]
    return text


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None


def load(root: Path, overrides: dict[str, str] | None = None) -> Settings:
    """Build the settings for the project at `root`.

    `overrides` are `section.key -> text` pairs (doit's command-line
    variables); the special key `settings` names the user file to read.
    """
    overrides = dict(overrides or {})
    default_text = resources.files("pipeline").joinpath("default.toml").read_text()
    merged: dict[str, dict] = {name: {} for name in SECTIONS}
    origins: dict[tuple[str, str], str] = {}
    _merge(merged, origins, tomllib.loads(default_text), "the embedded default")

    user_file = overrides.pop("settings", None)
    if user_file is not None:
        user_path = root / user_file
        _merge(merged, origins, _read_toml(user_path), str(user_path))
    elif (root / USER_FILE).exists():
        _merge(merged, origins, _read_toml(root / USER_FILE), str(root / USER_FILE))

    _apply_words(merged, origins, overrides, "the command line")
    return _finish(root, merged, origins)


def apply(base: Settings, words: dict[str, str], origin: str) -> Settings:
    """`base` with `section.key -> text` words applied as the command line's are,
    every check of load() made again (a matrix cell's settings)."""
    merged = {name: dataclasses.asdict(getattr(base, name)) for name in SECTIONS}
    origins = _Origins(f"the settings {origin} started from")
    _apply_words(merged, origins, words, origin)
    return _finish(base.root, merged, origins)


class _Origins(dict):
    """Where each value came from; values not set here came from `fallback`."""

    def __init__(self, fallback: str):
        super().__init__()
        self.fallback = fallback

    def __missing__(self, key: tuple[str, str]) -> str:
        return self.fallback


def _apply_words(merged: dict, origins: dict, words: dict[str, str], origin: str) -> None:
    for name, text in words.items():
        section, _, key = name.partition(".")
        if section not in SECTIONS or key not in _field_types(section):
            known = ", ".join(f"{s}.{k}" for s in SECTIONS for k in _field_types(s))
            raise SettingsError(f"unknown setting {name}={text} on {origin}; known: {known}")
        value = _parse_override(section, key, text, origin)
        merged[section][key] = _check_value(section, key, value, origin)
        origins[(section, key)] = origin


def _finish(root: Path, merged: dict, origins: dict) -> Settings:
    """Check what only the merged layers can tell, and make the Settings."""
    source = merged["source"]
    for key in REQUIRED_BY_KIND[source["kind"]]:
        if not source[key]:
            raise SettingsError(
                f"source.kind = {source['kind']!r} needs source.{key} "
                f"(set it in {USER_FILE} or as source.{key}=... on the command line)"
            )
    if source["kind"] in ("tarball", "local"):
        source["sha256"] = source["sha256"].lower()
        if not SHA256_RE.match(source["sha256"]):
            raise SettingsError(
                f"source.sha256 in {origins[('source', 'sha256')]} is {source['sha256']!r}: "
                "it must be 64 hex digits (sha256sum prints it)"
            )
    _check_package_sets(merged["image"], origins)
    if not UUID_RE.match(merged["image"]["uuid"]):
        raise SettingsError(
            f"image.uuid in {origins[('image', 'uuid')]} is {merged['image']['uuid']!r}: "
            "it must be a lower-case UUID such as uuidgen prints"
        )
    if not CASES_RE.match(merged["test"]["cases"]):
        raise SettingsError(
            f"test.cases in {origins[('test', 'cases')]} is {merged['test']['cases']!r}: it must "
            "be comma-separated globs over SUITE or SUITE.CASE names, e.g. "
            "'smoke,kvm.kvm_patch_effect' (no spaces, quotes or '=')"
        )
    if merged["test"]["min_exercised_percent"] > 100:
        raise SettingsError(
            f"test.min_exercised_percent in {origins[('test', 'min_exercised_percent')]} is "
            f"{merged['test']['min_exercised_percent']}: it is a share of the selftests run, "
            "0 to 100"
        )
    if not KSELFTESTS_RE.match(merged["kselftest"]["tests"]):
        raise SettingsError(
            f"kselftest.tests in {origins[('kselftest', 'tests')]} is "
            f"{merged['kselftest']['tests']!r}: it must be comma-separated globs over the KVM "
            "selftests' names, e.g. 'state_test,svm_*' (no spaces, quotes, '/' or '=')"
        )
    for name in merged["kernel"]["fragments"]:
        if not (root / Path(name).expanduser()).is_file():
            raise SettingsError(
                f"kernel.fragments in {origins[('kernel', 'fragments')]} names {name!r}, which "
                f"is not a file (paths are relative to {root}); fix the name or drop it"
            )
    _check_ccache_remote(merged["kernel"], origins)
    _check_matrix(merged["matrix"], origins)
    if bool(source["signature_url"]) != bool(source["keyring"]):
        raise SettingsError(
            "source.signature_url and source.keyring go together: the signature is "
            "checked against the keys in the keyring file"
        )

    return Settings(
        root=root,
        **{name: cls(**merged[name]) for name, cls in SECTIONS.items()},
    )


def _check_matrix(matrix: dict, origins: dict) -> None:
    def where(key: str) -> str:
        return f"matrix.{key} in {origins[('matrix', key)]}"

    for key in ("lines", "variants", "patch"):
        twice = sorted({value for value in matrix[key] if list(matrix[key]).count(value) > 1})
        if twice:
            raise SettingsError(f"{where(key)} names {', '.join(twice)} twice: each cell once")
    for key, allowed in (("variants", VARIANTS), ("patch", MATRIX_PATCH)):
        wrong = [value for value in matrix[key] if value not in allowed]
        if wrong or not matrix[key]:
            raise SettingsError(f"{where(key)} is {list(matrix[key])}: it must list one or "
                                f"more of {', '.join(allowed)}")
    wrong = [line for line in matrix["lines"] if not MATRIX_LINE_RE.match(line)]
    if wrong or not matrix["lines"]:
        raise SettingsError(f"{where('lines')} is {list(matrix['lines'])}: it must list one or "
                            "more Debian kernel source packages, e.g. linux-source-6.12 "
                            "(`apt-cache search ^linux-source-` lists them)")
    if not CASES_RE.match(matrix["cells"]):
        raise SettingsError(f"{where('cells')} is {matrix['cells']!r}: it must be "
                            "comma-separated globs over cell names, e.g. '6.12-*,6.1-default-*'")
    for word in matrix["settings"]:
        match = MATRIX_WORD_RE.match(word)
        if not match or match[2] not in SECTIONS or match[3] not in _field_types(match[2]):
            raise SettingsError(f"{where('settings')} holds {word!r}: each entry is "
                                "CELL-GLOB:section.key=value, e.g. "
                                "'*-debug-*:boot.boot_timeout=400', with a known key")
        key = f"{match[2]}.{match[3]}"
        if key in MATRIX_OWN_KEYS or match[2] in ("matrix", "lava"):
            raise SettingsError(f"{where('settings')} sets {key} in {word!r}: that is what makes "
                                "a cell (its line, variant, patch, build dir) or the matrix "
                                "itself; choose cells with matrix.lines, matrix.variants, "
                                "matrix.patch and matrix.cells")
        _check_value(match[2], match[3], _parse_override(match[2], match[3], match[4], where(
            "settings")), where("settings"))


def _check_ccache_remote(kernel: dict, origins: dict) -> None:
    url = kernel["ccache_remote"]
    if not url:
        return
    origin = origins[("kernel", "ccache_remote")]
    ccache.parse(url, origin)
    if kernel["ccache"] == "off":
        raise SettingsError(f"kernel.ccache_remote in {origin} needs ccache, but kernel.ccache "
                            "is \"off\": set kernel.ccache to \"auto\" or \"on\", or drop the "
                            "remote")
    if kernel["runtime"] == "docker" and url.startswith("redis+unix:"):
        raise SettingsError(f"kernel.ccache_remote in {origin} is a unix socket, which the "
                            "kernel.runtime=docker container cannot reach: use redis://HOST:PORT")


def _check_package_sets(image: dict, origins: dict) -> None:
    """image.base and image.toolchain: a pinned tarball needs its sha256."""
    for role in ("base", "toolchain"):
        value, key = image[role], f"{role}_sha256"
        image[key] = image[key].lower()
        if role == "toolchain" and value != "mmdebstrap" and not value.startswith("tarball:"):
            raise SettingsError(
                f"image.toolchain in {origins[('image', 'toolchain')]} is {value!r}: it must be "
                "\"mmdebstrap\" or \"tarball:PATH\" (a toolchain tarball a build published)")
        if value.startswith("tarball:") and not SHA256_RE.match(image[key]):
            raise SettingsError(
                f"image.{role} = {value!r} needs image.{key}: the tarball's sha256 as the "
                "manifest or sha256sum gives it (64 hex digits), so a different file is refused")


def documented_keys() -> list[tuple[str, str, str]]:
    """(section.key, default as TOML writes it, the comment above it) for every key.

    default.toml documents each key in the comment lines just above it; a
    comment shared by several keys is shown with the first of them.
    """
    text = resources.files("pipeline").joinpath("default.toml").read_text()
    keys, section, comment = [], "", []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section, comment = stripped[1:-1], []
        elif stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif "=" in stripped and section:
            key, _, value = stripped.partition("=")
            keys.append((f"{section}.{key.strip()}", value.strip(), " ".join(comment)))
            comment = []
        else:
            comment = []
    return keys
