"""kernel.org's detached PGP signatures, which sign the *uncompressed* tar."""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import commands
from ..errors import CommandError, EnvironmentProblem, SourceError

log = logging.getLogger("pipeline")

CHUNK = 1 << 16
# suffix -> (Python opener, the equivalent command for the log line)
DECOMPRESSORS: dict[str, tuple[Callable, str]] = {
    ".xz": (lzma.open, "xz"), ".gz": (gzip.open, "gzip"), ".bz2": (bz2.open, "bzip2"),
}


def verify_signature(tarball: Path, signature: Path, keyring: Path, suffix: str) -> None:
    """Check `signature` over the decompressed `tarball` with the keys in `keyring`.

    `suffix` is the compression's (".xz"): `tarball` may be a temporary name.
    """
    if not keyring.is_file():
        raise SourceError(f"source.keyring {keyring} does not exist")
    opener, tool = DECOMPRESSORS.get(suffix, (open, "cat"))
    with tempfile.TemporaryDirectory(prefix="pipeline-gnupg-") as home:
        try:
            commands.run(["gpg", "--batch", "--homedir", home, "--import", keyring])
        except CommandError as exc:
            raise SourceError(f"source.keyring {keyring} is not a keyring gpg can import:\n"
                              f"{exc.output_tail}") from None
        argv = ["gpg", "--batch", "--homedir", home, "--status-fd", "1",
                "--verify", str(signature), "-"]
        log.info("$ %s | %s", commands.quote([tool, "-dc", tarball]), commands.quote(argv))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise EnvironmentProblem("gpg is not installed; run scripts/setup") from None
        assert proc.stdin is not None and proc.stdout is not None
        try:
            with opener(tarball, "rb") as data:
                while block := data.read(CHUNK):
                    proc.stdin.write(block)
        except BrokenPipeError:
            pass  # gpg gave up early (e.g. an unusable signature); its status says why
        finally:
            proc.stdin.close()
        status = proc.stdout.read().decode(errors="replace")
        proc.wait()
    if proc.returncode != 0 or "[GNUPG:] VALIDSIG" not in status:
        lines = [ln for ln in status.splitlines() if "[GNUPG:]" not in ln][-5:]
        raise SourceError(
            f"PGP signature check failed for {tarball.name} against {keyring}: "
            + ("; ".join(lines) or "no valid signature")
            + ". The tarball was not used; check source.signature_url and source.keyring"
        )
    log.info("good PGP signature on %s", tarball.name)
