"""The manifest, package tarballs and repro's comparison: pure logic, no engine, no build."""

import io
import json
import tarfile
from pathlib import Path

import msgspec
import pytest

from pipeline import manifest, records, reproducer, settings, tarballs
from pipeline.drivers import repro
from pipeline.errors import InputUnavailable, PipelineError, SettingsError, UserError
from pipeline.records import (
    BuildEnvironment,
    ConfigRecord,
    Ext4,
    ImageBase,
    ImageRecord,
    KernelPatches,
    KernelRecord,
    KernelSource,
    KmodRecord,
    PackageSet,
    SelftestsRecord,
    SeriesRecord,
    SourceIdentity,
    SourceRecord,
    SourceResolved,
    Toolchain,
)

STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u14
Description: GNU C Library
 continued line: Version: 0

Package: gcc-12
Status: install ok installed
Version: 12.2.0-14+deb12u1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def status_tarball(path, status=STATUS):
    """A tar shaped like mmdebstrap's: ./var/lib/dpkg/status among other files."""
    with tarfile.open(path, "w") as tar:
        for name, text in (("./etc/hostname", "x\n"), ("./var/lib/dpkg/status", status)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def edited(record, key, value):
    """`record` with the field at `key` (dotted, or a tuple of names) set to `value`:
    records are frozen."""
    data = msgspec.to_builtins(record)
    *path, last = key.split(".") if isinstance(key, str) else key
    inner = data
    for name in path:
        inner = inner[name]
    inner[last] = value
    return msgspec.convert(data, type(record))


def save_build(layout, changes=None):
    """A complete set of stage records, as a real build leaves them."""
    identity = SourceIdentity(kind="debian", package="linux-source-6.12", version="6.12.57-1")
    resolved = SourceResolved(package="linux-source-6.12", version="6.12.57-1",
                              tarball="/root/.cache/x.tar.xz", sha256="a" * 64)
    kernel = KernelRecord(
        release="6.12.57", kernel_version="6.12.57", variant="default",
        source=KernelSource(identity=identity, resolved=resolved),
        patches=KernelPatches(series="patches/kvm/6.12/series", patches=("0001.patch",),
                              digest="d" * 64),
        config_sha256="c" * 64, bzImage_sha256="b" * 64,
        module_sha256={"modules/kernel/arch/x86/kvm/kvm.ko": "1" * 64},
        make_env={"KBUILD_BUILD_USER": "kvm-pipeline"},
        toolchain=Toolchain(runtime="host", packages={"gcc-12": "12.2.0-14+deb12u1"}),
        ccache=True, jobs=2, environment=BuildEnvironment(host="here"),
        seconds={"build": 100.0})
    built = {
        SourceRecord: SourceRecord(
            kind="debian", identity=identity, resolved=resolved,
            kernel_version="6.12.57", source_date_epoch=1700000000, tree_id="t1"),
        SeriesRecord: SeriesRecord(tree_id="t1", kernel_version="6.12.57",
                                   series="patches/kvm/6.12/series", patches=("0001.patch",),
                                   patch_sha256={"0001.patch": "p" * 64}, digest="d" * 64),
        ConfigRecord: ConfigRecord(tree_id="t1", variant="default",
                                   fragments=("kconfig/base.config",),
                                   fragment_sha256={"kconfig/base.config": "f" * 64},
                                   checked_options=10, config_sha256="c" * 64),
        KernelRecord: kernel,
        KmodRecord: KmodRecord(release="6.12.57", modules=("sched_inject.ko",),
                               sha256={"kmod/sched_inject.ko": "2" * 64},
                               source_sha256={"sched_inject_main.c": "3" * 64}),
        ImageRecord: ImageRecord(
            release="6.12.57",
            base=ImageBase(reference="mmdebstrap", digest="sha256:" + "4" * 64,
                           suite="bookworm", mirror="http://deb.debian.org/debian",
                           tarball="4444.tar", sha256="4" * 64, pinned=False,
                           packages={"kmod": "30+20221128-1"}),
            toolchain=PackageSet(tarball="5555.tar", sha256="5" * 64, pinned=False,
                                 packages={"gcc-12": "12.2.0-14+deb12u1"}),
            inputs={"images/init": "6" * 64}, dockerfile_sha256="7" * 64,
            ext4=Ext4(uuid="u", size_mb=1024, source_date_epoch=1700000000),
            rootfs_sha256="8" * 64, with_kmod=True, with_selftests=True,
            image_id="sha256:local", seconds=60.0),
        SelftestsRecord: SelftestsRecord(kernel_version="6.12.57", inputs_key="k" * 64,
                                         tests=("kvm:state_test",),
                                         sha256={"selftests/kvm/state_test": "9" * 64},
                                         seconds=30.0),
    }
    for cls, change in (changes or {}).items():
        for key, value in change.items():
            built[cls] = edited(built[cls], key, value)
    for record in built.values():
        records.save(record, layout)


@pytest.fixture
def layout(make_settings):
    return make_settings().layout


def test_manifest_is_deterministic_and_holds_no_run_details(layout):
    save_build(layout)
    first_digest = manifest.write(layout)
    first = layout.manifest.read_bytes()
    # What varies from run to run (durations, host, ccache, jobs, local paths and
    # Docker ids) is not in the manifest.
    save_build(layout, {
        KernelRecord: {"seconds": {"build": 5.0}, "environment": {"host": "elsewhere"},
                       "ccache": False, "jobs": 16},
        ImageRecord: {"image_id": "sha256:other", "seconds": 1.0},
        SourceRecord: {"tree_id": "t2", "run": {"seconds": 3}}})
    assert manifest.write(layout) == first_digest
    assert layout.manifest.read_bytes() == first
    text = first.decode()
    assert "/root/.cache" not in text and "sha256:local" not in text
    assert json.loads(text)["artifacts"]["rootfs.ext4"] == "8" * 64
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_a_changed_input_changes_exactly_its_field(layout):
    save_build(layout)
    before = manifest.build(layout)
    save_build(layout, {KmodRecord: {"source_sha256": {"sched_inject_main.c": "9" * 64}}})
    after = manifest.build(layout)
    assert manifest.differences(before, after) == [manifest.Difference(
        "inputs.kmod.sources.sched_inject_main.c", "3" * 64, "9" * 64)]


def test_manifest_load_rejects_what_is_not_one(tmp_path):
    with pytest.raises(UserError, match="no manifest at"):
        manifest.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "inputs": {}}')
    with pytest.raises(UserError, match="not a manifest of schema 1"):
        manifest.load(bad)


