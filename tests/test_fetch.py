"""Each fetch kind against real parts: an HTTP server on 127.0.0.1, gpg, git, apt."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import make_tarball, new_repo

from pipeline import records, sources
from pipeline.errors import SourceError
from pipeline.records import SourceRecord
from pipeline.sources import archive


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_nothing_left(s):
    """A failed fetch leaves no tree, no staging directory and no cache entry."""
    assert not s.layout.tree.exists()
    assert not records.path(SourceRecord, s.layout).exists()
    assert not list(s.layout.tree.parent.glob(".fetch-*")) if s.layout.tree.parent.exists() else True
    tarballs = s.layout.cache / "tarballs"
    assert not [p for p in tarballs.glob("*") if not p.name.endswith(".part")] \
        if tarballs.exists() else True


@pytest.fixture
def tarball(fake_tree_files) -> bytes:
    return make_tarball(fake_tree_files)


def tarball_settings(make_settings, server, data: bytes, path="/linux-6.12.3.tar.gz", **extra):
    return make_settings(**{"source.kind": "tarball", "source.url": server.url + path,
                            "source.sha256": sha(data), **extra})


def test_tarball_fetch_extracts_and_records(make_settings, http_server, tarball):
    http_server.files["/linux-6.12.3.tar.gz"] = tarball
    s = tarball_settings(make_settings, http_server, tarball)
    assert not sources.is_current(s)
    record = sources.fetch_tree(s)
    assert record.kernel_version == "6.12.3"
    assert (s.layout.tree / "arch/x86/kvm/x86.c").is_file()
    assert record.source_date_epoch == 1_700_000_000
    assert json.loads(records.path(SourceRecord, s.layout).read_text())["tree_id"] == record.tree_id
    assert sources.is_current(s)
    # Cached by checksum: a second fetch downloads nothing.
    http_server.requests.clear()
    sources.fetch_tree(s)
    assert http_server.requests == []


def test_cut_download_resumes_with_range(make_settings, http_server, fake_tree_files):
    # Incompressible filler, so half the download is many read chunks.
    tarball = make_tarball({**fake_tree_files, "blob": os.urandom(1 << 20).hex()})
    http_server.files["/linux-6.12.3.tar.gz"] = tarball
    http_server.cut_once.add("/linux-6.12.3.tar.gz")
    s = tarball_settings(make_settings, http_server, tarball)
    sources.fetch_tree(s)
    assert len(http_server.requests) == 2
    assert http_server.requests[0][1] is None
    resumed_at = int(http_server.requests[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(tarball) // 2
    assert (s.layout.tree / "Makefile").is_file()


def test_partial_file_from_an_earlier_run_is_resumed(make_settings, http_server, tarball):
    http_server.files["/linux-6.12.3.tar.gz"] = tarball
    s = tarball_settings(make_settings, http_server, tarball)
    cached = archive.tarball_cache_path(s)
    cached.parent.mkdir(parents=True)
    cached.with_name(cached.name + ".part").write_bytes(tarball[:100])
    sources.fetch_tree(s)
    assert http_server.requests == [("/linux-6.12.3.tar.gz", "bytes=100-")]


def test_checksum_mismatch_leaves_nothing(make_settings, http_server, tarball):
    http_server.files["/linux-6.12.3.tar.gz"] = tarball[:-10] + b"corrupted!"
    s = tarball_settings(make_settings, http_server, tarball)
    with pytest.raises(SourceError, match=r"checksum mismatch .* expected sha256 .*source\.sha256"):
        sources.fetch_tree(s)
    assert_nothing_left(s)
    assert not list((s.layout.cache / "tarballs").glob("*"))


def test_missing_tarball_is_a_clear_error(make_settings, http_server, tarball):
    s = tarball_settings(make_settings, http_server, tarball)
    with pytest.raises(SourceError, match=r"answered 404 .*source\.url"):
        sources.fetch_tree(s)
    assert_nothing_left(s)


def test_not_a_kernel_tree_leaves_nothing(make_settings, http_server):
    data = make_tarball({"README": "hello\n"})
    http_server.files["/linux-6.12.3.tar.gz"] = data
    s = tarball_settings(make_settings, http_server, data)
    with pytest.raises(SourceError, match="not a kernel tree"):
        sources.fetch_tree(s)
    assert not s.layout.tree.exists()
    assert not list(s.layout.tree.parent.glob(".fetch-*"))


def test_failed_refetch_keeps_the_previous_tree(make_settings, http_server, tarball):
    http_server.files["/linux-6.12.3.tar.gz"] = tarball
    s = tarball_settings(make_settings, http_server, tarball)
    first = sources.fetch_tree(s)
    bad = make_settings(**{"source.kind": "tarball", "source.url": http_server.url + "/gone.tgz",
                           "source.sha256": "0" * 64})
    with pytest.raises(SourceError):
        sources.fetch_tree(bad)
    assert (s.layout.tree / "Makefile").is_file()
    assert json.loads(records.path(SourceRecord, s.layout).read_text())["tree_id"] == first.tree_id


@pytest.fixture
def gpg_key(tmp_path):
    """A throwaway signing key and a keyring file holding its public half."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--homedir", str(home), "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "test@kvm-pipeline", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    keyring = tmp_path / "keys.gpg"
    subprocess.run([*gpg, "--output", str(keyring), "--export", "test@kvm-pipeline"], check=True)

    def sign(data: bytes) -> bytes:
        return subprocess.run([*gpg, "--pinentry-mode", "loopback", "--detach-sign", "--armor"],
                              input=data, check=True, capture_output=True).stdout

    return keyring, sign


