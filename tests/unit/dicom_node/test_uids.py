"""xrayd's own DICOM identity: derived UIDs (2.25 or the site's root), implementation UID/name."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, PYDICOM_ROOT_UID, UID

from config.errors import ConfigError
from config.loader import load_settings
from config.settings import MAX_UID_ROOT_LENGTH, check_uid_root
from dicom_node.uids import (
    IMPLEMENTATION_CLASS_UID,
    XRAYD_IMPLEMENTATION_UUID,
    UidRoot,
    derived_uid,
    file_meta,
    implementation_version_name,
    version_name_of,
)

SITE_ROOT = "1.2.826.0.1.1234567.3"
LONGEST_ROOT = "1." + "9" * (MAX_UID_ROOT_LENGTH - 2)
PARTS = ("1.2.3.4.5", "0123abcd", "sr")


def valid(uid: str) -> bool:
    return bool(UID(uid).is_valid) and len(uid) <= 64


def test_deterministic_and_valid_without_a_root() -> None:
    uid = derived_uid(None, *PARTS)
    assert uid == derived_uid(None, *PARTS)
    assert valid(uid)
    assert uid.startswith("2.25.")
    assert not uid.startswith(PYDICOM_ROOT_UID)


def test_2_25_form_is_a_uuid_integer() -> None:
    uid = derived_uid(None, *PARTS)
    digits = uid.removeprefix("2.25.")
    assert digits.isdigit() and (digits == "0" or not digits.startswith("0"))
    value = int(digits)
    assert 0 <= value < 2**128
    as_uuid = uuid.UUID(int=value)
    assert as_uuid.version == 8
    assert as_uuid.variant == uuid.RFC_4122


@pytest.mark.parametrize("root", [SITE_ROOT, "2.16.840.1.113883.3.9999", LONGEST_ROOT, "1"])
def test_configured_root_is_used(root: str) -> None:
    uid = derived_uid(root, *PARTS)
    assert uid.startswith(root + ".")
    assert uid == derived_uid(root, *PARTS)
    assert valid(uid), uid
    suffix = uid.removeprefix(root + ".")
    assert suffix.isdigit() and not suffix.startswith("0")
    assert len(suffix) >= 23  # room left by the longest root allowed
    assert uid != derived_uid(None, *PARTS)


@pytest.mark.parametrize("root", [None, SITE_ROOT, LONGEST_ROOT])
def test_different_parts_give_different_uids(root: str | None) -> None:
    variants = [
        PARTS,
        ("1.2.3.4.5", "0123abcd", "sc"),
        ("1.2.3.4.5", "0123abcd", "sr", "series"),
        ("1.2.3.4.", "50123abcd", "sr"),  # the same characters, split elsewhere
        ("1.2.3.4.50123abcdsr",),
    ]
    uids = {derived_uid(root, *parts) for parts in variants}
    assert len(uids) == len(variants)
    many = {derived_uid(root, "study", str(n)) for n in range(2000)}
    assert len(many) == 2000
    assert all(valid(uid) for uid in many)


def test_uid_root_helper_derives_under_its_root() -> None:
    assert UidRoot()(*PARTS) == derived_uid(None, *PARTS)
    assert UidRoot(SITE_ROOT)(*PARTS) == derived_uid(SITE_ROOT, *PARTS)
    with pytest.raises(ValueError, match="leading zeros"):
        UidRoot("1.02.3")


def test_no_parts_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        derived_uid(None)


@pytest.mark.parametrize(
    ("root", "why"),
    [
        ("", "blank"),
        ("1.2.x.4", "numbers separated by dots"),
        ("1.2..4", "empty"),
        ("1.2.3.", "empty"),
        (".1.2", "empty"),
        ("1.2.03", "leading zeros"),
        ("1." + "1" * MAX_UID_ROOT_LENGTH, f"at most {MAX_UID_ROOT_LENGTH}"),
        ("3.1.2", "start with 0, 1 or 2"),
        (PYDICOM_ROOT_UID.rstrip("."), "pydicom's root"),
        ("2.25", "2.25 is for UUID-derived"),
        ("2.25.1234", "2.25 is for UUID-derived"),
    ],
)
def test_invalid_roots_are_rejected_with_a_reason(root: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_uid_root(root)
    with pytest.raises(ValueError, match=why):
        derived_uid(root, *PARTS)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xrayd.toml"
    path.write_text(text)
    return path


def test_settings_take_the_root_and_default_to_none(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[node]\n")).node.uid_root is None
    assert load_settings(write(tmp_path, '[node]\nuid_root = ""\n')).node.uid_root is None
    settings = load_settings(write(tmp_path, f'[node]\nuid_root = " {SITE_ROOT} "\n'))
    assert settings.node.uid_root == SITE_ROOT


@pytest.mark.parametrize(
    ("root", "why"),
    [
        ("1.2.x", "numbers separated by dots"),
        ("1.2.0003", "leading zeros"),
        ("1." + "2" * 60, "at most 40 characters"),
    ],
)
def test_settings_refuse_an_invalid_root_at_start_up(tmp_path: Path, root: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f'[node]\nuid_root = "{root}"\n'))
    assert "node.uid_root" in str(err.value)
    assert why in str(err.value)


def test_settings_root_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XRAYD_NODE__UID_ROOT", SITE_ROOT)
    assert load_settings(write(tmp_path, "[node]\n")).node.uid_root == SITE_ROOT
    monkeypatch.setenv("XRAYD_NODE__UID_ROOT", "1.2.bad")
    with pytest.raises(ConfigError, match="uid_root"):
        load_settings(write(tmp_path, "[node]\n"))


def test_implementation_identity_is_xrayds() -> None:
    assert f"2.25.{XRAYD_IMPLEMENTATION_UUID.int}" == IMPLEMENTATION_CLASS_UID
    assert IMPLEMENTATION_CLASS_UID == "2.25.10614489016505368805909697121534736762"
    assert valid(IMPLEMENTATION_CLASS_UID)
    assert IMPLEMENTATION_CLASS_UID != PYDICOM_IMPLEMENTATION_UID
    name = implementation_version_name()
    assert name.startswith("XRAYD_") and len(name) <= 16
    assert name.isascii() and " " not in name and "\\" not in name


def test_version_name_from_the_package_version() -> None:
    assert version_name_of("0.1.0") == "XRAYD_0_1"
    assert version_name_of("12.34.5.dev1") == "XRAYD_12_34"
    assert version_name_of("1.2") == "XRAYD_1_2"
    assert version_name_of("unknown") == "XRAYD"
    assert version_name_of("123456.7890123") == "XRAYD"  # would pass 16 characters


def test_file_meta_names_xrayd() -> None:
    meta = file_meta("1.2.840.10008.5.1.4.1.1.88.34", derived_uid(None, *PARTS))
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == implementation_version_name()
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
