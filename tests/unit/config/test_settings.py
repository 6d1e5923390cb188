from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "xrayd.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xrayd.toml"
    path.write_text(text)
    return path


def test_example_documents_every_key_and_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.node.ae_title == "XRAYD"
    assert settings.node.callers[0].host == "10.1.2.3"
    assert settings.destinations[0].send == ["sr", "sc", "gsps", "kos"]
    text = EXAMPLE.read_text()
    for section, model in settings:
        if section == "destinations":
            continue
        for key in type(model).model_fields:
            if key != "callers":
                assert f"\n{key} =" in text, f"{section}.{key} is not documented in the example"


def test_defaults_give_embedded_sqlite(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, f'[storage]\ndata_dir = "{tmp_path}"\n'))
    assert settings.database_url == f"sqlite:///{tmp_path}/xrayd.sqlite3"
    assert settings.spool_dir == tmp_path / "spool"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "[node]\naetitle = 'X'\n"))
    assert "node.aetitle: unknown key" in str(err.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nodes: unknown key"):
        load_settings(write(tmp_path, "[nodes]\nport = 1\n"))


@pytest.mark.parametrize(
    ("title", "why"),
    [
        ("A" * 17, "at most 16"),
        ("BAD\\\\AE", "backslash"),
        ("BAD\\u0007", "control"),
        ("   ", "empty"),
    ],
)
def test_bad_ae_title_is_named(tmp_path: Path, title: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f'[node]\nae_title = "{title}"\n'))
    assert "node.ae_title" in str(err.value)
    assert why in str(err.value)


def test_bad_caller_and_destination_titles_are_named(tmp_path: Path) -> None:
    text = (
        '[[node.callers]]\nae_title = "WAY_TOO_LONG_CALLER"\n'
        '[[destinations]]\nname = "p"\nae_title = "P\\\\Q"\nhost = "h"\nport = 104\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert "node.callers.0.ae_title" in str(err.value)
    assert "destinations.0.ae_title" in str(err.value)


def test_destination_send_kinds_are_checked(tmp_path: Path) -> None:
    text = '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\nsend = ["xml"]\n'
    with pytest.raises(ConfigError, match=r"destinations\.0\.send\.0"):
        load_settings(write(tmp_path, text))


def test_duplicate_destination_names(tmp_path: Path) -> None:
    one = '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\n'
    with pytest.raises(ConfigError, match="duplicate name"):
        load_settings(write(tmp_path, one + one))


def test_port_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.port"):
        load_settings(write(tmp_path, "[node]\nport = 70000\n"))


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRAYD_NODE__PORT", "4104")
    monkeypatch.setenv("XRAYD_STUDY__QUIET_SECONDS", "1.5")
    settings = load_settings(write(tmp_path, "[node]\nport = 104\nae_title = 'FILEAE'\n"))
    assert settings.node.port == 4104
    assert settings.node.ae_title == "FILEAE"
    assert settings.study.quiet_seconds == 1.5


def test_bad_environment_value_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRAYD_NODE__MAX_ASSOCIATIONS", "many")
    with pytest.raises(ConfigError, match=r"node\.max_associations"):
        load_settings(write(tmp_path, ""))


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[node\n"))


def test_database_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="storage"):
        load_settings(write(tmp_path, '[storage]\ndatabase_url = "mysql://x"\n'))