def test_signature_checked_on_uncompressed_tar(make_settings, http_server, gpg_key, fake_tree_files):
    import gzip
    keyring, sign = gpg_key
    data = make_tarball(fake_tree_files)
    http_server.files["/linux-6.12.3.tar.gz"] = data
    http_server.files["/linux-6.12.3.tar.sign"] = sign(gzip.decompress(data))
    s = tarball_settings(make_settings, http_server, data,
                         **{"source.signature_url": http_server.url + "/linux-6.12.3.tar.sign",
                            "source.keyring": str(keyring)})
    record = sources.fetch_tree(s)
    assert record.resolved.signature_checked is True


def test_bad_signature_leaves_nothing(make_settings, http_server, gpg_key, fake_tree_files):
    keyring, sign = gpg_key
    data = make_tarball(fake_tree_files)
    http_server.files["/linux-6.12.3.tar.gz"] = data
    http_server.files["/linux-6.12.3.tar.sign"] = sign(b"some other tar")
    s = tarball_settings(make_settings, http_server, data,
                         **{"source.signature_url": http_server.url + "/linux-6.12.3.tar.sign",
                            "source.keyring": str(keyring)})
    with pytest.raises(SourceError, match="PGP signature check failed"):
        sources.fetch_tree(s)
    assert_nothing_left(s)
    assert not list((s.layout.cache / "tarballs").glob("*"))


def test_local_tarball(make_settings, tmp_path, tarball):
    path = tmp_path / "linux.tar.gz"
    path.write_bytes(tarball)
    s = make_settings(**{"source.kind": "local", "source.path": str(path),
                         "source.sha256": sha(tarball)})
    assert sources.fetch_tree(s).kernel_version == "6.12.3"


def test_local_tarball_checksum_and_missing(make_settings, tmp_path, tarball):
    path = tmp_path / "linux.tar.gz"
    path.write_bytes(tarball)
    s = make_settings(**{"source.kind": "local", "source.path": str(path),
                         "source.sha256": "1" * 64})
    with pytest.raises(SourceError, match="checksum mismatch"):
        sources.fetch_tree(s)
    assert_nothing_left(s)
    s = make_settings(**{"source.kind": "local", "source.path": str(tmp_path / "nope.tgz"),
                         "source.sha256": sha(tarball)})
    with pytest.raises(SourceError, match="does not exist"):
        sources.fetch_tree(s)


