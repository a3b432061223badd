"""Bake the guest image in Docker and turn it into a bootable ext4 file.

1. Base image: Debian minbase made locally by mmdebstrap (no registry) and
   imported into dockerd, or an image pulled from a configured registry.  The
   recorded digest is the base's content (the tarball's sha256, or the
   registry's manifest digest), never a local image id.
2. `images/Dockerfile.j2`, rendered with jinja2 (StrictUndefined), builds a
   builder stage (static guest programs from `images/guest/`) and the final
   stage (modules, kmod .ko files, init and suites).
3. The container's filesystem is exported, Docker's injected files dropped,
   every timestamp set to image.source_date_epoch, and `mkfs.ext4 -d` with a
   fixed UUID, hash seed and fake time makes `build/artifacts/rootfs.ext4`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import jinja2
import requests

from . import commands
from .errors import EnvironmentProblem, UserError
from .settings import Settings
from .util import atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

BASE_REPOSITORY = "kvm-pipeline/base"
GUEST_REPOSITORY = "kvm-pipeline/guest"
# Files Docker writes into every container; the guest gets its own.
DOCKER_INJECTED = (".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf")
GUEST_HOSTNAME = "guest"


class ImageError(UserError):
    """The image could not be built from what was configured."""


def images_root(settings: Settings) -> Path:
    return settings.root / "images"


def image_inputs(settings: Settings) -> list[Path]:
    """Every file under images/, for doit's file_dep."""
    return sorted(p for p in images_root(settings).rglob("*") if p.is_file())


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.RequestException) as exc:
        text = str(exc)
        if "Permission denied" in text:
            hint = ("this user may not use /var/run/docker.sock: run as root or join the "
                    "docker group")
        else:
            hint = ("start it with `scripts/setup` (it starts dockerd), or by hand: "
                    "`dockerd >/var/log/dockerd.log 2>&1 &`")
        raise EnvironmentProblem(f"cannot reach the Docker engine ({text}); {hint}") from None


# ------------------------------------------------------------------ base image


def _mmdebstrap_tarball(settings: Settings) -> Path:
    image = settings.image
    cache = settings.cache_dir / "base"
    name = f"{image.suite}-minbase-{image.source_date_epoch}.tar"
    tarball = cache / name
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{name}.partial"
    partial.unlink(missing_ok=True)
    try:
        commands.run(["mmdebstrap", "--quiet", "--variant=minbase", "--format=tar",
                      image.suite, partial,
                      image.mirror],
                     env={"SOURCE_DATE_EPOCH": str(image.source_date_epoch)})
        os.replace(partial, tarball)
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def ensure_base(client: docker.DockerClient, settings: Settings) -> tuple[str, str]:
    """(image reference for FROM, content digest) of the base image."""
    base = settings.image.base
    if base != "mmdebstrap":
        log.info("pulling base image %s", base)
        try:
            pulled = client.images.pull(base)
        except docker.errors.APIError as exc:
            raise ImageError(
                f"cannot pull image.base {base!r}: {exc.explanation or exc}. Check the "
                "reference and that the registry is reachable, or use image.base=mmdebstrap"
            ) from None
        digests = pulled.attrs.get("RepoDigests") or [pulled.id]
        return base, digests[0].split("@")[-1]

    tarball = _mmdebstrap_tarball(settings)
    digest = "sha256:" + file_sha256(tarball)
    tag = digest.removeprefix("sha256:")[:16]
    reference = f"{BASE_REPOSITORY}:{tag}"
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        log.info("importing %s as %s", tarball, reference)
        client.api.import_image_from_file(str(tarball), repository=BASE_REPOSITORY, tag=tag)
    return reference, digest


# ------------------------------------------------------------------ the build


def render_dockerfile(settings: Settings, **values: object) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_root(settings)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    try:
        return env.get_template("Dockerfile.j2").render(**values)
    except jinja2.UndefinedError as exc:
        raise ImageError(f"images/Dockerfile.j2 uses an undefined value: {exc}") from None


