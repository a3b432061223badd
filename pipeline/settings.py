"""Settings: one frozen, typed value, validated once by its schema.

The schema is the structs below (msgspec): each key's type, default, rule
and documentation sit beside it, so `python -m pipeline --help`, the
settings reference in docs/settings.md and the error messages come from the
same place.  msgspec because it validates typed, frozen structs that refuse
unknown keys, with constraints (ranges, patterns, choices) declared in the
annotations, and costs about 20 ms at start-up: every doit invocation loads
the settings, a no-op `doit build` too, and pydantic, tried first, added
about 100 ms to each.

Layers, later wins: the schema's defaults, an optional user file
(`pipeline.toml` in the project, or the file named by `settings=PATH`), then
`section.key=value` words from the command line.  A nested run (a matrix
cell, a bisection step, a repro rebuild) gets its settings from `derive`,
which validates again.  Every refusal names the key, where its value came
from, the value and what is allowed.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from . import ccache
from .errors import SettingsError
from .layout import Layout

USER_FILE = "pipeline.toml"
# The kernel variants and the fragment of kconfig/ each adds to the common ones.
VARIANTS = {"default": "production.config", "debug": "debug.config"}
RUNTIMES = ("host", "docker")
REMOTE_MODES = ccache.REMOTE_MODES  # (a key below is named ccache)
# What makes a matrix cell that cell (or the matrix itself): matrix.settings may not set them.
MATRIX_OWN_KEYS = ("paths.build", "source.kind", "source.package", "source.version",
                   "kernel.variant", "patch.enabled", "test.repeat")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Case and selftest globs travel on the kernel command line: no blanks, quotes or '='.
GLOBS = r"^[A-Za-z0-9_.*?\[\],-]*$"
DEFAULT_ORIGIN = "the embedded default"

# Where each value came from and the project root, while one validation runs.
_CONTEXT: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("settings")


def key(description: str, rule: str = "", **constraints: Any) -> Meta:
    """A key's documentation and constraints; `rule` says in words what a value must
    be when a constraint refuses it (the error message's end)."""
    return Meta(description=description, extra={"rule": rule} if rule else None,
                **constraints)


def _origin(name: str) -> str:
    return _CONTEXT.get({}).get("origins", {}).get(name, DEFAULT_ORIGIN)


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    def _set(self, name: str, value: object) -> None:
        """Normalise a value while validating (the struct is frozen for everyone else)."""
        msgspec.structs.force_setattr(self, name, value)


class SourceSettings(Section):
    kind: Annotated[Literal["debian", "tarball", "local", "git"], key(
        'Where the kernel tree comes from: "debian", "tarball", "local" or "git".')] = "debian"
    package: Annotated[str, key("debian: the package that ships the tree.")] = \
        "linux-source-6.12"
    version: Annotated[str, key("debian: a version pin (empty: the newest version in the apt "
                                "lists, recorded in the fetch record).")] = ""
    url: Annotated[str, key("tarball: an https:// (or http://) URL of a .tar.{xz,gz,bz2}; "
                            "needs sha256.")] = ""
    signature_url: Annotated[str, key("tarball: kernel.org's detached .tar.sign, checked with "
                                      "gpg against the keys in keyring.")] = ""
    keyring: Annotated[str, key("The keyring file signature_url is checked against.")] = ""
    path: Annotated[str, key("local: the path of a kernel tarball; needs sha256.")] = ""
    sha256: Annotated[str, key("tarball, local: the archive's sha256 (sha256sum prints "
                               "it).")] = ""
    repo: Annotated[str, key("git: a repository (local path or URL).")] = ""
    ref: Annotated[str, key("git: the ref to build (branch, tag or commit); the resolved "
                            "commit id is recorded.")] = "HEAD"
    tree_cache: Annotated[bool, key("Archive kinds: link the tree from the cache's extracted "
                                    "copy (false: extract the archive afresh into the build "
                                    "dir; `doit repro` does).")] = True

    def __post_init__(self) -> None:
        self._set("sha256", self.sha256.lower())
        needed = {"debian": ("package",), "tarball": ("url", "sha256"),
                  "local": ("path", "sha256"), "git": ("repo", "ref")}[self.kind]
        for name in needed:
            if not getattr(self, name):
                raise SettingsError(f"source.kind = {self.kind!r} needs source.{name} (set it "
                                    f"in {USER_FILE} or as source.{name}=... on the command "
                                    "line)")
        if self.kind in ("tarball", "local") and not SHA256_RE.match(self.sha256):
            raise SettingsError(f"source.sha256 in {_origin('source.sha256')} is "
                                f"{self.sha256!r}: it must be 64 hex digits (sha256sum prints "
                                "it)")
        if bool(self.signature_url) != bool(self.keyring):
            raise SettingsError("source.signature_url and source.keyring go together: the "
                                "signature is checked against the keys in the keyring file")


class PatchSettings(Section):
    enabled: Annotated[bool, key("Apply the KVM series from patches/kvm/<version>/ (false: "
                                 "build stock KVM, e.g. to measure what the patch "
                                 "buys).")] = True
    series: Annotated[str, key('Pin the series directory under patches/kvm/ (e.g. "6.12") '
                               "instead of the one named by the tree's "
                               "VERSION.PATCHLEVEL.")] = ""


class KernelSettings(Section):
    variant: Annotated[Literal[tuple(VARIANTS)], key(
        '"default": tinyconfig + kconfig/guest.config, kvm.config, selftests.config and '
        'production.config (PREEMPT_NONE, no CONFIG_PREEMPT_COUNT).  "debug" takes '
        "kconfig/debug.config instead of production.config (PREEMPT_COUNT, lockdep, KASAN, "
        "ORC, return thunks, IBT).")] = "default"
    fragments: Annotated[tuple[str, ...], key("Extra fragment files merged last (paths "
                                              "relative to the project).")] = ()
    jobs: Annotated[int, key("make -j; 0 means the number of CPUs.", ge=0)] = 0
    ccache: Annotated[Literal["auto", "on", "off", "recache"], key(
        'Compile through ccache: "auto" (when installed), "on", "off", or "recache" '
        "(compile everything afresh, use no hit, store the new objects: what `doit repro` "
        "does).")] = "auto"
    ccache_remote: Annotated[str, key(
        "A team's shared compiler cache behind the local one: "
        '"redis://[[USER:]PASSWORD@]HOST[:PORT][/DB]", "redis+unix:/PATH" or '
        '"http://HOST[:PORT]/PATH"; "" = the local cache only.  The credentials never reach '
        "a log or a record.")] = ""
    ccache_remote_mode: Annotated[Literal[REMOTE_MODES], key(
        '"read-write"; "read-only" (use it, never fill it: untrusted jobs such as a fork\'s '
        'CI); "reshare" (also upload what the local cache already had: seeds an empty server '
        "from a warm machine).")] = "read-write"
    runtime: Annotated[Literal[RUNTIMES], key(
        'Where config, kernel and kmod builds run: "host" (this machine\'s compiler) or '
        '"docker" (inside the toolchain image of image.toolchain, the build dir mounted at '
        "/build, no network).")] = "host"
    verbose: Annotated[bool, key(
        "Show make's output as it comes while the kernel and the selftests build (it is "
        "always in build/logs/); false: one progress line, objects done of those the last "
        "build compiled.")] = False

    def __post_init__(self) -> None:
        root = _CONTEXT.get({}).get("root")
        for name in self.fragments:
            if root is not None and not (root / Path(name).expanduser()).is_file():
                raise SettingsError(f"kernel.fragments in {_origin('kernel.fragments')} names "
                                    f"{name!r}, which is not a file (paths are relative to "
                                    f"{root}); fix the name or drop it")
        url = self.ccache_remote
        if not url:
            return
        origin = _origin("kernel.ccache_remote")
        ccache.parse(url, origin)
        if self.ccache == "off":
            raise SettingsError(f"kernel.ccache_remote in {origin} needs ccache, but "
                                'kernel.ccache is "off": set kernel.ccache to "auto" or "on", '
                                "or drop the remote")
        if self.runtime == "docker" and url.startswith("redis+unix:"):
            raise SettingsError(f"kernel.ccache_remote in {origin} is a unix socket, which "
                                "the kernel.runtime=docker container cannot reach: use "
                                "redis://HOST:PORT")


class ImageSettings(Section):
    base: Annotated[str, key(
        'The base of the guest image: "mmdebstrap" makes Debian minbase plus kmod locally (a '
        'tarball in the cache, recorded by sha256 and package versions); "tarball:PATH" pins '
        "one a build published (build/artifacts/base.tar) and needs base_sha256; any other "
        "value is an image pulled from a registry.")] = "mmdebstrap"
    base_sha256: Annotated[str, key("The sha256 of a tarball:PATH base.")] = ""
    toolchain: Annotated[str, key(
        "The toolchain package set (the image's builder stage; the kernel build with "
        'kernel.runtime = "docker"): "mmdebstrap" or "tarball:PATH" with its '
        "sha256.")] = "mmdebstrap"
    toolchain_sha256: Annotated[str, key("The sha256 of a tarball:PATH toolchain.")] = ""
    docker_cache: Annotated[bool, key("false: docker build --no-cache and the tarballs "
                                      "imported afresh (`doit repro` does, so no cached layer "
                                      "hides a difference).")] = True
    suite: Annotated[str, key("mmdebstrap: the Debian suite.")] = "bookworm"
    mirror: Annotated[str, key("mmdebstrap: the mirror.")] = "http://deb.debian.org/debian"
    source_date_epoch: Annotated[int, key("Every timestamp in the base tarball and the ext4 "
                                          "image (reproducibility).", ge=0)] = 1700000000
    size_mb: Annotated[int, key("Size of build/artifacts/rootfs.ext4 (sparse).",
                                ge=256)] = 1024
    uuid: Annotated[str, key("The image's fixed UUID.",
                             "it must be a lower-case UUID such as uuidgen prints",
                             pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                     r"[0-9a-f]{12}$")] = "6b766d2d-7069-7065-6c69-6e652d726f6f"

    def __post_init__(self) -> None:
        for role in ("base", "toolchain"):
            value, name = getattr(self, role), f"{role}_sha256"
            self._set(name, getattr(self, name).lower())
            if role == "toolchain" and value != "mmdebstrap" \
                    and not value.startswith("tarball:"):
                raise SettingsError(f"image.toolchain in {_origin('image.toolchain')} is "
                                    f'{value!r}: it must be "mmdebstrap" or "tarball:PATH" (a '
                                    "toolchain tarball a build published)")
            if value.startswith("tarball:") and not SHA256_RE.match(getattr(self, name)):
                raise SettingsError(f"image.{role} = {value!r} needs image.{name}: the "
                                    "tarball's sha256 as the manifest or sha256sum gives it "
                                    "(64 hex digits), so a different file is refused")


class BootSettings(Section):
    accel: Annotated[Literal["auto", "kvm", "tcg"], key(
        '"auto" probes KVM (a bounded boot to the first console line) and uses it only if '
        'that works, else TCG with -cpu max; "kvm" or "tcg" force one.')] = "auto"
    memory_mb: Annotated[int, key("The guest's memory.", ge=128)] = 1024
    smp: Annotated[int, key("The guest's CPUs.", ge=1)] = 2
    boot_timeout: Annotated[int, key("Seconds from starting QEMU until the guest's init "
                                     "runs.", ge=1)] = 120
    test_timeout: Annotated[int, key("Seconds for the whole run.", ge=1)] = 1800
    cmdline: Annotated[str, key("Extra kernel command-line arguments.")] = ""
    suite: Annotated[str, key(
        "The suites `doit test` runs in the guest, comma-separated (scripts in "
        'images/suites/); `doit boot` always runs "boot".  test.cases narrows them '
        "down.")] = "smoke,lifecycle,sections,kvm,kselftest"
    dry_run: Annotated[bool, key("true: print the QEMU command line instead of "
                                 "booting.")] = False
    cpu: Annotated[str, key(
        'QEMU\'s -cpu; empty: the accelerator\'s ("host" under KVM, "max" under TCG).  '
        '"max,-svm,-vmx" shows what a KVM host without nested virtualisation gives.')] = ""
    disks: Annotated[str, key(
        "More disks for the guest, read-only, comma-separated files: /dev/vdb, /dev/vdc... "
        "after the root disk (the `faults` suite reads its faulty modules from the "
        "first).")] = ""


class TestSettings(Section):
    cases: Annotated[str, key(
        'Which cases `doit test` runs: comma-separated globs over SUITE.CASE names ("kvm.*", '
        '"smoke.register_integrity"); a glob without a dot names whole suites of boot.suite.  '
        "Empty: every case.",
        "it must be comma-separated globs over SUITE or SUITE.CASE names, e.g. "
        "'smoke,kvm.kvm_patch_effect' (no spaces, quotes or '=')", pattern=GLOBS)] = ""
    repeat: Annotated[int, key("Boot and run the selection this many times (flaky hunting); "
                               "run N's results go to build/results/run-N/.", ge=1)] = 1
    injection_seconds: Annotated[int, key("smoke's injection-rate case, seconds.", ge=1)] = 10
    section_seconds: Annotated[int, key("Each section case, seconds.", ge=1)] = 10
    kvm_seconds: Annotated[int, key("The injected KVM run, seconds (the count-only patch "
                                    "comparison runs half as long).", ge=2)] = 20
    lifecycle_cycles: Annotated[int, key("lifecycle's load/unload cycles.", ge=1)] = 50
    allow_skips: Annotated[str, key(
        "A case that skips fails the run, unless a glob here matches its SUITE.CASE name (on "
        'a KVM host without nested virtualisation: "kvm.*,kselftest.*").')] = ""
    min_exercised_percent: Annotated[int, key(
        "Below this share (in percent) of the KVM selftests run exercised (passed under "
        "injection with at least kselftest.exercised_at injections into their threads), the "
        "run fails.", "it is a share of the selftests run, 0 to 100", ge=0, le=100)] = 90

    def guest_parameters(self) -> list[str]:
        """The kernel command-line words the suites read (as PIPELINE_NAME)."""
        words = [f"pipeline.{name}={getattr(self, name)}" for name in
                 ("injection_seconds", "section_seconds", "kvm_seconds", "lifecycle_cycles")]
        if self.cases:
            words.append(f"pipeline.cases={self.cases}")
        return words


class KselftestSettings(Section):
    build: Annotated[bool, key(
        "Build the kernel's KVM selftests from the same tree into the image; the `kselftest` "
        "suite runs them alone and under injection (false: no selftests, the suite is left "
        "out of runs).")] = True
    tests: Annotated[str, key(
        'Which selftests the suite runs: comma-separated globs ("state_test,svm_*").  Empty: '
        "every one the kernel lists except those images/kselftest-known says cannot pass "
        "here.", "it must be comma-separated globs over the KVM selftests' names, e.g. "
        "'state_test,svm_*' (no spaces, quotes, '/' or '=')",
        pattern=r"^[A-Za-z0-9_*?\[\],-]*$")] = ""
    timeout: Annotated[int, key("Seconds each selftest may run; 0: the kvm directory's own "
                                "setting (120 s).", ge=0)] = 0
    inject: Annotated[Literal["timer", "targeted", "both"], key(
        'How the injected pass injects into each selftest\'s threads: "timer" (the per-CPU '
        'timer, in the kvm suite\'s ranges), "targeted" (a forced sleep at the KVM functions '
        'of images/kvm-points) or "both".')] = "both"
    exercised_at: Annotated[int, key("A selftest is exercised when at least this many "
                                     "injections reached its threads.", ge=1)] = 10

    def guest_parameters(self) -> list[str]:
        """The kernel command-line words the kselftest suite reads."""
        return [f"pipeline.kselftest_timeout={self.timeout}",
                f"pipeline.kselftest_inject={self.inject}",
                *([f"pipeline.kselftests={self.tests}"] if self.tests else [])]


class BisectSettings(Section):
    good: Annotated[str, key('The ref where the selected cases pass (source.kind = "git"; the '
                             "bisection works in a clone under <paths.build>/bisect/).")] = ""
    bad: Annotated[str, key("The ref where they fail.")] = ""
    runs: Annotated[int, key("Runs per commit: bad as soon as one run shows the symptom, good "
                             "only after this many clean runs.", ge=1)] = 1
    series: Annotated[str, key('Pin one patch series (e.g. "6.12") for every commit, e.g. when '
                               "the range crosses a version bump.")] = ""
    find: Annotated[Literal["regression", "fix"], key(
        '"regression": the first commit where the symptom shows (good is the older ref); '
        '"fix": the first where it no longer shows.')] = "regression"
    paths: Annotated[tuple[str, ...], key("Only commits that touch these paths are "
                                          "tested.")] = ()
    symptom: Annotated[str, key(
        "`python -m pipeline step`: the symptom file to look for (empty: "
        "<paths.build>/bisect/symptom.json if it exists, else any failure of the selected "
        "cases).")] = ""


class ReproSettings(Section):
    against: Annotated[str, key("`doit repro` compares its rebuild with this manifest (empty: "
                                "the build's own build/artifacts/manifest.json).")] = ""
    rebuild: Annotated[bool, key("false: compare the last rebuild again instead of "
                                 "rebuilding.")] = True


# Per-cell settings: a cell glob -> section -> key -> value (TOML tables).
CellSettings = dict[str, dict[str, dict[str, Any]]]
DEFAULT_CELL_SETTINGS: CellSettings = {
    "*-debug-*": {"boot": {"boot_timeout": 400, "test_timeout": 3600},
                  "kselftest": {"tests": "xapic_state_test"}},
    "6.1-*": {"kselftest": {"build": False}},
}


class MatrixSettings(Section):
    lines: Annotated[tuple[Annotated[str, Meta(pattern=r"^linux-source-[0-9][0-9.]*$")], ...],
                     key("`doit matrix` builds and tests every cell: each kernel line (a "
                         "Debian linux-source package) x variant x the KVM series \"patched\" "
                         'or "stock", in <paths.build>/matrix/CELL.',
                         "it must list one or more Debian kernel source packages, e.g. "
                         "linux-source-6.12 (`apt-cache search ^linux-source-` lists them)",
                         min_length=1)] = ("linux-source-6.12", "linux-source-6.1")
    variants: Annotated[tuple[Literal[tuple(VARIANTS)], ...], key(
        "The variants of the matrix.", f"it must list one or more of {', '.join(VARIANTS)}",
        min_length=1)] = ("default", "debug")
    patch: Annotated[tuple[Literal["patched", "stock"], ...], key(
        "The KVM series applied, not, or both.", "it must list one or more of patched, stock",
        min_length=1)] = ("patched", "stock")
    cells: Annotated[str, key("Which cells run: comma-separated globs over cell names; empty: "
                              "all.", "it must be comma-separated globs over cell names, e.g. "
                              "'6.12-*,6.1-default-*'", pattern=GLOBS)] = ""
    settings: Annotated[CellSettings, key(
        "Settings for some cells, applied in order after everything else: a TOML table of "
        'cell globs, e.g. [matrix.settings."*-debug-*"] boot.boot_timeout = 400; on the '
        "command line a TOML inline table: matrix.settings='{\"*-debug-*\" = "
        "{boot.boot_timeout = 400}}'.  The default: the debug kernel (KASAN, lockdep) runs "
        "several times slower under TCG, so longer timeouts and one KVM selftest; Debian's "
        "linux-source-6.1 carries a dirty_log_test.c its selftest library cannot build.",
        "it must be a table of cell globs, each a table of section tables, e.g. "
        '[matrix.settings."*-debug-*"] boot.boot_timeout = 400')] = msgspec.field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_CELL_SETTINGS)))

    def __post_init__(self) -> None:
        for name in ("lines", "variants", "patch"):
            values = getattr(self, name)
            twice = sorted({value for value in values if values.count(value) > 1})
            if twice:
                raise SettingsError(f"matrix.{name} in {_origin(f'matrix.{name}')} names "
                                    f"{', '.join(twice)} twice: each cell once")
        where = f"matrix.settings in {_origin('matrix.settings')}"
        for glob, sections in self.settings.items():
            for section, keys in sections.items():
                for name in keys:
                    full = f"{section}.{name}"
                    if section not in SECTIONS or name not in keys_of(section):
                        raise SettingsError(f"{where} sets {full} for {glob!r}: there is no "
                                            "such setting (`python -m pipeline --help` lists "
                                            "them)")
                    if full in MATRIX_OWN_KEYS or section in ("matrix", "lava"):
                        raise SettingsError(f"{where} sets {full} for {glob!r}: that is what "
                                            "makes a cell (its line, variant, patch, build dir) "
                                            "or the matrix itself; choose cells with "
                                            "matrix.lines, matrix.variants, matrix.patch and "
                                            "matrix.cells")


