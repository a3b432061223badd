"""`doit lava`'s job run by a real LAVA dispatcher, against `doit test`'s verdicts.

Debian 12's lava-dispatcher (2023.01) runs in a container made here by
mmdebstrap (it pulls ~150 packages and would upgrade the host's systemd and
udev): `lava-run` with the QEMU device of images/lava/device-qemu.yaml, the
job `doit lava` rendered, and the shared e2e build's artifacts served by a
local HTTP server.  LAVA's own result records (the log lines of level
"results") must hold every case of the selection with the verdict `doit
test` gives the same selection on this machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import yaml
from helpers import E2E_BUILD, ROOT, doit, suite_cases

from pipeline import settings
from pipeline.drivers import lava

pytestmark = pytest.mark.slow

# Packages of the dispatcher's container (no Recommends: NFS, TFTP, LXC...);
# zstd, which unpacks rootfs.ext4.zst, comes with lava-dispatcher.
DISPATCHER_PACKAGES = ("lava-dispatcher", "qemu-system-x86", "ca-certificates")
CASES = "smoke"  # six cases, about 70 s of guest time


def dispatcher_image() -> str:
    """The lava-dispatcher container image: made once per package list by mmdebstrap."""
    cache = settings.load(ROOT).layout.cache / "lava"
    wanted = hashlib.sha256(",".join(DISPATCHER_PACKAGES).encode()).hexdigest()[:12]
    tag = f"kvm-pipeline/lava-dispatcher:{wanted}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"bookworm-lava-dispatcher-{wanted}.tar"
    if not tarball.is_file():
        partial = cache / f".{tarball.name}.partial"
        subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase",
                        "--aptopt=APT::Install-Recommends \"false\"",
                        f"--include={','.join(DISPATCHER_PACKAGES)}", "--format=tar",
                        "bookworm", partial, "http://deb.debian.org/debian"],
                       check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
        partial.rename(tarball)
    subprocess.run(["docker", "import", str(tarball), tag], check=True, capture_output=True)
    return tag


@pytest.fixture(scope="module")
def artifacts_server(kernel_build):
    """build/test/artifacts over HTTP on a free port of 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(kernel_build.layout.artifacts))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def results_of(log: str) -> dict[str, str]:
    """LAVA's result records of our definition: case (as the console named it) -> result."""
    found = {}
    for line in log.splitlines():
        if '"lvl": "results"' not in line:
            continue
        record = yaml.safe_load(line)["msg"]
        if record["definition"] == lava.SUITE_NAME:
            found[record["extra"]["test_case_id"]] = record["result"]
    return found


def test_lava_runs_the_suite_with_doit_tests_verdicts(kernel_build, artifacts_server,
                                                      tmp_path):
    image = dispatcher_image()
    words = [f"paths.build={E2E_BUILD}", f"test.cases={CASES}"]
    # What `doit test` says of the selection here.
    proc = subprocess.run([sys.executable, "-m", "pipeline", "test", *words], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = json.loads((kernel_build.layout.results / "results.json").read_text())
    expected = {f"{suite['name']}.{case['name']}": case["status"]
                for suite in results["tests"]["subtests"] for case in suite["subtests"]}
    assert sorted(expected) == sorted(f"{CASES}.{case}" for case in suite_cases(CASES))

    doit("lava", *words, f"lava.artifacts_url={artifacts_server}")
    job = kernel_build.layout.lava / "job.yaml"
    text = job.read_text()
    assert "no_kvm: true" in text and "-cpu max" in text and "pipeline.lava=1" in text
    work = tmp_path / "lava"
    work.mkdir()
    for name in ("device-qemu.yaml",):
        (work / name).write_bytes((ROOT / "images" / "lava" / name).read_bytes())
    (work / "dispatcher.yaml").write_text("dispatcher_ip: 127.0.0.1\n")
    (work / "job.yaml").write_text(text)
    run = subprocess.run(
        ["docker", "run", "--rm", "--network", "host", "-v", f"{work}:/job",
         "-e", "no_proxy=127.0.0.1", image, "lava-run", "--job-id", "1",
         "--output-dir", "/job/out", "--device", "/job/device-qemu.yaml",
         "--dispatcher", "/job/dispatcher.yaml", "/job/job.yaml"],
        capture_output=True, text=True, timeout=1800)
    log = run.stderr
    (tmp_path / "lava.log").write_text(log)
    assert run.returncode == 0, log[-5000:]
    job_result = yaml.safe_load((work / "out" / "result.yaml").read_text())
    assert job_result["result"] == "pass", job_result
    got = results_of(log)
    verdict = {"passed": "pass", "failed": "fail", "skipped": "skip"}
    assert got == {case: verdict[status] for case, status in expected.items()}, log[-5000:]
    # The kernel booted as `doit test` boots it, under TCG with -cpu max.
    assert "-cpu max" in log and "-enable-kvm" not in log