def test_package_set_comes_from_the_tarballs_dpkg_database(tmp_path):
    path = status_tarball(tmp_path / "base.tar")
    assert tarballs.package_set(path) == {"gcc-12": "12.2.0-14+deb12u1",
                                          "libc6": "2.36-9+deb12u14"}
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(path, arcname="./etc/other")
    with pytest.raises(SettingsError, match="not a Debian root filesystem"):
        tarballs.package_set(plain)


def test_compiler_packages_leave_out_the_rest():
    versions = {"gcc-12": "1", "binutils": "2", "libc6": "3", "tzdata": "4", "passwd": "5"}
    assert tarballs.compiler_packages(versions) == {"gcc-12": "1", "binutils": "2",
                                                    "libc6": "3"}


def test_a_pinned_tarball_needs_its_sha256(make_settings):
    with pytest.raises(SettingsError, match=r"needs image\.base_sha256"):
        make_settings(**{"image.base": "tarball:base.tar"})
    with pytest.raises(SettingsError, match=r"image\.toolchain .* must be"):
        make_settings(**{"image.toolchain": "debian:bookworm"})


def test_a_pinned_tarball_is_checked_and_read(make_settings, tmp_path):
    path = status_tarball(tmp_path / "base.tar")
    wrong = make_settings(**{"image.base": "tarball:base.tar", "image.base_sha256": "0" * 64})
    with pytest.raises(SettingsError, match=r"its sha256 is .* not image\.base_sha256"):
        tarballs.ensure(wrong, "base")
    sha = tarballs.file_sha256(path)
    pinned = tarballs.ensure(make_settings(**{"image.base": "tarball:base.tar",
                                              "image.base_sha256": sha.upper()}), "base")
    assert pinned.pinned and pinned.sha256 == sha and pinned.packages["libc6"]
    assert pinned.reference == f"kvm-pipeline/base:{sha[:16]}"
    gone = make_settings(**{"image.base": "tarball:nope.tar", "image.base_sha256": sha})
    with pytest.raises(SettingsError, match="is not a file"):
        tarballs.ensure(gone, "base")


def expected_manifest(layout):
    save_build(layout)
    return manifest.build(layout)