class LavaSettings(Section):
    artifacts_url: Annotated[str, key("`doit lava` writes build/lava/job.yaml: the URL where "
                                      "build/artifacts/ is published for the lab; with matrix "
                                      "= true it holds {cell}.")] = ""
    device_type: Annotated[str, key("The lab's device type.")] = "qemu"
    kvm: Annotated[bool, key("true: the workers have KVM (-enable-kvm -cpu host); false: TCG "
                             "with -cpu max, which offers SVM for the KVM cases.")] = False
    matrix: Annotated[bool, key("true: build every picked matrix cell and write one job per "
                                "cell (build/lava/CELL.yaml).")] = False


class PathSettings(Section):
    build: Annotated[str, key("Everything the tasks make, and doit's dependency database, "
                              "lives here.")] = "build"
    cache: Annotated[str, key("Downloads, extracted trees, the compiler cache: kept by `doit "
                              "clean`.  Empty: $XDG_CACHE_HOME/kvm-pipeline "
                              "(~/.cache/kvm-pipeline).")] = ""
    wait_lock: Annotated[bool, key("A task holds the build dir's lock while it writes there.  "
                                   "true: a second run on the same build dir waits for it; "
                                   "false: it fails at once.")] = True


SECTIONS: dict[str, type[Section]] = {
    "source": SourceSettings, "patch": PatchSettings, "kernel": KernelSettings,
    "image": ImageSettings, "boot": BootSettings, "test": TestSettings,
    "kselftest": KselftestSettings, "bisect": BisectSettings, "repro": ReproSettings,
    "matrix": MatrixSettings, "lava": LavaSettings, "paths": PathSettings,
}


