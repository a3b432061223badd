"""`doit lava`'s job definition: what it asks of the lab, and its monitor on a console.

A real dispatcher runs the job in test_e2e_lava; here the rendered YAML is read
back and its monitor pattern applied (with Python's re, as LAVA's pexpect
does) to a console such as a guest prints, kernel messages in between.
"""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import ROOT, doit

from pipeline import settings
from pipeline.drivers import lava
from pipeline.errors import SettingsError

URL = "http://lab.example/ci/42/artifacts"

CONSOLE = (
    "[    0.000000] Linux version 6.12.118 (kvm-pipeline@kvm-pipeline)\r\n"
    "pipeline-init: running suite smoke,kvm\r\n"
    "KTAP version 1\r\n1..2\r\n    KTAP version 1\r\n    # Subtest: smoke\r\n"
    "    # duration_ms: 10230\r\n    ok 1 injection_rate\r\n"
    "pipeline-case: smoke.injection_rate pass\r\n"
    "[   21.113052] sched_inject: unloaded\r\n"
    "pipeline-case: smoke.register_integrity fail\r\n"
    "    ok 3 count_only_edits_nothing # SKIP no SVM\r\n"
    "pipeline-case: smoke.count_only_edits_nothing skip\r\n"
    "pipeline-case: kvm.kvm_patch_effect pass\r\n"
    "pipeline-init: suite smoke,kvm exited with status 1\r\n"
    "reboot: Power down\r\n"
)


@pytest.fixture
def make_settings(tmp_path):
    """Settings of this project (its images/lava/ template), build dir in tmp_path."""

    def make(**overrides: str) -> settings.Settings:
        return settings.load(ROOT, {"paths.build": str(tmp_path / "build"),
                                    "paths.cache": str(tmp_path / "cache"), **overrides})

    return make


def job(make_settings, **overrides: str) -> dict:
    config = make_settings(**{"lava.artifacts_url": URL, **overrides})
    return yaml.safe_load(lava.job_text(config, "test"))


def test_the_job_boots_our_kernel_under_tcg_with_the_test_command_line(make_settings):
    data = job(make_settings, **{"test.cases": "smoke", "boot.test_timeout": "600"})
    assert data["device_type"] == "qemu" and data["context"]["arch"] == "x86_64"
    # LAVA's qemu device type adds -enable-kvm -cpu host unless no_kvm.
    assert data["context"]["no_kvm"] is True
    assert data["context"]["extra_options"] == ["-cpu max", "-smp 2", "-no-reboot"]
    assert data["context"]["memory"] == 1024
    deploy = data["actions"][0]["deploy"]
    assert deploy["images"]["kernel"]["url"] == f"{URL}/bzImage"
    assert deploy["images"]["rootfs"]["url"] == f"{URL}/rootfs.ext4.zst"
    assert deploy["images"]["rootfs"]["compression"] == "zstd"
    append = re.search(r'-append "([^"]+)"', deploy["images"]["kernel"]["image_arg"])[1]
    words = append.split()
    assert words[:3] == ["console=ttyS0", "root=/dev/vda", "rw"]
    assert "pipeline.suite=smoke" in words and "pipeline.cases=smoke" in words
    assert "pipeline.lava=1" in words and "pipeline.injection_seconds=10" in words
    assert data["actions"][2]["test"]["timeout"] == {"minutes": 10}
    assert data["timeouts"]["job"]["minutes"] >= 10 + 2


def test_a_kvm_worker_gets_the_device_types_kvm(make_settings):
    data = job(make_settings, **{"lava.kvm": "true", "boot.smp": "4"})
    assert "no_kvm" not in data["context"]
    assert data["context"]["extra_options"] == ["-smp 4", "-no-reboot"]


def test_the_monitor_makes_a_lava_case_of_every_case_line(make_settings):
    monitor = job(make_settings)["actions"][2]["test"]["monitors"][0]
    assert monitor["name"] == lava.SUITE_NAME
    start = re.search(monitor["start"], CONSOLE)
    end = re.search(monitor["end"], CONSOLE)
    assert start and end
    found = [(m["test_case_id"], m["result"])
             for m in re.finditer(monitor["pattern"], CONSOLE[start.end():end.start()])]
    assert found == [("smoke.injection_rate", "pass"), ("smoke.register_integrity", "fail"),
                     ("smoke.count_only_edits_nothing", "skip"), ("kvm.kvm_patch_effect", "pass")]
    # A line cut short (the rest not yet read from the console) is not a case yet.
    assert not re.search(monitor["pattern"], "pipeline-case: smoke.injection_rate pa")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lava.artifacts_url": ""}, "lava.artifacts_url is empty"),
    ({"lava.artifacts_url": "ftp://lab/x"}, "over http:// or https://"),
    ({"lava.artifacts_url": "http://lab/{cell}/artifacts"}, "only a matrix's jobs"),
])
def test_bad_artifact_urls_are_refused(make_settings, overrides, message):
    config = make_settings(**overrides)
    with pytest.raises(SettingsError, match=re.escape(message)):
        lava.job_text(config, "test")


def test_a_matrix_job_needs_and_fills_in_the_cell(make_settings):
    config = make_settings(**{"lava.artifacts_url": URL})
    with pytest.raises(SettingsError, match=re.escape("needs {cell}")):
        lava.artifacts_url(config, "6.1-default-stock")
    cells = make_settings(**{"lava.artifacts_url": "https://ci/42/{cell}/artifacts/"})
    assert lava.artifacts_url(cells, "6.1-default-stock") == \
        "https://ci/42/6.1-default-stock/artifacts"


def test_a_command_line_lava_cannot_carry_is_refused(make_settings):
    config = make_settings(**{"lava.artifacts_url": URL, "boot.cmdline": 'dyndbg="file kvm.c +p"'})
    with pytest.raises(SettingsError, match="double quote or a brace"):
        lava.job_text(config, "test")


def test_doit_lava_refuses_before_building(tmp_path):
    """No URL: `doit lava` fails at once, naming the setting, with nothing fetched."""
    build = tmp_path / "b"
    proc = doit("lava", f"paths.build={build}", check=False)
    assert proc.returncode != 0
    assert "lava.artifacts_url is empty" in proc.stdout + proc.stderr
    assert not (build / "src").exists() and not (build / "records").exists()