def test_rebuild_settings_turn_every_cache_off_and_pin_published_tarballs(layout,
                                                                          make_settings,
                                                                          tmp_path):
    config = make_settings(**{"kernel.runtime": "docker",
                              "kernel.ccache_remote": "redis://127.0.0.1:1"})
    published = tmp_path / "ci"
    published.mkdir()
    base = status_tarball(published / "base.tar")
    expected = expected_manifest(layout)
    expected = edited(expected, "inputs.image.base.sha256", tarballs.file_sha256(base))
    fresh = repro.rebuild_settings(config, expected, published)
    # ccache reads nothing (recache) and no shared server is asked.
    assert fresh.kernel.ccache == "recache" and not fresh.kernel.ccache_remote
    assert not fresh.image.docker_cache
    assert not fresh.source.tree_cache
    assert fresh.layout.build == config.layout.repro_build
    assert fresh.image.base == f"tarball:{base}"
    # The toolchain tarball was not published: mmdebstrap's stays.
    assert fresh.image.toolchain == "mmdebstrap"
    # An unpinned Debian source takes the manifest's version.
    assert fresh.source.version == "6.12.57-1"
    # ccache off stays off.
    off = make_settings(**{"kernel.ccache": "off"})
    assert repro.rebuild_settings(off, expected, published).kernel.ccache == "off"


def test_a_moved_package_set_is_an_unavailable_input(layout, make_settings, tmp_path):
    expected = expected_manifest(layout)
    path = status_tarball(tmp_path / "base.tar")
    config = make_settings(**{"image.base": "tarball:base.tar",
                              "image.base_sha256": tarballs.file_sha256(path),
                              "image.toolchain": "tarball:base.tar",
                              "image.toolchain_sha256": tarballs.file_sha256(path)})
    expected = edited(expected, "inputs.image.base.packages",
                      {"libc6": "2.36-9+deb12u13", "gcc-12": "12.2.0-14+deb12u1"})
    expected = edited(expected, "inputs.image.toolchain.packages", tarballs.package_set(path))
    with pytest.raises(InputUnavailable) as failure:
        repro.check_package_sets(config, expected)
    message = str(failure.value)
    assert "base package set" in message and "toolchain" not in message
    assert "libc6 2.36-9+deb12u13 (here: 2.36-9+deb12u14)" in message
    assert "image.base=tarball:PATH image.base_sha256=" in message
    assert failure.value.exit_code == 2


def test_artifact_rows_count_a_published_file_by_its_bytes(layout, tmp_path):
    expected = expected_manifest(layout)
    published = tmp_path / "ci"
    published.mkdir()
    (published / "bzImage").write_bytes(b"changed after the build")
    got = expected
    rows = {row.name: row for row in repro.artifact_rows(expected, published, got)}
    assert not rows["bzImage"].same and "does not match its own manifest" in rows["bzImage"].note
    assert rows["rootfs.ext4"].same  # not published here: the manifest's digest counts
    # A rebuild equal to the changed file still did not reproduce the manifest.
    got = edited(got, "artifacts.bzImage", tarballs.file_sha256(published / "bzImage"))
    rows = {row.name: row for row in repro.artifact_rows(expected, published, got)}
    assert not rows["bzImage"].same
    got = edited(got, ("artifacts", "kmod/extra.ko"), "e" * 64)
    rows = {row.name: row for row in repro.artifact_rows(expected, published, got)}
    assert rows["kmod/extra.ko"].expected is None and not rows["kmod/extra.ko"].same


def test_diffoscope_on_equal_contents_says_so(tmp_path):
    """rootfs.ext4 can differ while the files it holds do not: no report, no crash."""
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "file").write_text("same\n")
    lines = repro._diffoscope(tmp_path / "a", tmp_path / "b", tmp_path / "report.txt")
    assert lines[0].startswith("diffoscope finds the contents equal")
    (tmp_path / "b" / "file").write_text("other\n")
    lines = repro._diffoscope(tmp_path / "a", tmp_path / "b", tmp_path / "report.txt")
    assert any("other" in line for line in lines) and (tmp_path / "report.txt").is_file()


def test_manifest_names_a_git_tree_by_its_commit_only(layout):
    save_build(layout, {SourceRecord: {
        "kind": "git", "resolved": {"repo": "/home/alice/linux", "ref": "v6.12",
                                    "commit": "c" * 40}},
        ConfigRecord: {"fragments": ("/home/alice/extra.config",),
                       "fragment_sha256": {"/home/alice/extra.config": "e" * 64}}})
    text = manifest.dumps(manifest.build(layout))
    assert "/home/alice" not in text and "v6.12" not in text
    inputs = json.loads(text)["inputs"]
    assert inputs["source"]["commit"] == "c" * 40
    assert inputs["config"]["fragments"] == {"extra.config": "e" * 64}