class Settings(msgspec.Struct, frozen=True, kw_only=True):
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
        data = {name: msgspec.structs.asdict(getattr(self, name)) for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@functools.cache
def _annotations(section: str) -> dict[str, Any]:
    """The section's keys and their annotations, constraints included."""
    return typing.get_type_hints(SECTIONS[section], include_extras=True)


def keys_of(section: str) -> list[str]:
    """The keys of a section, in the schema's order."""
    return list(SECTIONS[section].__struct_fields__)


def _meta(section: str, name: str) -> tuple[Any, Meta | None]:
    """A key's type (its constraints stripped) and the Meta that documents it."""
    annotation = _annotations(section)[name]
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None
    metas = [item for item in annotation.__metadata__ if isinstance(item, Meta)]
    return typing.get_args(annotation)[0], metas[-1] if metas else None


# ---------------------------------------------------------------- loading


def load(root: Path, overrides: dict[str, str] | None = None) -> Settings:
    """The settings of the project at `root`: the defaults, the user file, then
    `overrides` (`section.key -> text`, the command line's words; the special
    key `settings` names the user file to read)."""
    overrides = dict(overrides or {})
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    origins: dict[str, str] = {}
    user_file = overrides.pop("settings", None)
    user_path = root / (user_file if user_file is not None else USER_FILE)
    if user_file is not None or user_path.exists():
        _merge_file(merged, origins, _read_toml(user_path), str(user_path))
    _merge_words(merged, origins, overrides, "the command line")
    settings = _validate(root, merged, origins)
    # A cell's values are checked where they are set, each by its key's type and
    # constraints; rules between keys hold for a cell's combination (`derive`).
    where = origins.get("matrix.settings", DEFAULT_ORIGIN)
    for glob, sections in settings.matrix.settings.items():
        for section, keys in sections.items():
            for name, value in keys.items():
                _check_value(section, name, _file_value(value),
                             f"matrix.settings[{glob!r}] in {where}")
    return settings


def _check_value(section: str, name: str, value: Any, origin: str) -> None:
    """One value against its key's type and constraints (not the rules between keys)."""
    try:
        msgspec.convert(value, _annotations(section)[name], strict=True)
    except msgspec.ValidationError as exc:
        raise SettingsError(_message(section, name, str(exc), value, origin)) from None


def derive(base: Settings, changes: dict[str, dict[str, Any]], origin: str) -> Settings:
    """`base` with `changes` (section -> key -> value) applied and every rule checked
    again: the settings of a nested run (a matrix cell, a bisection step, a rebuild).
    A refused value names `origin`."""
    merged = {name: msgspec.structs.asdict(getattr(base, name)) for name in SECTIONS}
    origins = {f"{section}.{name}": f"the settings {origin} started from"
               for section in SECTIONS for name in merged[section]}
    for section, keys in changes.items():
        for name, value in keys.items():
            _check_known(section, name, origin, f"{section}.{name}")
            merged[section][name] = _file_value(value)
            origins[f"{section}.{name}"] = origin
    return _validate(base.root, merged, origins)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None


def _file_value(value: Any) -> Any:
    """TOML's arrays are the schema's tuples."""
    return tuple(value) if isinstance(value, list) else value


def _merge_file(merged: dict, origins: dict, data: dict, origin: str) -> None:
    for section, table in data.items():
        if section not in SECTIONS:
            raise SettingsError(f"unknown section [{section}] in {origin}: known sections are "
                                f"{', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise SettingsError(f"{section} in {origin} must be a table ([{section}])")
        for name, value in table.items():
            if name not in keys_of(section):
                raise SettingsError(f"unknown key {section}.{name} in {origin}: [{section}] "
                                    f"knows {', '.join(keys_of(section))}")
            if (section, name) == ("matrix", "settings") and _old_cell_settings(value):
                raise SettingsError(f"matrix.settings in {origin} is a list"
                                    f"{_old_cell_settings(value)}")
            merged[section][name] = _file_value(value)
            origins[f"{section}.{name}"] = origin


def _check_known(section: str, name: str, origin: str, shown: str) -> None:
    if section not in SECTIONS or name not in keys_of(section):
        known = ", ".join(f"{s}.{k}" for s in SECTIONS for k in keys_of(s))
        raise SettingsError(f"unknown setting {shown} on {origin}; known: {known}")


def _merge_words(merged: dict, origins: dict, words: dict[str, str], origin: str) -> None:
    for name, text in words.items():
        section, _, key_name = name.partition(".")
        _check_known(section, key_name, origin, f"{name}={text}")
        merged[section][key_name] = _from_text(section, key_name, text, origin)
        origins[name] = origin


def _from_text(section: str, name: str, text: str, origin: str) -> Any:
    """A command-line word's text as the key's type: true/false, a whole number, a
    comma-separated list, a TOML inline table; the schema then checks the value."""
    kind, _ = _meta(section, name)
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{section}.{name}={text} in {origin}: it must be true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{section}.{name}={text} in {origin}: it must be a whole "
                                "number") from None
    if typing.get_origin(kind) is tuple:
        return tuple(part for part in text.split(",") if part)
    if typing.get_origin(kind) is dict:
        if not text:
            return {}
        try:
            return tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{section}.{name} in {origin} is {text!r}: it must be a TOML "
                                f"inline table ({exc}){_old_cell_settings(text.split(','))}"
                                ) from None
    return text


