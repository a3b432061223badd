"""build/artifacts/reproducer.sh: the whole build as a shell script, from its records.

`doit build` writes it last, from the records of every stage, so it holds the
build as it stands (never a journal of an earlier run).  It takes its output
directory as an argument, recreates the build dir's layout there, and checks
each artifact against the record: `reproducer.sh OUT` ends by listing what
came out identical and what did not.

The make, tar, git apply, mmdebstrap and mkfs command lines are the ones the
stages run, rendered for a Layout rooted at placeholders that become "$OUT",
"$PROJECT" and "$CACHE" in the script; the glue in between (the checks,
copying, Docker's CLI instead of its API) is shell in the jinja2 template
templates/reproducer.sh.j2, which gets those lines as values.  With kernel.runtime =
"docker" every make line is the `docker run` of the toolchain image that
the kernel step ran, the commands as run inside.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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

TEMPLATE = Path(__file__).parent / "templates" / "reproducer.sh.j2"
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


def _fetch(source: SourceRecord, make: Make) -> dict[str, object]:
    layout = make.layout
    downloads = OUT / "downloads"
    resolved = source.resolved
    values: dict[str, object] = {
        "step": word(f"fetch: {source.kind} {resolved.shown()}"),
        "mkdir": line(["mkdir", "-p", downloads, layout.tree]),
        # One of: git's commands; Debian's download; a tarball's (and its signature's).
        "git": [], "debian": "", "deb_dir": "", "curl": "", "gpg": [],
    }
    if source.kind == "git":
        tree = layout.tree
        values["git"] = [
            line(["git", "init", "-q", tree]),
            line(["git", "-C", tree, "fetch", "-q", "--depth", "1", "--no-tags",
                  source.identity.repo, resolved.commit]),
            line(["git", "-C", tree, "-c", "advice.detachedHead=false", "checkout", "-q",
                  "FETCH_HEAD"]),
            line(["rm", "-rf", tree / ".git"])]
        return values
    if source.kind == "debian":
        package, version = resolved.package, resolved.version
        archive = downloads / "deb" / debian.inner_tarball_name(package)
        values["debian"] = line(["apt-get", "download", f"{package}={version}"], cwd=downloads)
        values["deb_dir"] = word(downloads / "deb")
    elif source.kind == "tarball":
        url = source.identity.url
        archive = downloads / url.rstrip("/").rsplit("/", 1)[-1]
        values["curl"] = line(["curl", "-fL", "--retry", "3", "-o", archive, url])
    else:  # local
        archive = Path(resolved.tarball)
    values["check"] = line(["check", resolved.sha256, archive])
    if source.kind == "tarball" and resolved.signature_checked is True:
        home, signature = downloads / "gnupg", downloads / "tarball.sign"
        decompress = gpg.DECOMPRESSORS.get(Path(url).suffix, (None, "cat"))[1]
        values["gpg"] = [
            line(["curl", "-fL", "--retry", "3", "-o", signature, source.identity.signature_url]),
            line(["mkdir", "-m", "700", home]),
            line(["gpg", "--batch", "--homedir", home, "--import", resolved.keyring]),
            line([decompress, "-dc", archive]) + " | "
            + line(["gpg", "--batch", "--homedir", home, "--verify", signature, "-"]),
        ]
    values["extract"] = line(extract_argv(archive, layout.tree))
    return values


def _patch(series: SeriesRecord, tree: Path) -> dict[str, object] | None:
    if not series.series:
        return None
    directory = PROJECT / Path(series.series).parent
    patches = [directory / name for name in series.patches]
    return {"checks": [line(["check", series.patch_sha256[p.name], p]) for p in patches],
            "apply": line(patch.git_apply_argv(patches), env=patch.git_apply_env(tree), cwd=tree)}


def _config(config: ConfigRecord, make: Make) -> dict[str, object]:
    layout = make.layout
    fragments = [PROJECT / name if not Path(name).is_absolute() else Path(name)
                 for name in config.fragments]
    commands = [line(["check", config.fragment_sha256[name], path])
                for name, path in zip(config.fragments, fragments, strict=True)]
    commands.append(line(["mkdir", "-p", layout.kbuild]))
    commands += [make_line(make, argv, cwd=layout.tree)
                 for argv in kconfig.config_commands(make, fragments)]
    commands.append(line(["check", config.config_sha256, layout.kernel_config]))
    return {"step": word(f"config: {config.variant}"), "commands": commands}


def _kernel(kernel: KernelRecord, make: Make) -> dict[str, object]:
    layout = make.layout
    staging = OUT / "staging"
    installed = staging / "lib" / "modules" / kernel.release
    return {"step": word(f"kernel: Linux {kernel.release}"), "commands": [
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
    ]}


def _kmod(kmod: KmodRecord, make: Make) -> list[str]:
    layout = make.layout
    sources = [PROJECT / "kmod" / name for name in sorted(kmod.source_sha256)]
    return [line(["mkdir", "-p", layout.kmod_work, layout.kmod]),
            *(line(["check", kmod.source_sha256[p.name], p]) for p in sources),
            line(["cp", *sources, layout.kmod_work]),
            make_line(make, kmod_argv(make)),
            line(["cp", *(layout.kmod_work / name for name in kmod.modules), layout.kmod])]


def _selftests(record: SelftestsRecord | None, make: Make) -> list[str] | None:
    layout = make.layout
    if record is None:
        return None
    return [line(["mkdir", "-p", layout.selftests_work]),
            make_line(make, selftests.headers_argv(make)),
            make_line(make, selftests.install_argv(make)),
            line(["mv", layout.selftests_install, layout.selftests])]


def _tarballs(image: ImageRecord, layout: Layout) -> list[dict[str, str]]:
    """The package tarballs: given, published beside the script, or made by mmdebstrap."""
    base, epoch = image.base, str(image.ext4.source_date_epoch)
    made = []
    for role, record in (("base", base), ("toolchain", image.toolchain)):
        if record.tarball is None:
            continue  # a registry base
        placeholder = TARBALL[role]
        argv = tarballs.mmdebstrap_argv(base.suite, base.mirror, role, placeholder)
        made.append({
            "role": role, "step": word(f"the {role} package tarball"),
            "variable": TARBALL_VARIABLE[role], "made": word(layout.image_work / record.tarball),
            "mmdebstrap": line(argv, env={"SOURCE_DATE_EPOCH": epoch}),
            "check": line(["check", record.sha256, placeholder]),
            "reference": tarballs.reference(role, record.sha256),
        })
    return made


def _image(image: ImageRecord, layout: Layout) -> dict[str, object]:
    base, ext4 = image.base, image.ext4
    epoch = str(ext4.source_date_epoch)
    context, rootfs = layout.image_context, layout.image_work / "rootfs"
    pin = layout.image_work / "pin-times.debugfs"
    pinned_base = f"{base.reference}@{base.digest}"
    guest = f"{GUEST_REPOSITORY}:{image.release}"
    return {
        "registry_base": [] if base.tarball is not None else [
            line(["docker", "pull", pinned_base]),
            line(["docker", "tag", pinned_base, base.reference])],
        # The image's sources as the build had them (a changed suite would change it).
        "context": [
            *(line(["check", digest, PROJECT / name])
              for name, digest in sorted(image.inputs.items())),
            line(["mkdir", "-p", context]),
            line(["cp", "-a", f"{PROJECT / 'images'}/.", context]),
            line(["find", context, "-name", "*.j2", "-delete"]),
            line(["cp", "-a", layout.modules, context / "modules"]),
            line(["cp", layout.artifacts_config, context / "kernel.config"]),
            *([line(["cp", "-a", layout.kmod, context / "kmod"])] if image.with_kmod else []),
            *([line(["cp", "-a", layout.selftests, context / "selftests"])]
              if image.with_selftests else []),
        ],
        "dockerfile": word(context / "Dockerfile"),
        "docker_build": line(["docker", "build", "-t", guest, context]),
        "guest": guest,
        "rootfs_tar": word(layout.image_work / "rootfs.tar"),
        "unpack": [
            line(["mkdir", rootfs]),
            line(["tar", "-xf", layout.image_work / "rootfs.tar", "-C", rootfs,
                  "--numeric-owner"]),
            line(["rm", "-f", *(rootfs / name for name in DOCKER_INJECTED)]),
        ],
        "hostname": GUEST_HOSTNAME,
        "etc_hostname": word(rootfs / "etc" / "hostname"),
        "etc_hosts": word(rootfs / "etc" / "hosts"),
        "ext4": [
            line(["find", rootfs, "-exec", "touch", "-h", "-d", f"@{epoch}", "{}", "+"]),
            line(mkfs_argv(ext4.uuid, ext4.size_mb, rootfs, layout.rootfs),
                 env={"E2FSPROGS_FAKE_TIME": epoch}),
        ],
        "rootfs": word(rootfs),
        "epoch": epoch,
        "pin": word(pin),
        "debugfs": line(["debugfs", "-w", "-f", pin, layout.rootfs],
                        env={"E2FSPROGS_FAKE_TIME": epoch}),
    }


def _compare(layout: Layout, kernel: KernelRecord, kmod: KmodRecord,
             tests: SelftestsRecord | None, image: ImageRecord) -> list[str]:
    digests = {**kernel.module_sha256, **kmod.sha256, **(tests.sha256 if tests else {})}
    return [line(["compare", kernel.bzImage_sha256, layout.bzimage]),
            *(line(["compare", digest, layout.artifacts / name])
              for name, digest in sorted(digests.items())),
            line(["compare", image.rootfs_sha256, layout.rootfs])]


def render(settings: Settings) -> str:
    import jinja2  # here: loading the tasks must not pay for it

    layout = settings.layout
    source, series, config, kernel, kmod, image = (records.require(cls, layout)
                                                   for cls in RECORDS)
    tests = records.require(SelftestsRecord, layout) if image.with_selftests else None
    repro = Layout(project=PROJECT, build=OUT, cache=CACHE)
    container = None
    if kernel.toolchain.runtime == "docker":
        container = tarballs.reference("toolchain", kernel.toolchain.sha256)
    make = Make(repro, kernel.jobs, kernel.ccache, source.source_date_epoch, container)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template(TEMPLATE.name).render(
        project=shlex.quote(str(layout.project)), cache=shlex.quote(str(layout.cache)),
        # make.env() is the environment every make of the pipeline gets: the
        # reproducible-builds variables the record holds, plus ccache's place
        # (passed into the container by `docker run -e` for runtime docker).
        in_container=container is not None,
        container_ccache=line(["mkdir", "-p", repro.container_ccache])
        if container and make.ccache else "",
        make_env=[(name, word(value)) for name, value in make.env().items()],
        image_work=line(["mkdir", "-p", repro.image_work]),
        tarballs=_tarballs(image, repro),
        fetch=_fetch(source, make),
        patch=_patch(series, repro.tree),
        config=_config(config, make),
        kernel=_kernel(kernel, make),
        kmod=_kmod(kmod, make),
        selftests=_selftests(tests, make),
        image=_image(image, repro),
        compare=_compare(repro, kernel, kmod, tests, image),
    )


def write(settings: Settings) -> Path:
    """The last step of `doit build`: reproducer.sh beside the artifacts."""
    dest = settings.layout.reproducer
    if write_if_changed(dest, render(settings)):
        dest.chmod(0o755)
    return dest
