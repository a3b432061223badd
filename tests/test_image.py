"""Image step pieces that need no engine: the template and engine errors."""

import pytest
from helpers import ROOT

from pipeline import image, settings
from pipeline.errors import EnvironmentProblem


def project_settings():
    return settings.load(ROOT)


def test_dockerfile_renders_strictly():
    s = project_settings()
    text = image.render_dockerfile(s, base_image="kvm-pipeline/base:abc",
                                   toolchain_image="kvm-pipeline/toolchain:def",
                                   base_has_packages=True, release="6.12.117",
                                   kvm_patch="applied", with_kmod=True, with_selftests=True)
    assert "FROM kvm-pipeline/toolchain:def AS builder" in text
    assert "\nFROM kvm-pipeline/base:abc\n" in text
    # The package tarballs hold everything: nothing is installed from the network.
    assert "apt-get" not in text
    assert "COPY modules/ /lib/modules/6.12.117/" in text
    assert "COPY kmod/ /lib/modules/6.12.117/extra/" in text
    assert "COPY selftests/ /usr/local/lib/kselftest/" in text
    assert 'echo "applied" > /etc/pipeline/kvm-patch' in text
    without = image.render_dockerfile(s, base_image="b", toolchain_image="t",
                                      base_has_packages=False, release="r", kvm_patch="none",
                                      with_kmod=False, with_selftests=False)
    assert "kmod/" not in without.split("FROM b")[1]
    assert "selftests/" not in without
    # A registry base lacks kmod: the final stage installs it.
    assert "apt-get install -y --no-install-recommends kmod" in without


def test_dockerfile_missing_value_is_an_error():
    with pytest.raises(image.ImageError, match="undefined value"):
        image.render_dockerfile(project_settings(), base_image="b", with_kmod=False)


@pytest.mark.parametrize("address", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9"])
def test_docker_host_where_nothing_listens_is_named(monkeypatch, address):
    """The message names the address tried and does not suggest starting the local dockerd."""
    monkeypatch.setenv("DOCKER_HOST", address)
    with pytest.raises(EnvironmentProblem) as failure:
        image.docker_client()
    message = str(failure.value)
    assert f"cannot reach the Docker engine at {address}" in message
    assert "unset DOCKER_HOST" in message and "scripts/setup" not in message
