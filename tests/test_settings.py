import pytest
from helpers import ROOT

from pipeline import settings
from pipeline.errors import SettingsError


def test_embedded_default_needs_no_file(tmp_path):
    s = settings.load(tmp_path)
    assert s.source.kind == "debian"
    assert s.source.package == "linux-source-6.12"
    assert s.kernel.variant == "default"
    assert s.patch.enabled is True
    assert s.layout.build == tmp_path / "build"


def test_settings_are_frozen(tmp_path):
    s = settings.load(tmp_path)
    with pytest.raises(AttributeError):
        s.kernel.variant = "debug"


def test_user_file_then_command_line_win(tmp_path):
    (tmp_path / "pipeline.toml").write_text('[kernel]\nvariant = "debug"\njobs = 3\n')
    s = settings.load(tmp_path, {"kernel.jobs": "5", "patch.enabled": "false"})
    assert s.kernel.variant == "debug"
    assert s.kernel.jobs == 5
    assert s.patch.enabled is False


def test_named_settings_file(tmp_path):
    (tmp_path / "other.toml").write_text('[kernel]\nfragments = ["a.config"]\n')
    (tmp_path / "a.config").write_text("CONFIG_A=y\n")
    s = settings.load(tmp_path, {"settings": "other.toml"})
    assert s.kernel.fragments == ("a.config",)


def test_list_override_is_comma_separated(tmp_path):
    for name in ("x.config", "y.config"):
        (tmp_path / name).write_text("CONFIG_A=y\n")
    s = settings.load(tmp_path, {"kernel.fragments": "x.config,y.config"})
    assert s.kernel.fragments == ("x.config", "y.config")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[kernel]\nvarient = 1\n", r"unknown key kernel\.varient in .*pipeline\.toml.*variant"),
        ("[kernl]\n", r"unknown section \[kernl\] in .*pipeline\.toml"),
        ('[kernel]\nvariant = "fast"\n', r"kernel\.variant in .*pipeline\.toml is 'fast'.*default, debug"),
        ('[kernel]\njobs = "two"\n', r"kernel\.jobs .* whole number"),
        ("[patch]\nenabled = 1\n", r"patch\.enabled .* true or false"),
        ("[kernel\n", r"not valid TOML"),
    ],
)
def test_bad_file_names_key_and_file(tmp_path, text, expected):
    (tmp_path / "pipeline.toml").write_text(text)
    with pytest.raises(SettingsError, match=expected):
        settings.load(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"kernel.colour": "red"}, r"unknown setting kernel\.colour=red on the command line"),
        ({"jobs": "2"}, r"unknown setting jobs=2"),
        ({"kernel.jobs": "many"}, r"kernel\.jobs=many .* whole number"),
        ({"patch.enabled": "maybe"}, r"patch\.enabled=maybe .* true or false"),
        ({"source.kind": "ftp"}, r"source\.kind .* 'ftp'.*debian, tarball, local, git"),
        ({"source.kind": "tarball"}, r"needs source\.url"),
        ({"source.kind": "tarball", "source.url": "https://x/y.tar.xz"}, r"needs source\.sha256"),
        ({"source.kind": "local", "source.path": "k.tar", "source.sha256": "abc"},
         r"source\.sha256 .* 64 hex digits"),
        ({"source.kind": "git"}, r"needs source\.repo"),
        ({"source.signature_url": "https://x/y.sign"}, r"signature_url and source\.keyring"),
        ({"settings": "missing.toml"}, r"missing\.toml does not exist"),
        ({"boot.smp": "0"}, r"boot\.smp in the command line is 0: it must be at least 1"),
        ({"boot.accel": "hvf"}, r"boot\.accel .* auto, kvm, tcg"),
        ({"kselftest.inject": "kprobes"}, r"kselftest\.inject .* timer, targeted, both"),
        ({"image.uuid": "not-a-uuid"}, r"image\.uuid .* UUID"),
        ({"test.repeat": "0"}, r"test\.repeat in the command line is 0: it must be at least 1"),
        ({"test.cases": "smoke rate"}, r"test\.cases .* comma-separated globs"),
        ({"test.cases": "a=b"}, r"test\.cases .*no spaces, quotes or '='"),
        ({"test.min_exercised_percent": "101"},
         r"test\.min_exercised_percent in the command line is 101: it is a share .* 0 to 100"),
        ({"test.min_exercised": "35"}, r"unknown setting test\.min_exercised=35"),
        ({"kselftest.exercised_at": "0"},
         r"kselftest\.exercised_at in the command line is 0: it must be at least 1"),
    ],
)
def test_bad_override_names_key(tmp_path, overrides, expected):
    with pytest.raises(SettingsError, match=expected):
        settings.load(tmp_path, overrides)


