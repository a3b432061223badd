"""build/artifacts/reproducer.sh: the whole build as a shell script, from its records.

`doit build` writes it last, from the records of every stage, so it holds the
build as it stands (never a journal of an earlier run).  It takes its output
directory as an argument, recreates the build dir's layout there, and checks
each artifact against the record: `reproducer.sh OUT` ends by listing what
came out identical and what did not.

The make, tar, git apply, mmdebstrap and mkfs command lines are the ones the
stages run, rendered for a Layout rooted at placeholders that become "$OUT",
"$PROJECT" and "$CACHE" in the script; only the glue in between (copying,
Docker's CLI instead of its API) is written here.  With kernel.runtime =
"docker" every make line is the `docker run` of the toolchain image that
the kernel step ran, the commands as run inside.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import msgspec

from . import kconfig, patch, records, selftests, tarballs
from .image import DOCKER_INJECTED, GUEST_HOSTNAME, GUEST_REPOSITORY, mkfs_argv
from .kbuild import HOST_LINKS, kmod_argv
from .kmake import Make
from .layout import Layout
from .records import (
    ConfigRecord,
    ImageRecord,
    KernelRecord,
    KmodRecord,
    SelftestsRecord,
    SeriesRecord,
    SourceRecord,
)
from .settings import Settings
from .sources import debian, gpg
from .sources.treecache import extract_argv
from .util import write_if_changed

RECORDS = (SourceRecord, SeriesRecord, ConfigRecord, KernelRecord, KmodRecord, ImageRecord)

# Placeholder roots, rendered as shell variables.
OUT, PROJECT, CACHE = Path("/@OUT@"), Path("/@PROJECT@"), Path("/@CACHE@")
# The package tarballs, by role, and the user the toolchain container runs as.
TARBALL = {"base": Path("/@BASE@"), "toolchain": Path("/@TOOLCHAIN@")}
TARBALL_VARIABLE = {"base": "BASE_TARBALL", "toolchain": "TOOLCHAIN_TARBALL"}
USER = "/@USER@"
_VARIABLES = {str(OUT): '"$OUT"', str(PROJECT): '"$PROJECT"', str(CACHE): '"$CACHE"',
              **{str(path): f'"${TARBALL_VARIABLE[role]}"' for role, path in TARBALL.items()},
              USER: '"$(id -u):$(id -g)"'}
_PLACEHOLDER = re.compile("(" + "|".join(re.escape(p) for p in _VARIABLES) + ")")


def word(arg: object) -> str:
    """One shell word: placeholders become variables, everything else is quoted."""
    pieces = [_VARIABLES.get(piece) or shlex.quote(piece)
              for piece in _PLACEHOLDER.split(str(arg)) if piece]
    return "".join(pieces) or "''"


def line(argv: list, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    text = " ".join(word(a) for a in argv)
    if env:
        text = " ".join(f"{k}={word(v)}" for k, v in env.items()) + " " + text
    if cwd is not None:
        text = f"(cd {word(cwd)} && {text})"
    return text


def make_line(make: Make, argv: list, cwd: Path | None = None) -> str:
    """A make-step command as the kernel step ran it: here, or in the toolchain container."""
    if make.container:
        workdir = make.inside(cwd) if cwd else None
        return line([*make.container_argv(workdir, user=USER), *argv])
    return line(argv, cwd=cwd)


def _header(settings: Settings) -> list[str]:
    layout = settings.layout
    return [
        "#!/bin/sh",
        "# Rebuilds this build's artifacts by hand: fetch, patch, config, kernel, kmod, the",
        "# KVM selftests and the guest image.  Written by `doit build` from the records of",
        "# every stage.",
        "#",
        "# Usage: reproducer.sh OUT   OUT: a new or empty directory; the build dir's layout",
        "#                            (src/linux, kbuild, kmod, artifacts) is made there.",
        "# Environment: PROJECT  the checkout holding patches/, kconfig/, kmod/, images/",
        "#              CACHE    where ccache's directory is (ccache/ under it)",
        "#              BASE_TARBALL, TOOLCHAIN_TARBALL  the package tarballs (their sha256 is",
        "#                       checked); by default base.tar and toolchain.tar beside this",
        "#                       script, else mmdebstrap makes them in OUT.",
        "# Needs what scripts/setup installs and a running dockerd.  Each artifact is",
        "# compared with the record; the script ends non-zero if one differs.",
        "set -eu",
        'if [ $# -ne 1 ]; then echo "usage: $0 OUT" >&2; exit 2; fi',
        'HERE=$(cd "$(dirname "$0")" && pwd)',
        'mkdir -p "$1"',
        'OUT=$(cd "$1" && pwd)',
        'if [ -n "$(ls -A "$OUT")" ]; then echo "$0: $OUT is not empty" >&2; exit 2; fi',
        f"PROJECT=${{PROJECT:-{shlex.quote(str(layout.project))}}}",
        f"CACHE=${{CACHE:-{shlex.quote(str(layout.cache))}}}",
        "differ=0",
        "step() { printf '\\n==> %s\\n' \"$*\"; }",
        "# check SHA256 FILE: the input must be the one recorded",
        'check() { echo "$1  $2" | sha256sum -c --quiet - || {',
        '\techo "$2 is not the file this build used" >&2; exit 1; }; }',
        "# compare SHA256 FILE: an artifact, identical or not",
        'compare() { if echo "$1  $2" | sha256sum -c --quiet - 2>/dev/null; then',
        '\techo "identical: $2"; else echo "DIFFERS:   $2"; differ=1; fi; }',
    ]


def _fetch(source: SourceRecord, make: Make) -> list[str]:
    layout = make.layout
    downloads = OUT / "downloads"
    lines = [f"step {word('fetch: ' + source.kind + ' ' + _describe(source))}",
             line(["mkdir", "-p", downloads, layout.tree])]
    resolved = source.resolved
    if source.kind == "git":
        tree = layout.tree
        lines += [line(["git", "init", "-q", tree]),
                  line(["git", "-C", tree, "fetch", "-q", "--depth", "1", "--no-tags",
                        source.identity.repo, resolved.commit]),
                  line(["git", "-C", tree, "-c", "advice.detachedHead=false", "checkout", "-q",
                        "FETCH_HEAD"]),
                  line(["rm", "-rf", tree / ".git"])]
        return lines
    if source.kind == "debian":
        package, version = resolved.package, resolved.version
        archive = downloads / "deb" / debian.inner_tarball_name(package)
        lines += [line(["apt-get", "download", f"{package}={version}"], cwd=downloads),
                  f"dpkg-deb -x \"$OUT\"/downloads/*.deb {word(downloads / 'deb')}"]
    elif source.kind == "tarball":
        url = source.identity.url
        archive = downloads / url.rstrip("/").rsplit("/", 1)[-1]
        lines.append(line(["curl", "-fL", "--retry", "3", "-o", archive, url]))
    else:  # local
        archive = Path(resolved.tarball)
    lines.append(line(["check", resolved.sha256, archive]))
    if source.kind == "tarball" and resolved.signature_checked is True:
        home, signature = downloads / "gnupg", downloads / "tarball.sign"
        decompress = gpg.DECOMPRESSORS.get(Path(url).suffix, (None, "cat"))[1]
        lines += [
            "# kernel.org's signature covers the uncompressed tar",
            line(["curl", "-fL", "--retry", "3", "-o", signature,
                  source.identity.signature_url]),
            line(["mkdir", "-m", "700", home]),
            line(["gpg", "--batch", "--homedir", home, "--import", resolved.keyring]),
            line([decompress, "-dc", archive]) + " | "
            + line(["gpg", "--batch", "--homedir", home, "--verify", signature, "-"]),
        ]
    lines.append(line(extract_argv(archive, layout.tree)))
    return lines


def _describe(source: SourceRecord) -> str:
    shown = {k: v for k, v in msgspec.to_builtins(source.resolved).items() if k != "tarball"}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _patch(series: SeriesRecord, tree: Path) -> list[str]:
    lines = ["step patch"]
    if not series.series:
        return [*lines, "# patch.enabled was false: stock KVM, nothing to apply"]
    directory = PROJECT / Path(series.series).parent
    patches = [directory / name for name in series.patches]
    lines += [line(["check", series.patch_sha256[p.name], p]) for p in patches]
    return [*lines, line(patch.git_apply_argv(patches), env=patch.git_apply_env(tree), cwd=tree)]


def _config(config: ConfigRecord, make: Make) -> list[str]:
    layout = make.layout
    fragments = [PROJECT / name if not Path(name).is_absolute() else Path(name)
                 for name in config.fragments]
    lines = [f"step {word('config: ' + config.variant)}"]
    lines += [line(["check", config.fragment_sha256[name], path])
              for name, path in zip(config.fragments, fragments, strict=True)]
    lines.append(line(["mkdir", "-p", layout.kbuild]))
    lines += [make_line(make, argv, cwd=layout.tree)
              for argv in kconfig.config_commands(make, fragments)]
    return [*lines, line(["check", config.config_sha256, layout.kernel_config])]


def _kernel(kernel: KernelRecord, make: Make) -> list[str]:
    layout = make.layout
    staging = OUT / "staging"
    installed = staging / "lib" / "modules" / kernel.release
    return [
        f"step {word('kernel: Linux ' + kernel.release)}",
        make_line(make, make.argv("bzImage", "modules", parallel=True)),
        line(["mkdir", "-p", layout.artifacts]),
        make_line(make, make.argv("modules_install", f"INSTALL_MOD_PATH={make.inside(staging)}",
                                  "DEPMOD=/sbin/depmod")),
        line(["rm", "-f", *(installed / link for link in HOST_LINKS)]),
        line(["mv", installed, layout.modules]),
        line(["rm", "-rf", staging]),
        line(["cp", layout.kernel_image, layout.bzimage]),
        line(["cp", layout.kbuild / "System.map", layout.system_map]),
        line(["cp", layout.kernel_config, layout.artifacts_config]),
    ]


def _kmod(kmod: KmodRecord, make: Make) -> list[str]:
    layout = make.layout
    sources = [PROJECT / "kmod" / name for name in sorted(kmod.source_sha256)]
    lines = ["step kmod", line(["mkdir", "-p", layout.kmod_work, layout.kmod])]
    lines += [line(["check", kmod.source_sha256[p.name], p]) for p in sources]
    lines.append(line(["cp", *sources, layout.kmod_work]))
    lines.append(make_line(make, kmod_argv(make)))
    return [*lines, line(["cp", *(layout.kmod_work / name for name in kmod.modules), layout.kmod])]


def _selftests(record: SelftestsRecord | None, make: Make) -> list[str]:
    layout = make.layout
    if record is None:
        return ["step selftests", "# kselftest.build was false: no KVM selftests"]
    install = layout.selftests_install
    return [
        "step 'selftests: the KVM selftests, kselftest install'",
        line(["mkdir", "-p", layout.selftests_work]),
        make_line(make, selftests.headers_argv(make)),
        make_line(make, selftests.install_argv(make)),
        line(["mv", install, layout.selftests]),
    ]


def _tarballs(image: ImageRecord, layout: Layout) -> list[str]:
    """The package tarballs: given, published beside the script, or made by mmdebstrap."""
    base, epoch = image.base, str(image.ext4.source_date_epoch)
    lines = [line(["mkdir", "-p", layout.image_work])]
    for role, record in (("base", base), ("toolchain", image.toolchain)):
        if record.tarball is None:
            continue  # a registry base
        variable, placeholder = TARBALL_VARIABLE[role], TARBALL[role]
        made = layout.image_work / record.tarball
        argv = tarballs.mmdebstrap_argv(base.suite, base.mirror, role, placeholder)
        reference = tarballs.reference(role, record.sha256)
        lines += [
            f"step {word(f'the {role} package tarball')}",
            f'if [ -z "${{{variable}:-}}" ] && [ -f "$HERE/{role}.tar" ]; then '
            f'{variable}="$HERE/{role}.tar"; fi',
            f'if [ -z "${{{variable}:-}}" ]; then',
            f"	{variable}={word(made)}",
            "	" + line(argv, env={"SOURCE_DATE_EPOCH": epoch}),
            "fi",
            line(["check", record.sha256, placeholder]),
            f"docker image inspect {reference} >/dev/null 2>&1 ||",
            f'	docker import "${variable}" {reference}',
        ]
    return lines


def _image(image: ImageRecord, layout: Layout) -> list[str]:
    base, ext4 = image.base, image.ext4
    epoch = str(ext4.source_date_epoch)
    guest_ref = f"{GUEST_REPOSITORY}:{image.release}"
    context, rootfs = layout.image_context, layout.image_work / "rootfs"
    pin = layout.image_work / "pin-times.debugfs"
    lines = []
    if base.tarball is None:
        lines += ["step 'image: the base, from its registry'",
                  line(["docker", "pull", f"{base.reference}@{base.digest}"]),
                  line(["docker", "tag", f"{base.reference}@{base.digest}",
                        base.reference])]
    lines += [
        "step 'image: docker build of the rendered Dockerfile kept beside this script'",
        # The image's sources as the build had them (a changed suite would change it).
        *(line(["check", digest, PROJECT / name]) for name, digest in sorted(image.inputs.items())),
        line(["mkdir", "-p", context]),
        line(["cp", "-a", f"{PROJECT / 'images'}/.", context]),
        line(["find", context, "-name", "*.j2", "-delete"]),
        line(["cp", "-a", layout.modules, context / "modules"]),
        line(["cp", layout.artifacts_config, context / "kernel.config"]),
    ]
    if image.with_kmod:
        lines.append(line(["cp", "-a", layout.kmod, context / "kmod"]))
    if image.with_selftests:
        lines.append(line(["cp", "-a", layout.selftests, context / "selftests"]))
    lines += [
        'cp "$HERE/Dockerfile" ' + word(context / "Dockerfile"),
        line(["docker", "build", "-t", guest_ref, context]),
        "step 'image: export, normalise, ext4'",
        f"container=$(docker create {guest_ref} /bin/true)",
        'docker export -o ' + word(layout.image_work / "rootfs.tar") + ' "$container"',
        'docker rm "$container" >/dev/null',
        line(["mkdir", rootfs]),
        line(["tar", "-xf", layout.image_work / "rootfs.tar", "-C", rootfs, "--numeric-owner"]),
        line(["rm", "-f", *(rootfs / name for name in DOCKER_INJECTED)]),
        f"echo {GUEST_HOSTNAME} >" + word(rootfs / "etc" / "hostname"),
        f"printf '127.0.0.1\\tlocalhost {GUEST_HOSTNAME}\\n' >" + word(rootfs / "etc" / "hosts"),
        line(["find", rootfs, "-exec", "touch", "-h", "-d", f"@{epoch}", "{}", "+"]),
        line(mkfs_argv(ext4.uuid, ext4.size_mb, rootfs, layout.rootfs),
             env={"E2FSPROGS_FAKE_TIME": epoch}),
        "# mkfs -d copies ctime and atime, which no one can set: pin them with debugfs",
        f"(cd {word(rootfs)} && {{ echo; find . -mindepth 1 -printf '%P\\n' | LC_ALL=C sort; }})"
        " |",
        f"\twhile IFS= read -r p; do printf 'sif \"/%s\" ctime @{epoch}\\nsif \"/%s\" atime "
        f"@{epoch}\\n' \"$p\" \"$p\"; done >{word(pin)}",
        line(["debugfs", "-w", "-f", pin, layout.rootfs], env={"E2FSPROGS_FAKE_TIME": epoch})
        + " >/dev/null",
    ]
    return lines


def _compare(layout: Layout, kernel: KernelRecord, kmod: KmodRecord,
             tests: SelftestsRecord | None, image: ImageRecord) -> list[str]:
    lines = ["step 'compare with the recorded artifacts'",
             line(["compare", kernel.bzImage_sha256, layout.bzimage])]
    digests = {**kernel.module_sha256, **kmod.sha256, **(tests.sha256 if tests else {})}
    lines += [line(["compare", digest, layout.artifacts / name])
              for name, digest in sorted(digests.items())]
    lines.append(line(["compare", image.rootfs_sha256, layout.rootfs]))
    lines.append('if [ "$differ" -ne 0 ]; then echo "some artifacts differ" >&2; exit 1; fi')
    return [*lines, 'echo "every artifact is identical to the recorded build"']


def render(settings: Settings) -> str:
    layout = settings.layout
    source, series, config, kernel, kmod, image = (records.require(cls, layout)
                                                   for cls in RECORDS)
    tests = records.require(SelftestsRecord, layout) if image.with_selftests else None
    repro = Layout(project=PROJECT, build=OUT, cache=CACHE)
    container = None
    if kernel.toolchain.runtime == "docker":
        container = tarballs.reference("toolchain", kernel.toolchain.sha256)
    make = Make(repro, kernel.jobs, kernel.ccache, source.source_date_epoch, container)
    # make.env() is the environment every make of the pipeline gets: the
    # reproducible-builds variables the record holds, plus ccache's place
    # (passed into the container by `docker run -e` for runtime docker).
    if container:
        exports = ["# make runs in the toolchain container; its variables are on each line"]
        if make.ccache:
            exports.append(line(["mkdir", "-p", repro.container_ccache]))
    else:
        exports = ["# The kernel build's environment (reproducible-builds variables)",
                   *(f"export {name}={word(value)}" for name, value in make.env().items())]
    sections = [
        _header(settings),
        exports,
        _tarballs(image, repro),
        _fetch(source, make),
        _patch(series, repro.tree),
        _config(config, make),
        _kernel(kernel, make),
        _kmod(kmod, make),
        _selftests(tests, make),
        _image(image, repro),
        _compare(repro, kernel, kmod, tests, image),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def write(settings: Settings) -> Path:
    """The last step of `doit build`: reproducer.sh beside the artifacts."""
    dest = settings.layout.reproducer
    if write_if_changed(dest, render(settings)):
        dest.chmod(0o755)
    return dest
