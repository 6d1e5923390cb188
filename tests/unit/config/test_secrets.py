"""Secrets from files and systemd credentials, never from the TOML in plain text.

``storage.database_password_file`` (the PostgreSQL password, given to the driver, never put
into URL text) and ``${CREDENTIALS_DIRECTORY}`` (or any ``${NAME}``) in the paths of secret
files: the TLS files of the listener, the destinations and the web UI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_settings
from config.settings import Settings

from helpers import need_tool

PG_URL = "postgresql+psycopg://xrayd@127.0.0.1:1/xrayd"  # nothing listens on port 1
SECRET = "s3cr3t:/@%pass"  # characters a URL would have to escape


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xrayd.toml"
    path.write_text(text)
    return path


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory standing in for systemd's /run/credentials/xrayd.service."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    return folder


def _pg_settings(tmp_path: Path, password_file: str) -> Settings:
    return load_settings(
        write(
            tmp_path,
            f'[storage]\ndata_dir = "{tmp_path / "data"}"\ndatabase_url = "{PG_URL}"\n'
            f'database_password_file = "{password_file}"\n',
        )
    )


# -- storage.database_password_file ----------------------------------------------------------


def test_password_file_from_credentials_directory(tmp_path: Path, credentials: Path) -> None:
    (credentials / "db-password").write_text(SECRET + "\n")
    settings = _pg_settings(tmp_path, "${CREDENTIALS_DIRECTORY}/db-password")
    assert settings.storage.database_password_file == credentials / "db-password"
    assert settings.database_password() == SECRET  # the first line, without its newline
    assert SECRET not in settings.database_url
    assert SECRET not in repr(settings)


def test_password_goes_to_the_engine_not_into_url_text(tmp_path: Path, credentials: Path) -> None:
    from storage.db import make_engine, masked_url

    (credentials / "db-password").write_text(SECRET)
    settings = _pg_settings(tmp_path, "${CREDENTIALS_DIRECTORY}/db-password")
    engine = make_engine(settings.database_url, password=settings.database_password())
    try:
        assert engine.url.password == SECRET
        assert SECRET not in str(engine.url) and SECRET not in repr(engine)
        assert SECRET not in masked_url(engine)
    finally:
        engine.dispose()


def test_failed_connection_never_shows_the_password(tmp_path: Path, credentials: Path) -> None:
    from storage.errors import DatabaseUnavailableError
    from xrayd.runtime.node import open_storage

    (credentials / "db-password").write_text(SECRET)
    settings = _pg_settings(tmp_path, "${CREDENTIALS_DIRECTORY}/db-password")
    with pytest.raises(DatabaseUnavailableError) as err:
        open_storage(settings, create_if_empty=False, require_current=True)
    assert "storage.database_url" in str(err.value)
    assert SECRET not in str(err.value) and "s3cr3t" not in str(err.value)


def test_password_file_problems_name_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    settings = _pg_settings(tmp_path, "${CREDENTIALS_DIRECTORY}/db-password")  # loads anyway
    with pytest.raises(ConfigError) as err:
        settings.database_password()
    assert "storage.database_password_file" in str(err.value)
    assert "${CREDENTIALS_DIRECTORY} is not set" in str(err.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"storage\.database_password_file: .* is empty"):
        _pg_settings(tmp_path, str(empty)).database_password()


def test_password_file_needs_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage: .*database_password_file needs a postgres"):
        load_settings(write(tmp_path, '[storage]\ndatabase_password_file = "/run/pw"\n'))


def test_password_in_url_and_file_is_refused(tmp_path: Path) -> None:
    text = (
        '[storage]\ndatabase_url = "postgresql+psycopg://x:inline@db/x"\n'
        'database_password_file = "/run/pw"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert "keep the password in the file only" in str(err.value)
    assert "inline" not in str(err.value)


def test_no_password_file_means_none(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, '[storage]\ndatabase_password_file = ""\n'))
    assert settings.storage.database_password_file is None
    assert settings.database_password() is None


def test_password_file_from_the_environment(
    tmp_path: Path, credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit may also say Environment=XRAYD_STORAGE__DATABASE_PASSWORD_FILE=%d/db-password."""
    (credentials / "db-password").write_text(SECRET)
    monkeypatch.setenv("XRAYD_STORAGE__DATABASE_PASSWORD_FILE", str(credentials / "db-password"))
    settings = load_settings(write(tmp_path, f'[storage]\ndatabase_url = "{PG_URL}"\n'))
    assert settings.database_password() == SECRET