def test_digest_covers_only_named_sections(tmp_path):
    base = settings.load(tmp_path)
    other_jobs = settings.load(tmp_path, {"kernel.jobs": "7"})
    assert base.digest("patch") == other_jobs.digest("patch")
    assert base.digest("kernel") != other_jobs.digest("kernel")


def test_every_key_is_documented():
    """Each key has its words in the schema, and docs/settings.md's table is the schema's."""
    for name, _default, doc in settings.documented_keys():
        assert len(doc.split()) >= 3, f"{name} has no description"
    text = (ROOT / "docs" / "settings.md").read_text()
    assert settings.REFERENCE_MARKER in text
    table = text.split(settings.REFERENCE_MARKER, 1)[1].split("\n\n", 1)[0]
    assert table.rstrip("\n") + "\n" == settings.reference_table()


def test_a_nested_runs_settings_are_validated_again(tmp_path):
    base = settings.load(tmp_path)
    cell = settings.derive(base, {"boot": {"smp": 4}}, "matrix cell x")
    assert cell.boot.smp == 4 and cell.kernel == base.kernel
    with pytest.raises(SettingsError, match=r"boot\.smp in matrix cell x is 0: it must be at "
                                            "least 1"):
        settings.derive(base, {"boot": {"smp": 0}}, "matrix cell x")
    with pytest.raises(SettingsError, match=r"unknown setting boot\.colour"):
        settings.derive(base, {"boot": {"colour": "red"}}, "matrix cell x")


def test_matrix_settings_are_toml_tables(tmp_path):
    (tmp_path / "pipeline.toml").write_text(
        '[matrix.settings."*-debug-*"]\nboot.boot_timeout = 400\nkselftest.build = false\n')
    s = settings.load(tmp_path)
    assert s.matrix.settings == {"*-debug-*": {"boot": {"boot_timeout": 400},
                                               "kselftest": {"build": False}}}


def test_matrix_settings_are_checked_key_by_key_at_load(tmp_path):
    """Each value by its key's type and rule; rules between keys hold per cell, so two
    entries that only together make a valid pair load."""
    pair = ('{"*-debug-*" = {image.base = "tarball:/x.tar"}, '
            '"*" = {image.base_sha256 = "' + "a" * 64 + '"}}')
    assert settings.load(tmp_path, {"matrix.settings": pair}).matrix.settings["*"]
    assert settings.load(tmp_path, {"matrix.settings": ""}).matrix.settings == {}
    with pytest.raises(SettingsError, match=r"boot\.smp in matrix\.settings\['x'\] in the "
                                            r"command line is 0: it must be at least 1"):
        settings.load(tmp_path, {"matrix.settings": '{"x" = {boot.smp = 0}}'})


def test_the_old_matrix_settings_form_says_how_to_write_it_now(tmp_path):
    (tmp_path / "pipeline.toml").write_text(
        '[matrix]\nsettings = ["*-debug-*:boot.boot_timeout=400", "6.1-*:test.cases=smoke"]\n')
    with pytest.raises(SettingsError) as refused:
        settings.load(tmp_path)
    assert str(refused.value).endswith(
        '[matrix.settings."*-debug-*"]\nboot.boot_timeout = 400\n'
        '[matrix.settings."6.1-*"]\ntest.cases = "smoke"')