def assemble_context(settings: Settings, context: Path, dockerfile: str,
                     kmod_dir: Path | None) -> None:
    """The build context: the Dockerfile, images/ sources and the kernel's modules."""
    remove_tree(context)
    shutil.copytree(images_root(settings), context, ignore=shutil.ignore_patterns("*.j2"))
    shutil.copytree(settings.artifacts_dir / "modules", context / "modules", symlinks=True)
    shutil.copy(settings.artifacts_dir / "kernel.config", context / "kernel.config")
    if kmod_dir is not None:
        shutil.copytree(kmod_dir, context / "kmod")
    (context / "Dockerfile").write_text(dockerfile)


def docker_build(client: docker.DockerClient, context: Path, tag: str, log_file: Path) -> str:
    """Build with the engine, streaming its output; return the image id."""
    log.info("docker build %s -t %s", context, tag)
    image_id = None
    with open(log_file, "w") as out:
        for chunk in client.api.build(path=str(context), tag=tag, rm=True, forcerm=True,
                                      decode=True):
            if "stream" in chunk:
                text = chunk["stream"]
                out.write(text)
                if text.strip():
                    print(text, end="" if text.endswith("\n") else "\n", flush=True)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                out.write(chunk["error"])
                raise ImageError(f"docker build failed: {chunk['error'].strip()} "
                                 f"(full log: {log_file})")
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id


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


def make_ext4(settings: Settings, tree: Path, dest: Path) -> None:
    image = settings.image
    fake_time = {"E2FSPROGS_FAKE_TIME": str(image.source_date_epoch)}
    commands.run(
        ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-U", image.uuid,
         "-E", f"hash_seed={image.uuid},root_owner=0:0", "-d", tree, dest, f"{image.size_mb}M"],
        env=fake_time, hint="if the tree does not fit, raise image.size_mb",
    )
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
    commands.run(["debugfs", "-w", "-f", script, dest], env=fake_time)


def build_image(settings: Settings) -> dict:
    """The `image` task: base, docker build, export, ext4."""
    kernel = json.loads((settings.artifacts_dir / "kernel.json").read_text())
    kmod_dir = settings.artifacts_dir / "kmod"
    if not kmod_dir.is_dir():
        kmod_dir = None
    release = kernel["release"]
    client = docker_client()
    started = time.monotonic()
    base_ref, base_digest = ensure_base(client, settings)
    # The suites compare what they see with what KVM was built with.
    kvm_patch = "applied" if kernel["patches"]["patches"] else "none"
    dockerfile = render_dockerfile(settings, base_image=base_ref, release=release,
                                   kvm_patch=kvm_patch, with_kmod=kmod_dir is not None)
    work = settings.image_dir
    work.mkdir(parents=True, exist_ok=True)
    context = work / "context"
    assemble_context(settings, context, dockerfile, kmod_dir)
    tag = f"{GUEST_REPOSITORY}:{release}"
    image_id = docker_build(client, context, tag, work / "docker-build.log")

    artifacts = settings.artifacts_dir
    with tempfile.TemporaryDirectory(dir=work, prefix=".export-") as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        tree = Path(tmp) / "rootfs"
        tree.mkdir()
        export_filesystem(client, image_id, tar_path)
        commands.run(["tar", "-xf", tar_path, "-C", tree, "--numeric-owner"])
        normalise_tree(tree, settings.image.source_date_epoch)
        partial = Path(tmp) / "rootfs.ext4"
        make_ext4(settings, tree, partial)
        os.replace(partial, artifacts / "rootfs.ext4")
    record = {
        "release": release,
        "base": {"reference": settings.image.base, "digest": base_digest},
        "image_id": image_id,
        "rootfs_sha256": file_sha256(artifacts / "rootfs.ext4"),
        "with_kmod": kmod_dir is not None,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_text(artifacts / "image.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(work / "Dockerfile", dockerfile)
    log.info("guest image: %s (base %s)", artifacts / "rootfs.ext4", base_digest)
    return record
