"""Bake the guest image in Docker and turn it into a bootable ext4 file.

1. Base images: the `base` and `toolchain` package tarballs (see
   `pipeline.tarballs`), imported into dockerd under names made from their
   sha256, or a base pulled from a configured registry.  The recorded digest
   is the base's content (the tarball's sha256, or the registry's manifest
   digest), never a local image id.  Both tarballs are published beside the
   artifacts (base.tar, toolchain.tar), so a later build can pin them.
2. `images/Dockerfile.j2`, rendered with jinja2 (StrictUndefined), builds a
   builder stage on the toolchain (static guest programs from `images/guest/`)
   and the final stage on the base (modules, kmod .ko files, init and
   suites); nothing is installed from the network.
3. The container's filesystem is exported, Docker's injected files dropped,
   every timestamp set to image.source_date_epoch, and `mkfs.ext4 -d` with a
   fixed UUID, hash seed and fake time makes `build/artifacts/rootfs.ext4`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import commands, failure, manifest, records, tarballs
from .errors import (
    BaseImageError,
    CommandError,
    EnvironmentProblem,
    HostFailure,
    ImageError,
    UserError,
)
from .layout import Layout
from .records import Ext4, ImageBase, ImageRecord, KernelRecord, KmodRecord, SelftestsRecord
from .settings import Settings
from .tarballs import PackageTarball
from .util import atomic_write_text, file_sha256, remove_tree

if TYPE_CHECKING:  # docker, requests and jinja2 load when a step needs them:
    import docker  # `doit` loads this module for every command, a no-op one too

log = logging.getLogger("pipeline")

GUEST_REPOSITORY = "kvm-pipeline/guest"
# Files Docker writes into every container; the guest gets its own.
DOCKER_INJECTED = (".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf")
GUEST_HOSTNAME = "guest"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# What apt prints when the mirror cannot be reached from inside the build.
NETWORK_MARKERS = ("Temporary failure resolving", "Could not resolve", "Failed to fetch",
                   "Could not connect", "Connection failed", "Connection timed out",
                   "Network is unreachable", "Unable to connect")
# mkfs.ext4 -d: the files do not fit the image's size (image.size_mb), a setting.
IMAGE_FULL = re.compile(r"Could not allocate (?:block|inode)|No free space in the")



def image_inputs(settings: Settings) -> list[Path]:
    """Every file under images/, for doit's file_dep."""
    return sorted(p for p in settings.layout.images_root.rglob("*") if p.is_file())


def docker_client() -> docker.DockerClient:
    import docker
    import requests

    address = os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.RequestException) as exc:
        text = str(exc)
        if "Permission denied" in text:
            hint = (f"this user may not use {address}: run as root or join the docker group")
        elif os.environ.get("DOCKER_HOST"):
            hint = (f"nothing answers at DOCKER_HOST={address}: start a dockerd listening "
                    "there, or unset DOCKER_HOST to use the local engine")
        else:
            hint = ("start it with `scripts/setup` (it starts dockerd), or by hand: "
                    "`dockerd >/var/log/dockerd.log 2>&1 &`")
        raise EnvironmentProblem(
            f"cannot reach the Docker engine at {address} ({text}); {hint}") from None


# ------------------------------------------------------------------ base images


def ensure_base(client: docker.DockerClient, settings: Settings,
                reimport: bool) -> tuple[str, str, PackageTarball | None]:
    """(image reference for FROM, content digest, package tarball if local) of the base."""
    import docker.errors

    base = settings.image.base
    if not tarballs.is_local(settings, "base"):
        log.info("pulling base image %s", base)
        try:
            pulled = client.images.pull(base)
        except docker.errors.APIError as exc:
            raise BaseImageError(
                f"cannot pull image.base {base!r}: {exc.explanation or exc}. Check the "
                "reference and that the registry is reachable, or use image.base=mmdebstrap"
            ) from None
        digests = pulled.attrs.get("RepoDigests") or [pulled.id]
        return base, digests[0].split("@")[-1], None
    tarball = tarballs.ensure(settings, "base")
    return tarballs.docker_image(client, tarball, reimport), f"sha256:{tarball.sha256}", tarball


