"""Load the settings from TOML and the environment, failing with clear words."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from config.errors import ConfigError
from config.settings import Settings

DEFAULT_CONFIG_PATH = Path("/etc/xrayd/xrayd.toml")


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _settings_with_file(data: dict[str, Any]) -> type[Settings]:
    """A Settings subclass whose file source is ``data`` (env still wins over the file)."""

    class _FileSource(PydanticBaseSettingsSource):
        def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
            return data.get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(data)

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _FileSource(settings_cls))

    return _FromFile


def load_settings(path: Path | None = None) -> Settings:
    """Read ``path`` (or ``/etc/xrayd/xrayd.toml`` when present, else built-in defaults).

    ``XRAYD_SECTION__KEY`` environment variables override the file. Raises :class:`ConfigError`
    whose message names every offending key.
    """
    source = "built-in defaults"
    data: dict[str, Any] = {}
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        source = str(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except PermissionError:
            raise ConfigError(f"configuration file {path} is not readable") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    try:
        settings = _settings_with_file(data)()
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    return Settings.model_validate(settings.model_dump())