# -- ${CREDENTIALS_DIRECTORY} in TLS paths ---------------------------------------------------

TLS_TOML = """
[node.tls]
cert_file = "/etc/xrayd/tls/node.pem"
key_file = "${CREDENTIALS_DIRECTORY}/node.key"
require_client_cert = false

[[destinations]]
name = "pacs"
ae_title = "PACS"
host = "pacs.example.org"
port = 2762

[destinations.tls]
ca_file = "/etc/xrayd/tls/ca.pem"
cert_file = "${CREDENTIALS_DIRECTORY}/client.pem"
key_file = "${CREDENTIALS_DIRECTORY}/client.key"

[web]
tls_cert_file = "/etc/xrayd/web.crt"
tls_key_file = "${CREDENTIALS_DIRECTORY}/web.key"
"""


def test_tls_paths_expand_the_credentials_directory(tmp_path: Path, credentials: Path) -> None:
    settings = load_settings(write(tmp_path, TLS_TOML))
    assert settings.node.tls is not None and settings.destinations[0].tls is not None
    assert settings.node.tls.key_file == credentials / "node.key"
    assert settings.node.tls.cert_file == Path("/etc/xrayd/tls/node.pem")
    dest = settings.destinations[0].tls
    assert dest.cert_file == credentials / "client.pem"
    assert dest.key_file == credentials / "client.key"
    assert settings.web.tls_key_file == credentials / "web.key"


def test_unset_variable_loads_and_the_file_check_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the service (an admin command) the settings load; the node's check names it."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    settings = load_settings(write(tmp_path, TLS_TOML))
    assert settings.node.tls is not None
    assert str(settings.node.tls.key_file) == "${CREDENTIALS_DIRECTORY}/node.key"
    with pytest.raises(ConfigError) as err:
        settings.check_tls_files()
    assert "node.tls.key_file: ${CREDENTIALS_DIRECTORY}/node.key does not exist" in str(err.value)
    assert "${CREDENTIALS_DIRECTORY} is not set" in str(err.value)


def test_only_braced_references_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/x")
    text = TLS_TOML.replace("${CREDENTIALS_DIRECTORY}/node.key", "/srv/$HOME/node.key")
    settings = load_settings(write(tmp_path, text))
    assert settings.node.tls is not None
    assert str(settings.node.tls.key_file) == "/srv/$HOME/node.key"


def test_destination_rows_expand_at_use(credentials: Path) -> None:
    """A registry row seeded by a command run outside the service keeps the reference; the
    service, which has the variable, opens the expanded path."""
    from dicom_node.tls import ClientTLS

    tls = ClientTLS.from_mapping(
        {"ca_file": "${CREDENTIALS_DIRECTORY}/ca.pem", "key_file": "${CREDENTIALS_DIRECTORY}/k"}
    )
    assert tls.ca_file == credentials / "ca.pem" and tls.key_file == credentials / "k"


def test_credential_files_pass_the_start_up_check(tmp_path: Path, credentials: Path) -> None:
    """A real key and certificate read through ${CREDENTIALS_DIRECTORY} pass the check."""
    openssl = need_tool("openssl", install="apt-get install openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=xrayd-test", "-keyout", str(credentials / "node.key"),
         "-out", str(credentials / "node.pem")],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    text = TLS_TOML.split("[[destinations]]")[0].replace(
        "/etc/xrayd/tls/node.pem", "${CREDENTIALS_DIRECTORY}/node.pem"
    )
    load_settings(write(tmp_path, text)).check_tls_files()