def test_inputs_and_artifacts_are_compared_apart(layout, tmp_path):
    expected = expected_manifest(layout)
    got = edited(expected, "inputs.kernel.toolchain",
                 {"runtime": "docker", "sha256": "5" * 64,
                  "packages": {"gcc-12": "12.2.0-14+deb12u2"}})
    diffs = {d.key: (d.expected, d.got) for d in manifest.differences(expected.inputs,
                                                                      got.inputs)}
    assert diffs == {"kernel.toolchain.runtime": ("host", "docker"),
                     "kernel.toolchain.sha256": (None, "5" * 64),
                     "kernel.toolchain.packages.gcc-12": ("12.2.0-14+deb12u1",
                                                          "12.2.0-14+deb12u2")}
    assert all(row.same for row in repro.artifact_rows(expected, tmp_path, got))
    assert settings.RUNTIMES == ("host", "docker")


def test_reproducer_runs_make_where_the_kernel_step_did(layout, make_settings):
    config = make_settings()
    save_build(layout)
    host = reproducer.render(config)
    assert "export KBUILD_BUILD_USER=kvm-pipeline" in host
    assert "make -C \"$OUT\"/src/linux" in host and "docker run" not in host
    save_build(layout, {KernelRecord: {"toolchain": {"runtime": "docker", "sha256": "5" * 64,
                                                     "packages": {}}}})
    container = reproducer.render(config)
    run = ('docker run --rm --network none --user "$(id -u):$(id -g)" -v "$OUT":/build '
           '-v "$PROJECT":/project:ro')
    assert run in container
    assert f"kvm-pipeline/toolchain:{'5' * 16} make -C /build/src/linux O=/build/kbuild" \
        in container
    assert "INSTALL_MOD_PATH=/build/staging" in container
    assert 'mkdir -p "$CACHE"/ccache-container' in container  # else dockerd makes it root's
    assert "M=/build/kmod W=1 modules" in container
    # Both package tarballs: beside the script, given, or made by mmdebstrap, then checked.
    for role in ("base", "toolchain"):
        assert f'[ -f "$HERE/{role}.tar" ]' in container
        assert f"docker import \"${role.upper()}_TARBALL\" kvm-pipeline/{role}:" in container


@pytest.mark.parametrize(("plant", "code", "words"), [
    (None, 0, "every input the same, all 5 artifacts identical"),
    ("input", 11, "1 input(s) of the rebuild are not those of"),
    ("artifact", 10, "1 of 5 artifacts differ from"),
])
def test_a_repro_verdict_covers_the_inputs_as_well_as_the_artifacts(make_settings, tmp_path,
                                                                     capsys, plant, code, words):
    """Identical artifacts from other inputs (the source tarball's digest, here) verify
    nothing: exit 11 naming the input; exit 0 only when both match."""
    against = tmp_path / "ci" / "manifest.json"
    s = make_settings(**{"repro.rebuild": "false", "repro.against": str(against)})
    rebuilt = s.layout.repro_build
    rebuilt_layout = make_settings(**{"paths.build": str(rebuilt)}).layout
    save_build(rebuilt_layout)
    manifest.write(rebuilt_layout)
    expected = manifest.load(rebuilt_layout.manifest)
    if plant == "input":
        expected = edited(expected, "inputs.source.sha256", "0" * 64)
    elif plant == "artifact":
        expected = edited(expected, "artifacts.bzImage", "f" * 64)
    against.parent.mkdir()
    against.write_text(manifest.dumps(expected))
    if code:
        with pytest.raises(PipelineError) as failed:
            repro.repro(s)
        assert failed.value.exit_code == code and words in str(failed.value)
        if plant == "input":
            assert "source.sha256" in str(failed.value)
            assert "all 5 artifacts are identical" in str(failed.value)
    else:
        repro.repro(s)
        assert words in capsys.readouterr().out
    report = json.loads(s.layout.repro_report.read_text())
    assert report["verdict"] == {None: "identical", "input": "inputs differ",
                                 "artifact": "artifacts differ"}[plant]


@pytest.mark.parametrize("runtime", ["host", "docker"])
def test_the_build_files_keep_their_bytes(make_settings, runtime):
    """kernel.json, image.json, manifest.json and reproducer.sh are artifacts: the same
    records must give the same bytes as the pipeline's earlier versions wrote
    (tests/golden/build/, checked identical to those versions' output)."""
    config = make_settings()
    golden = Path(__file__).parent / "golden" / "build"
    changes = {} if runtime == "host" else {KernelRecord: {"toolchain": {
        "runtime": "docker", "sha256": "5" * 64, "packages": {}}}}
    save_build(config.layout, changes)
    script = reproducer.render(config).replace(str(config.root), "/ROOT")
    assert script == (golden / f"reproducer-{runtime}.sh").read_text()
    if runtime == "host":
        assert manifest.dumps(manifest.build(config.layout)) == \
            (golden / "manifest.json").read_text()
        assert config.layout.kernel_json.read_text() == (golden / "kernel.json").read_text()
        assert config.layout.image_json.read_text() == (golden / "image.json").read_text()