def publish_tarball(tarball: PackageTarball, dest: Path) -> None:
    """Put a package tarball beside the artifacts (a hard link when it can be)."""
    if dest.exists() and dest.stat().st_size == tarball.path.stat().st_size \
            and tarballs.sha256_of(dest) == tarball.sha256:
        return
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        try:
            os.link(tarball.path, partial)
        except OSError:  # another filesystem
            shutil.copyfile(tarball.path, partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


# ------------------------------------------------------------------ the build


def render_dockerfile(settings: Settings, **values: object) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.layout.images_root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    try:
        return env.get_template("Dockerfile.j2").render(**values)
    except jinja2.UndefinedError as exc:
        raise ImageError(f"images/Dockerfile.j2 uses an undefined value: {exc}") from None


def assemble_context(layout: Layout, dockerfile: str, with_kmod: bool,
                     with_selftests: bool) -> Path:
    """The build context: the Dockerfile, images/ sources, the kernel's modules, our
    modules and the KVM selftests."""
    context = layout.image_context
    remove_tree(context)
    shutil.copytree(layout.images_root, context, ignore=shutil.ignore_patterns("*.j2"))
    shutil.copytree(layout.modules, context / "modules", symlinks=True)
    shutil.copy(layout.artifacts_config, context / "kernel.config")
    if with_kmod:
        shutil.copytree(layout.kmod, context / "kmod")
    if with_selftests:
        shutil.copytree(layout.selftests, context / "selftests", symlinks=True)
    (context / "Dockerfile").write_text(dockerfile)
    return context


def docker_build(client: docker.DockerClient, context: Path, tag: str, log_file: Path,
                 nocache: bool = False) -> str:
    """Build with the engine, streaming its output; return the image id."""
    log.info("docker build %s-t %s %s", "--no-cache " if nocache else "", tag, context)
    image_id = None
    with open(log_file, "w") as out:
        for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True,
                                      nocache=nocache, decode=True):
            if "stream" in chunk:
                text = chunk["stream"]
                out.write(text)
                if text.strip():
                    print(text, end="" if text.endswith("\n") else "\n", flush=True)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                out.write(chunk["error"])
                out.flush()
                _build_failed(chunk["error"].strip(), log_file)
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


def _build_failed(error: str, log_file: Path) -> None:
    """Tell a mirror the build could not reach (the machine) from anything else."""
    text = log_file.read_text(errors="replace")
    if any(marker in text for marker in NETWORK_MARKERS):
        raise EnvironmentProblem(
            f"docker build could not reach the package mirror: {error} (full log: {log_file}). "
            "Check that the containers' network reaches Debian's mirror")
    host = failure.host_sign(f"{text}\n{error}")
    if host is not None:
        raise failure.host_failure("docker build", host, log_file)
    # A step of images/Dockerfile.j2 failed on what this tree built (depmod, say).
    raise ImageError(f"docker build failed: {error} (full log: {log_file})")


def export_filesystem(client: docker.DockerClient, image_id: str, dest: Path) -> None:
    """The image's filesystem as a tar file, via a created (never started) container."""
    container = client.containers.create(image_id, command=["/bin/true"])
    try:
        with open(dest, "wb") as out:
            for chunk in container.export():
                out.write(chunk)
    finally:
        container.remove(force=True)


def normalise_tree(root: Path, epoch: int) -> None:
    """Drop Docker's injected files, write the guest's own, pin every timestamp."""
    for name in DOCKER_INJECTED:
        (root / name).unlink(missing_ok=True)
    (root / "etc" / "hostname").write_text(GUEST_HOSTNAME + "\n")
    (root / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost {GUEST_HOSTNAME}\n")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def mkfs_argv(uuid: str, size_mb: int, tree: Path, dest: Path) -> list[str | Path]:
    return ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-U", uuid,
            "-E", f"hash_seed={uuid},root_owner=0:0", "-d", tree, dest, f"{size_mb}M"]


def make_ext4(settings: Settings, tree: Path, dest: Path) -> None:
    image = settings.image
    fake_time = {"E2FSPROGS_FAKE_TIME": str(image.source_date_epoch)}
    try:
        commands.run(mkfs_argv(image.uuid, image.size_mb, tree, dest), env=fake_time)
    except CommandError as exc:
        if failure.host_sign(exc.output_tail) is None and IMAGE_FULL.search(exc.output_tail):
            raise UserError(f"the guest's files do not fit in image.size_mb={image.size_mb}:\n"
                            f"{exc.output_tail}\nRaise image.size_mb") from None
        raise _host_or_unknown("mkfs.ext4", exc) from None
    # mkfs -d copies each file's ctime, which no one can set (it is "now" after
    # extraction), and atime, which reading may bump: pin both with debugfs.
    script = dest.with_name("pin-times.debugfs")
    lines = []
    for path in ["", *sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))]:
        if '"' in path or "\n" in path:
            raise ImageError(f"cannot pin the times of {path!r} in the image: odd file name")
        for field in ("ctime", "atime"):
            lines.append(f'sif "/{path}" {field} @{image.source_date_epoch}\n')
    script.write_text("".join(lines))
    try:
        commands.run(["debugfs", "-w", "-f", script, dest], env=fake_time)
    except CommandError as exc:
        raise _host_or_unknown("debugfs (pinning the image's times)", exc) from None