# The form matrix.settings had before it was a table: "GLOB:section.key=value".
_OLD_CELL_WORD = re.compile(r"^([^:=\s]+):([a-z_]+\.[a-z_0-9]+)=(.*)$")


def _old_cell_settings(words: Any) -> str:
    """For matrix.settings in the old "GLOB:section.key=value" form: the same as the
    table it is now (an empty string for anything else)."""
    if not isinstance(words, list | tuple) or not words or not all(
            isinstance(word, str) and _OLD_CELL_WORD.match(word) for word in words):
        return ""
    lines = []
    for word in words:
        glob, name, value = _OLD_CELL_WORD.match(word).groups()
        header = f'[matrix.settings."{glob}"]'
        if header not in lines:
            lines.append(header)
        bare = re.fullmatch(r"-?[0-9]+|true|false", value)
        lines.append(f"{name} = {value if bare else json.dumps(value)}")
    return ("; that is the old form of matrix.settings, now a table (in pipeline.toml):\n"
            + "\n".join(lines))


def _validate(root: Path, merged: dict, origins: dict) -> Settings:
    token = _CONTEXT.set({"origins": origins, "root": root})
    try:
        sections = {}
        for section, values in merged.items():
            try:
                sections[section] = msgspec.convert(values, SECTIONS[section], strict=True)
            except msgspec.ValidationError as exc:
                at = _AT.search(str(exc))
                if at is None:
                    raise SettingsError(f"[{section}]: {exc}") from None
                name = at[1]
                value = values.get(name, msgspec.structs.asdict(SECTIONS[section]())[name])
                origin = origins.get(f"{section}.{name}", DEFAULT_ORIGIN)
                raise SettingsError(_message(section, name, str(exc), value, origin)) from None
    finally:
        _CONTEXT.reset(token)
    return Settings(root=root, **sections)


