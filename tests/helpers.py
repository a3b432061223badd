"""What the tests share besides fixtures: the project's root, stand-in kernel trees,
a local HTTP server and Redis, doit and the pipeline run as a user runs them."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


FAKE_MAKEFILE = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 3\nEXTRAVERSION =\n"
FAKE_X86_C = "".join(f"line {i}\n" for i in range(1, 41))


def make_tarball(files: dict[str, str], top: str = "linux-6.12.3",
                 mtime: int = 1_700_000_000, executable: tuple[str, ...] = ()) -> bytes:
    """A .tar.gz holding `files` under one top-level directory, like kernel.org's."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def new_repo(repo: Path, home: Path):
    """`git init` a repository at `repo`; returns a git(*args) -> stdout runner for it
    with a fixed identity and date (the same commits give the same ids)."""
    env = {"GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(home), "PATH": "/usr/bin:/bin"}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True, env=env).stdout.strip()

    repo.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "master")
    return git


class Server:
    """A real HTTP server on 127.0.0.1 serving in-memory files, with Range support.

    `cut_once` paths send half their body the first time (with the full
    Content-Length) and drop the connection, as a flaky mirror does.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut_once:
                    server.cut_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------ the real kernel build
#
# One build of the embedded default, shared by every test that needs a kernel
# (and kept between runs, so a second `pytest` only re-checks it).  Its build
# directory is separate from a developer's own `build/`.


E2E_BUILD = os.environ.get("PIPELINE_TEST_BUILD", "build/test")


def doit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run doit on the project's dodo.py, as a user would, output captured."""
    proc = subprocess.run(
        [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args],
        cwd=ROOT, capture_output=True, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tasks_run(proc: subprocess.CompletedProcess) -> list[str]:
    """Tasks doit actually executed ('.  name'), not those it found up to date ('-- name')."""
    return [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]


# A checkout path of another length than the project's: in the container the
# build dir is /build whatever it is; on the host the layout keeps it out of
# the objects (measured).
CLONE = ROOT / "build" / "test-repro-from-a-checkout-at-a-longer-path" / "kvm-pipeline"
def clone_pipeline(*words: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    """`python -m pipeline` of the clone, run from the clone."""
    return subprocess.run([sys.executable, "-m", "pipeline", *words], cwd=CLONE,
                          capture_output=True, text=True, timeout=timeout)


def suite_cases(suite: str) -> list[str]:
    """The cases a guest suite script runs: the words of its `ktap_run SUITE ...` line."""
    text = (ROOT / "images" / "suites" / suite).read_text()
    line = re.search(rf"^ktap_run {suite} ((?:\\\n|.)*)$", text, re.MULTILINE).group(1)
    return line.replace("\\\n", " ").split()


# Our own suites (all but kselftest) of the default `doit test`, and their cases.
OUR_SUITES = ("smoke", "lifecycle", "sections", "kvm")
OUR_CASES = sum(len(suite_cases(suite)) for suite in OUR_SUITES)


def show(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-5000:] + proc.stderr[-3000:]


class RedisServer:
    """A real redis-server on 127.0.0.1 and a free port, in memory only, with a password."""

    PASSWORD = "s3cret-pw"

    def __init__(self, workdir: Path):
        with socket.socket() as sock:  # a free port (a tiny race, fine for tests)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://{self.PASSWORD}@127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--requirepass", self.PASSWORD, "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def cli(self, *args: str) -> str:
        proc = subprocess.run(["redis-cli", "-p", str(self.port), "-a", self.PASSWORD,
                               "--no-auth-warning", *args], capture_output=True, text=True)
        return proc.stdout.strip()

    def keys(self) -> int:
        return int(self.cli("dbsize") or 0)

    def kill(self) -> None:
        """SIGKILL: the server dies as a crashed or unplugged one would."""
        self.proc.kill()
        self.proc.wait()


HOLDER = """
import sys, time
from pathlib import Path
from pipeline import lock
from pipeline.layout import Layout
build = Path(sys.argv[1])
with lock.holding(Layout(project=build, build=build, cache=build), wait=False):
    print("held", flush=True)
    time.sleep(600)
"""
