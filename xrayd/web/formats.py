"""How DICOM values read on a page: person names and dates as people write them."""

from __future__ import annotations

__all__ = ["dicom_date", "person_name"]


def person_name(value: str) -> str:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``) as people write it."""
    parts = [p.strip() for p in value.split("=")[0].split("^")]
    family = parts[0] if parts else ""
    rest = " ".join(p for p in parts[1:4] if p)
    if family and rest:
        return f"{family}, {rest}"
    return family or rest


def dicom_date(value: str | None) -> str:
    """A DICOM DA (``20261123``) as ``2026-11-23``; anything else unchanged."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text