@pytest.fixture
def git_repo(tmp_path, fake_tree_files) -> tuple[Path, list[str]]:
    """A small real repository with two commits of a fake kernel tree."""
    repo = tmp_path / "linux.git"
    git = new_repo(repo, tmp_path)
    commits = []
    for sublevel in (3, 4):
        for name, text in fake_tree_files.items():
            path = repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.replace("SUBLEVEL = 3", f"SUBLEVEL = {sublevel}"))
        git("add", "-A")
        git("commit", "-qm", f"6.12.{sublevel}")
        commits.append(git("rev-parse", "HEAD"))
    git("tag", "v6.12.3", commits[0])
    return repo, commits


@pytest.mark.parametrize(("ref", "index", "version"),
                         [("master", 1, "6.12.4"), ("v6.12.3", 0, "6.12.3"), ("HEAD~1", 0, "6.12.3")])
def test_git_ref_resolves_and_records_commit(make_settings, git_repo, ref, index, version):
    repo, commits = git_repo
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "source.ref": ref})
    record = sources.fetch_tree(s)
    assert record.resolved.commit == commits[index]
    assert record.kernel_version == version
    assert record.source_date_epoch == 1_700_000_000
    assert not (s.layout.tree / ".git").exists()


def test_git_fetch_by_full_commit_id(make_settings, git_repo):
    repo, commits = git_repo
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "source.ref": commits[0]})
    assert sources.fetch_tree(s).kernel_version == "6.12.3"


def test_git_moving_ref_makes_the_tree_stale(make_settings, git_repo):
    """Bisect moves HEAD under an unchanged setting: the tree must be fetched again."""
    repo, commits = git_repo
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "source.ref": "HEAD"})
    sources.fetch_tree(s)
    assert sources.is_current(s)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", commits[0]], check=True)
    assert not sources.is_current(s)


def test_git_missing_ref(make_settings, git_repo):
    repo, _ = git_repo
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "source.ref": "v9.9"})
    with pytest.raises(SourceError, match=r"ref 'v9\.9' \(source\.ref\) is not a commit"):
        sources.fetch_tree(s)
    assert_nothing_left(s)


def test_debian_unknown_version_lists_what_exists(make_settings):
    s = make_settings(**{"source.version": "6.12.0-0-nope"})
    with pytest.raises(SourceError, match=r"version '6\.12\.0-0-nope' .* available: 6\.12\."):
        sources.fetch_tree(s)
    assert_nothing_left(s)


def test_debian_unknown_package_lists_linux_sources(make_settings):
    s = make_settings(**{"source.package": "linux-source-0.1"})
    with pytest.raises(SourceError, match=r"no package 'linux-source-0\.1' .*linux-source-6\.1"):
        sources.fetch_tree(s)


def test_git_moves_the_tree_in_place(make_settings, git_repo):
    """Another commit rewrites only what differs (incremental builds), keeps the tree id,
    and undoes what the patch step did to the tree."""
    repo, commits = git_repo
    first = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                             "source.ref": commits[0]})
    before = sources.fetch_tree(first)
    tree = first.layout.tree
    x86 = tree / "arch/x86/kvm/x86.c"
    x86_stat = x86.stat()
    x86.write_text("patched\n")  # what `git apply` does: a new file in its place
    (tree / "include").mkdir()
    (tree / "include/new-header.h").write_text("added by a patch\n")

    second = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                              "source.ref": commits[1]})
    after = sources.fetch_tree(second)
    assert after.tree_id == before.tree_id
    assert after.kernel_version == "6.12.4" and after.resolved.commit == commits[1]
    assert "SUBLEVEL = 4" in (tree / "Makefile").read_text()
    assert x86.read_text() == (repo / "arch/x86/kvm/x86.c").read_text()
    assert not (tree / "include").exists()
    assert not (tree / ".git").exists()

    # Unchanged between the commits and untouched by a patch: not rewritten.
    sources.fetch_tree(first)
    x86_stat = x86.stat()
    sources.fetch_tree(second)
    assert x86.stat().st_ino == x86_stat.st_ino
    assert x86.stat().st_mtime_ns == x86_stat.st_mtime_ns
