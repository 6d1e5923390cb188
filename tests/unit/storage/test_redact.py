"""The scrubber: what an exception or a third-party log line may quote is withheld; what names
no patient (types, VRs, tags, standard UIDs, peers, sizes) is kept."""

from __future__ import annotations

import pytest
from pydicom import config as pydicom_config
from pydicom.valuerep import validate_value

from dicom_node.received import uid_log_tag
from storage.redact import (
    MASK,
    MAX_TEXT,
    describe_exception,
    format_exception,
    redact,
    redact_identifiers,
    uid_handle,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.77123456789012345678"


def pydicom_error(vr: str, value: object) -> ValueError:
    """The ValueError pydicom raises (and, in its default mode, warns) for an invalid value."""
    with pytest.raises(ValueError) as caught:
        validate_value(vr, value, pydicom_config.RAISE)
    return caught.value


@pytest.mark.parametrize(
    ("vr", "value", "kept"),
    [
        ("DA", "19991340", "Invalid value for VR DA (withheld)."),
        ("DA", "ZZSECRET^PATIENT", "Invalid value for VR DA (withheld)."),
        ("UI", "1.2.826.0.1.3680043.9.31337.ZZ", "Invalid value for VR UI (withheld)."),
        ("IS", "MRN-31337-SECRET", "allowed for VR IS."),
    ],
)
def test_pydicom_value_errors_keep_the_vr_and_drop_the_value(
    vr: str, value: str, kept: str
) -> None:
    exc = pydicom_error(vr, value)
    assert value in str(exc)  # what pydicom says
    described = describe_exception(exc)
    assert described.startswith("ValueError: ") and kept in described
    assert value not in described and "ZZSECRET" not in described and "31337" not in described


def test_uids_become_the_listeners_hash_and_standard_uids_stay() -> None:
    text = redact(
        f"study {STUDY_UID} in syntax 1.2.840.10008.1.2.1 of class 1.2.840.10008.5.1.4.1.1.1.1"
    )
    assert text == (
        f"study {uid_handle(STUDY_UID)} in syntax 1.2.840.10008.1.2.1"
        " of class 1.2.840.10008.5.1.4.1.1.1.1"
    )
    assert uid_handle(STUDY_UID) == f"uid:{uid_log_tag(STUDY_UID)}"
    # a quoted UID is hashed, not dropped (KeyError's message is the key's repr)
    assert describe_exception(KeyError(STUDY_UID)) == f"KeyError: '{uid_handle(STUDY_UID)}'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(0010,0010) Patient's Name PN: 'Doe^Jane'", f"(0010,0010) Patient's Name PN: '{MASK}'"),
        (
            "(0010,0010) PN [ZZSECRET^PATIENT] # PatientName",
            f"(0010,0010) PN [{MASK}] # PatientName",
        ),
        (
            'Value "70kg" is not valid for elements with a VR of DS',
            "a value (withheld) is not valid for elements with a VR of DS",
        ),
        ("patient MRN-31337-SECRET born 19870315", f"patient MRN-{MASK}-SECRET born {MASK}"),
        ("born 1987-03-15", f"born {MASK}"),
        ("bytes b'\\x00ZZ' and \"Doe\"", f"bytes b'{MASK}' and \"{MASK}\""),
        # kept: words with apostrophes, sizes, small numbers, peers, statuses, carets alone
        (
            "pixel data (50000 bytes) doesn't match the expected length (131072 bytes)",
            "pixel data (50000 bytes) doesn't match the expected length (131072 bytes)",
        ),
        (
            "PACS@127.0.0.1:11112: status 0xA700 (out of resources), attempt 3",
            "PACS@127.0.0.1:11112: status 0xA700 (out of resources), attempt 3",
        ),
        ("    ^^^^^", "    ^^^^^"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_database_texts_lose_statement_parameters_and_key_values() -> None:
    text = (
        '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "uq"\n'
        f"DETAIL:  Key (study_instance_uid)=({STUDY_UID}) already exists.\n"
        "[SQL: INSERT INTO studies (study_instance_uid) VALUES (%(u)s)]\n"
        f"[parameters: {{'u': '{STUDY_UID}'}}]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    out = redact(text)
    assert STUDY_UID not in out and uid_handle(STUDY_UID) not in out
    assert "parameters" not in out and "INSERT" not in out
    assert "duplicate key value violates unique constraint" in out
    assert f"Key (study_instance_uid)=({MASK})" in out


def test_the_light_pass_keeps_xrayds_own_words() -> None:
    text = redact_identifiers(f"stored 3f2a from 'MODALITY' ({STUDY_UID}, Doe^Jane, 262144 bytes)")
    assert text == f"stored 3f2a from 'MODALITY' ({uid_handle(STUDY_UID)}, {MASK}, 262144 bytes)"


def test_a_description_is_one_bounded_line() -> None:
    exc = ValueError("first 'Doe' line\nsecond line " + "x" * 2000)
    described = describe_exception(exc)
    assert "\n" not in described and len(described) <= len("ValueError: ") + 500
    assert described.startswith(f"ValueError: first '{MASK}' line second line")
    assert describe_exception(ValueError()) == "ValueError"


def test_a_huge_text_is_cut_before_it_is_redacted() -> None:
    text = "x" * (MAX_TEXT + 10) + " Doe^Jane"
    out = redact(text)
    assert out.endswith("[19 more characters withheld]") and "Doe" not in out


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_exception_that_cannot_be_printed_is_named() -> None:
    assert describe_exception(Unprintable()) == "Unprintable"


#: values from a data set (built here so that no source line shown in a traceback holds them)
BIRTH_DATE = "1987" + "1345x"
NAME = "ZZSECRET" + "^PATIENT"


def _raise_chain() -> None:
    try:
        int(BIRTH_DATE)
    except ValueError as exc:
        raise RuntimeError(f"while reading {NAME!r}") from exc


def test_a_traceback_keeps_frames_and_withholds_messages() -> None:
    with pytest.raises(RuntimeError) as caught:
        _raise_chain()
    text = format_exception(caught.value)
    assert BIRTH_DATE not in text and NAME not in text
    assert text.count("Traceback (most recent call last):") == 2
    assert "in _raise_chain" in text and "int(BIRTH_DATE)" in text  # frames and their code
    assert "The above exception was the direct cause of the following exception:" in text
    assert text.splitlines()[-1] == f"RuntimeError: while reading '{MASK}'"
    assert f"ValueError: invalid literal for int() with base 10: '{MASK}'" in text
