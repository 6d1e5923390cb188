"""xrayd.admin.validation: the one rule set for what administrators type."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.errors import InvalidEntryError
from xrayd.admin import validation


def test_ae_titles_lose_their_padding_and_are_never_cut_short() -> None:
    assert validation.ae_title("  CT 1 ") == "CT 1"
    assert validation.ae_title(" " + "A" * 16 + "  ") == "A" * 16
    for bad, message in (
        ("A" * 17, "AE title must be 1 to 16 characters: at most 16 (got 17)"),
        ("", "AE title must not be empty or only spaces"),
        ("BAD\\AE", "AE title must not contain a backslash or control characters"),
        ("CT\t1", "AE title must not contain a backslash or control characters"),
        ("CTÄ", "AE title must be ASCII"),
    ):
        with pytest.raises(validation.InvalidInputError) as refused:
            validation.ae_title(bad)
        assert str(refused.value) == message
        assert isinstance(refused.value, InvalidEntryError)  # the web answers 422


def test_remote_host_port_kinds_and_token_lifetime() -> None:
    assert validation.remote("PACS@Pacs.Local:104") == ("PACS", "pacs.local", 104)
    assert validation.remote("A@B@10.0.0.1:11112") == ("A@B", "10.0.0.1", 11112)
    for bad in ("PACS", "PACS@host", "PACS@:104", "PACS@host:0", "PACS@host:x", "@host:104"):
        with pytest.raises(validation.InvalidInputError):
            validation.remote(bad)
    assert validation.host("  ") is None and validation.host("MRI.Local") == "mri.local"
    assert validation.port("104") == 104
    assert validation.object_kinds([" sr", "pdf "]) == ("sr", "pdf")
    with pytest.raises(validation.InvalidInputError, match="unknown object kind"):
        validation.object_kinds(["mp4"])
    with pytest.raises(validation.InvalidInputError, match="at least one object kind"):
        validation.object_kinds([])
    assert validation.token_lifetime(None) is None
    assert validation.token_lifetime(1.5) == timedelta(days=1.5)
    for days in (0, -1, 3651):
        with pytest.raises(validation.InvalidInputError, match="at most 3650"):
            validation.token_lifetime(days)