# msgspec's refusal ends with the value's place: " - at `$.key`" or "`$.key[2]`".
_AT = re.compile(r" - at `\$\.([a-z_0-9]+)")


def _message(section: str, name: str, text: str, value: Any, origin: str) -> str:
    """msgspec's refusal (`text`) of `value` for section.name in words: the key, where
    its value came from, the value, and what is allowed."""
    full = f"{section}.{name}"
    kind, meta = _meta(section, name)
    shown = list(value) if isinstance(value, tuple) else value
    start = f"{full} in {origin} is {shown!r}"
    base = typing.get_origin(kind) or kind
    if base is not Literal and not (isinstance(value, base) and
                                    not (base is int and isinstance(value, bool))):
        wanted = {bool: "true or false", int: "a whole number >= 0", str: "a string",
                  tuple: "a list of strings", dict: "a table of cell globs"}
        return f"{start}: it must be {wanted.get(base, base.__name__)}"
    if meta is not None and meta.extra and "rule" in meta.extra:
        return f"{start}: {meta.extra['rule']}"
    if meta is not None and meta.ge is not None and value < meta.ge:
        return f"{full} in {origin} is {value}: it must be at least {meta.ge}"
    if base is Literal:
        return f"{start}: allowed values are {', '.join(typing.get_args(kind))}"
    return f"{start}: {text}"


# ---------------------------------------------------------------- the reference


def documented_keys() -> list[tuple[str, str, str]]:
    """(section.key, default as TOML writes it, what it does) for every key, from the schema."""
    keys = []
    for section, struct in SECTIONS.items():
        defaults = msgspec.structs.asdict(struct())
        for name in keys_of(section):
            _, meta = _meta(section, name)
            keys.append((f"{section}.{name}", _toml(defaults[name]),
                         meta.description if meta is not None else ""))
    return keys


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


REFERENCE_MARKER = ("<!-- every key: generated from pipeline/settings.py's schema, checked by "
                    "tests/test_settings.py -->\n")


def reference_table() -> str:
    """Every key as docs/settings.md's markdown table, from the schema."""
    lines = ["| key | default | what it does |", "|---|---|---|"]
    for name, default, doc in documented_keys():
        cell = default.replace("|", "\\|")
        lines.append(f"| `{name}` | `{cell}` | {doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"
