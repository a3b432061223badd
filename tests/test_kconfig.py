"""Fragment parsing and verification (pure logic; the real merge runs in test_e2e_build)."""

from pathlib import Path

import pytest
from helpers import ROOT

from pipeline import kconfig, settings
from pipeline.errors import ConfigError, SettingsError

FINAL = """\
CONFIG_64BIT=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_PCI=y
CONFIG_KVM=m
CONFIG_LOCALVERSION="-kvm"
# CONFIG_PREEMPT_COUNT is not set
"""


def fragment(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_config_values_and_unset():
    values = kconfig.parse_config(FINAL)
    assert values["CONFIG_KVM"] == "m"
    assert values["CONFIG_LOCALVERSION"] == '"-kvm"'
    assert values["CONFIG_PREEMPT_COUNT"] is None


def test_fragment_with_garbage_names_file_and_line(tmp_path):
    bad = fragment(tmp_path, "bad.config", "CONFIG_A=y\nKVM=m\n")
    with pytest.raises(SettingsError, match=r"bad\.config:2: not a CONFIG_ line"):
        kconfig.requested_options([bad])


def test_later_fragment_wins(tmp_path):
    first = fragment(tmp_path, "a.config", "CONFIG_KVM=y\n")
    second = fragment(tmp_path, "b.config", "CONFIG_KVM=m\n")
    assert kconfig.requested_options([first, second])["CONFIG_KVM"] == ("m", second)


def test_everything_survived(tmp_path):
    frag = fragment(tmp_path, "ok.config",
                    "CONFIG_VIRTIO_PCI=y\nCONFIG_KVM=m\n# CONFIG_PREEMPT_COUNT is not set\n"
                    "# CONFIG_NOT_IN_THIS_KERNEL is not set\nCONFIG_LOCALVERSION=\"-kvm\"\n")
    kconfig.verify(kconfig.requested_options([frag]), kconfig.parse_config(FINAL), tmp_path)


def test_virtio_pci_without_menu_is_named(tmp_path):
    """What olddefconfig does when VIRTIO_MENU is missing: VIRTIO_PCI just vanishes."""
    frag = fragment(tmp_path, "guest.config", "CONFIG_VIRTIO_PCI=y\nCONFIG_KVM=m\n")
    final = kconfig.parse_config("# CONFIG_VIRTIO_MENU is not set\nCONFIG_KVM=m\n")
    with pytest.raises(ConfigError) as err:
        kconfig.verify(kconfig.requested_options([frag]), final, tmp_path)
    assert "CONFIG_VIRTIO_PCI=y (from guest.config) came out as CONFIG_VIRTIO_PCI unset" \
        in str(err.value)
    assert "CONFIG_KVM" not in str(err.value)


def test_unset_request_that_got_selected(tmp_path):
    frag = fragment(tmp_path, "production.config", "# CONFIG_PREEMPT_COUNT is not set\n")
    final = kconfig.parse_config("CONFIG_PREEMPT_COUNT=y\n")
    with pytest.raises(ConfigError, match=r"CONFIG_PREEMPT_COUNT unset .* came out as "
                                          r"CONFIG_PREEMPT_COUNT=y"):
        kconfig.verify(kconfig.requested_options([frag]), final, tmp_path)


def test_module_requested_but_built_in(tmp_path):
    frag = fragment(tmp_path, "kvm.config", "CONFIG_KVM=m\n")
    with pytest.raises(ConfigError, match=r"CONFIG_KVM=m .* came out as CONFIG_KVM=y"):
        kconfig.verify(kconfig.requested_options([frag]), {"CONFIG_KVM": "y"}, tmp_path)


def test_missing_user_fragment_is_a_settings_error():
    with pytest.raises(SettingsError, match=r"kernel\.fragments .* names 'kconfig/nope\.config', "
                                            r"which is not a file"):
        settings.load(ROOT, {"kernel.fragments": "kconfig/nope.config"})


@pytest.mark.parametrize("variant", ["default", "debug"])
def test_variant_fragments_exist(variant):
    s = settings.load(ROOT, {"kernel.variant": variant})
    paths = kconfig.fragment_paths(s, "6.12.57")
    assert [p.name for p in paths[:2]] == ["guest.config", "kvm.config"]
    assert all(p.is_file() for p in paths)


def test_a_line_s_own_fragment_stands_in_for_the_generic_one():
    """6.1 names the return-thunk mitigations without MITIGATION_ and needs SLUB
    for KASAN: its debug fragment replaces kconfig/debug.config there only."""
    s = settings.load(ROOT, {"kernel.variant": "debug"})
    on_6_1 = [p.relative_to(ROOT).as_posix() for p in kconfig.fragment_paths(s, "6.1.192")]
    on_6_12 = [p.relative_to(ROOT).as_posix() for p in kconfig.fragment_paths(s, "6.12.57")]
    assert on_6_1[-1] == "kconfig/6.1/debug.config"
    assert on_6_12[-1] == "kconfig/debug.config"
    assert on_6_1[:-1] == on_6_12[:-1]
    # The config task depends on both, before it knows which tree it gets.
    every = kconfig.all_fragment_paths(s)
    assert ROOT / on_6_1[-1] in every and ROOT / on_6_12[-1] in every
    wanted = kconfig.requested_options([ROOT / on_6_1[-1]])
    assert wanted["CONFIG_RETHUNK"][0] == "y" and "CONFIG_MITIGATION_RETHUNK" not in wanted


def test_line_fragments_ask_for_the_same_debug_kernel():
    """A line's fragment renames options, it does not drop any: every option of
    kconfig/debug.config is asked for, by its name or its old one."""
    renamed = {"CONFIG_MITIGATION_RETPOLINE": "CONFIG_RETPOLINE",
               "CONFIG_MITIGATION_RETHUNK": "CONFIG_RETHUNK",
               "CONFIG_SLUB_TINY": "CONFIG_SLOB"}  # the small allocator, off
    generic = kconfig.requested_options([ROOT / "kconfig/debug.config"])
    for line_fragment in (ROOT / "kconfig").glob("*/debug.config"):
        own = kconfig.requested_options([line_fragment])
        for name, (value, _) in generic.items():
            assert own[renamed.get(name, name)][0] == value, (line_fragment, name)


def test_default_variant_forbids_preempt_count():
    root = ROOT / "kconfig"
    frags = [root / name for name in kconfig.VARIANT_FRAGMENTS["default"]]
    wanted = kconfig.requested_options(frags)
    assert wanted["CONFIG_PREEMPT_COUNT"][0] is None
    assert wanted["CONFIG_PREEMPT_NONE"][0] == "y"
    debug = kconfig.requested_options([root / n for n in kconfig.VARIANT_FRAGMENTS["debug"]])
    assert debug["CONFIG_PREEMPT_COUNT"][0] == "y"
    assert debug["CONFIG_KASAN"][0] == "y"