def _host_or_unknown(what: str, exc: CommandError) -> HostFailure:
    """mkfs and debugfs work on files this pipeline made: unless the image is too small
    (a setting), a failure is the machine's, with its evidence or without one."""
    blamed = failure.host_sign(exc.output_tail) or failure.Blame(
        True, f"exit status {exc.returncode}, no known cause:\n{exc.output_tail}")
    return failure.host_failure(what, blamed, None)


def base_record(settings: Settings, digest: str, tarball: PackageTarball | None) -> ImageBase:
    """The base as image.json names it: a tarball's package set, or a registry digest."""
    image = settings.image
    if tarball is None:
        return ImageBase(reference=image.base, digest=digest, suite=image.suite,
                         mirror=image.mirror, tarball=None)
    packages = tarballs.record(tarball)
    return ImageBase(reference=image.base, digest=digest, suite=image.suite, mirror=image.mirror,
                     tarball=packages.tarball, sha256=packages.sha256, pinned=packages.pinned,
                     packages=packages.packages)


def build_image(settings: Settings) -> ImageRecord:
    """The `image` task: base, docker build, export, ext4."""
    layout = settings.layout
    kernel = records.require(KernelRecord, layout)
    with_kmod = records.load(KmodRecord, layout) is not None and layout.kmod.is_dir()
    with_selftests = (records.load(SelftestsRecord, layout) is not None
                      and layout.selftests.is_dir())
    client = docker_client()
    started = time.monotonic()
    manifest.invalidate(layout)
    reimport = not settings.image.docker_cache
    base_ref, base_digest, base_tarball = ensure_base(client, settings, reimport)
    toolchain = tarballs.ensure(settings, "toolchain")
    toolchain_ref = tarballs.docker_image(client, toolchain, reimport)
    # The suites compare what they see with what KVM was built with.
    kvm_patch = "applied" if kernel.patches.patches else "none"
    dockerfile = render_dockerfile(settings, base_image=base_ref, toolchain_image=toolchain_ref,
                                   base_has_packages=base_tarball is not None,
                                   release=kernel.release, kvm_patch=kvm_patch,
                                   with_kmod=with_kmod, with_selftests=with_selftests)
    layout.image_work.mkdir(parents=True, exist_ok=True)
    context = assemble_context(layout, dockerfile, with_kmod, with_selftests)
    tag = f"{GUEST_REPOSITORY}:{kernel.release}"
    image_id = docker_build(client, context, tag, layout.docker_log, nocache=reimport)

    with tempfile.TemporaryDirectory(dir=layout.image_work, prefix=".export-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        tree = Path(tmp) / "rootfs"
        tree.mkdir()
        export_filesystem(client, image_id, tar_path)
        try:
            commands.run(["tar", "-xf", tar_path, "-C", tree, "--numeric-owner"])
        except CommandError as exc:
            raise failure.machine_error(f"unpacking the exported image in {tmp}",
                                        exc) from None
        normalise_tree(tree, settings.image.source_date_epoch)
        partial = Path(tmp) / "rootfs.ext4"
        make_ext4(settings, tree, partial)
        os.replace(partial, layout.rootfs)
    atomic_write_text(layout.dockerfile, dockerfile)
    for tarball in (base_tarball, toolchain):
        if tarball is not None:
            publish_tarball(tarball, layout.published_tarball(tarball.role))
    image = settings.image
    record = ImageRecord(
        release=kernel.release,
        base=base_record(settings, base_digest, base_tarball),
        toolchain=tarballs.record(toolchain),
        inputs={str(path.relative_to(layout.project)): file_sha256(path)
                for path in image_inputs(settings)},
        dockerfile_sha256=hashlib.sha256(dockerfile.encode()).hexdigest(),
        ext4=Ext4(uuid=image.uuid, size_mb=image.size_mb,
                  source_date_epoch=image.source_date_epoch),
        rootfs_sha256=file_sha256(layout.rootfs),
        with_kmod=with_kmod,
        with_selftests=with_selftests,
        image_id=image_id,
        seconds=round(time.monotonic() - started, 1),
    )
    records.save(record, layout)
    log.info("guest image: %s (base %s)", layout.rootfs, base_digest)
    return record
