"""Shared fixtures: a fake kernel tree as a tarball, a local HTTP server, settings."""

from __future__ import annotations

import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import settings, tasks

ROOT = Path(__file__).resolve().parent.parent

FAKE_MAKEFILE = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 3\nEXTRAVERSION =\n"
FAKE_X86_C = "".join(f"line {i}\n" for i in range(1, 41))


def make_tarball(files: dict[str, str], top: str = "linux-6.12.3") -> bytes:
    """A .tar.gz holding `files` under one top-level directory, like kernel.org's."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="session", autouse=True)
def _logging():
    tasks.setup_logging()


@pytest.fixture
def fake_tree_files() -> dict[str, str]:
    return {"Makefile": FAKE_MAKEFILE, "arch/x86/kvm/x86.c": FAKE_X86_C}


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
            def do_GET(self):  # noqa: N802 - http.server's naming
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


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()


@pytest.fixture
def make_settings(tmp_path):
    """Settings rooted at tmp_path with a private build and cache directory."""

    def make(**overrides: str) -> settings.Settings:
        values = {"paths.build": "build", "paths.cache": "cache", **overrides}
        return settings.load(tmp_path, values)

    return make
