"""`doit lava`: the suite as a LAVA job, for a lab to run on its QEMU workers.

The job (images/lava/job.yaml.j2, rendered from the same settings as `doit
test`) deploys the build's bzImage and rootfs.ext4 from lava.artifacts_url to
a QEMU device, boots the kernel with the command line `doit test` gives it,
and reads the results from the console with LAVA's `monitors` test method.
Without our virtio ports the guest's KTAP goes to the console (images/init);
with pipeline.lava=1 each case also prints one flat line, "pipeline-case:
SUITE.CASE pass|fail|skip" (images/lib/ktap.sh), which the monitor's pattern
turns into a LAVA test case named after it.

rootfs.ext4 is 1 GiB (sparse); the job fetches rootfs.ext4.zst, which `doit
lava` writes beside it.  With lava.matrix=true it builds each picked matrix
cell and writes one job per cell; lava.artifacts_url then holds "{cell}".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .. import chain, commands, guest
from ..errors import PipelineError, SettingsError
from ..layout import Layout
from ..settings import Settings
from ..util import atomic_write_text
from . import cells

SUITE_NAME = "kvm-pipeline"  # the LAVA test definition the cases belong to
JOB_TEMPLATE = "job.yaml.j2"


def artifacts_url(settings: Settings, cell: str | None) -> str:
    """The URL the lab fetches this build's (or cell's) build/artifacts/ from."""
    url = settings.lava.artifacts_url.rstrip("/")
    if not url:
        raise SettingsError(
            "lava.artifacts_url is empty: set it to the URL where build/artifacts/ is "
            "published for the lab (e.g. lava.artifacts_url=https://ci.example/job/42/"
            "artifacts), with {cell} in it for lava.matrix=true")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"lava.artifacts_url is {url!r}: the lab fetches over http:// or "
                            "https://")
    if cell is None and "{cell}" in url:
        raise SettingsError("lava.artifacts_url holds {cell}, which only a matrix's jobs "
                            "fill in (lava.matrix=true)")
    if cell is not None:
        if "{cell}" not in url:
            raise SettingsError("lava.matrix=true writes one job per cell: lava.artifacts_url "
                                "needs {cell} where each cell's build/matrix/CELL/artifacts "
                                "is published, e.g. https://ci.example/42/{cell}/artifacts")
        url = url.replace("{cell}", cell)
    return url


def job_text(settings: Settings, name: str, cell: str | None = None,
             job_file: str = "job.yaml") -> str:
    """The LAVA job definition of this build (`name` names it in the job)."""
    import jinja2  # here: loading the tasks must not pay for it

    suite = guest.selected_suites(settings)
    cmdline = " ".join(guest.kernel_cmdline(settings, suite, ("pipeline.lava=1",)))
    if any(char in cmdline for char in '"{}'):
        # LAVA puts it in one -append "..." and fills in {kernel}-style names.
        raise SettingsError(f"boot.cmdline {settings.boot.cmdline!r} holds a double quote or "
                            "a brace, which the LAVA job's QEMU command line cannot carry; "
                            "drop them for `doit lava`")
    url = artifacts_url(settings, cell)
    boot_minutes = max(1, math.ceil(settings.boot.boot_timeout / 60))
    test_minutes = max(1, math.ceil(settings.boot.test_timeout / 60))
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(settings.layout.images_root / "lava"),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True,
        lstrip_blocks=True)
    return environment.get_template(JOB_TEMPLATE).render(
        name=name, job_name=f"kvm-pipeline {name}: {suite}", job_file=job_file,
        device_type=settings.lava.device_type, kvm=settings.lava.kvm,
        memory_mb=settings.boot.memory_mb, smp=settings.boot.smp,
        kernel_url=f"{url}/bzImage", rootfs_url=f"{url}/rootfs.ext4.zst", cmdline=cmdline,
        suite_name=SUITE_NAME, boot_minutes=boot_minutes,
        # The job's own limit: deploy (15 min), the boot, the run.
        test_minutes=test_minutes, job_minutes=15 + boot_minutes + test_minutes)


def compressed_rootfs(layout: Layout) -> Path:
    """rootfs.ext4.zst beside rootfs.ext4, made again when the image is newer."""
    rootfs = layout.rootfs
    if not rootfs.is_file():
        raise PipelineError(f"{rootfs} is missing: run `doit build` first")
    packed = layout.rootfs_zst
    if packed.is_file() and packed.stat().st_mtime_ns >= rootfs.stat().st_mtime_ns:
        return packed
    partial = packed.with_name(f".{packed.name}.partial")
    try:
        commands.run(["zstd", "-q", "-f", "-T0", "-3", rootfs, "-o", partial])
        os.replace(partial, packed)
    finally:
        partial.unlink(missing_ok=True)
    return packed


def write_job(settings: Settings, name: str, dest: Path, cell: str | None = None) -> Path:
    text = job_text(settings, name, cell, job_file=str(dest))
    compressed_rootfs(settings.layout)
    atomic_write_text(dest, text)
    print(f"lava job {dest} (artifacts from {artifacts_url(settings, cell)}: bzImage, "
          f"rootfs.ext4.zst)", flush=True)
    return dest


def check(settings: Settings) -> None:
    """What `doit lava` can refuse before building: the URL, each job's settings."""
    if not settings.lava.matrix:
        job_text(settings, settings.layout.build.name)
        return
    for cell in cells.picked_cells(settings):
        job_text(cells.cell_settings(settings, cell), cell.name, cell.name)


def lava_jobs(settings: Settings) -> list[Path]:
    """The `lava` task: build/lava/job.yaml, or with lava.matrix one job per picked cell
    (each cell built first, as `doit matrix` builds it, its tests left to the lab)."""
    out = settings.layout.lava
    if not settings.lava.matrix:
        return [write_job(settings, settings.layout.build.name, out / "job.yaml")]
    picked = cells.picked_cells(settings)
    written = []
    for cell in picked:
        cell_config = cells.cell_settings(settings, cell)
        outcome = chain.run(["build"], cell_config)
        if not outcome.ok:
            raise outcome.error or PipelineError(f"matrix cell {cell.name}: the build failed")
        written.append(write_job(cell_config, cell.name, out / f"{cell.name}.yaml", cell.name))
    atomic_write_text(out / "jobs.json", json.dumps([str(p) for p in written], indent=2) + "\n")
    return written
