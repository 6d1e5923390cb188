"""Texts without patient data: exception descriptions and log messages, made safe to keep.

Exception texts are not ours to trust: pydicom quotes the invalid value it found (``Invalid
value for VR DA: '19991340'``), a database error carries its statement's parameters, a
``KeyError`` is the missing key itself. Whatever is stored (``jobs.last_error``, an outbox
row's ``last_error``, a training run's ``error``) or logged goes through this module first.

What is kept is an allow-list of shapes that carry no identifiers: the exception's type, the
words of its message, DICOM tags such as ``(0010,0010)``, VR names, small numbers, standard
DICOM UIDs (``1.2.840.10008.…``: SOP classes, transfer syntaxes), IPv4 addresses with their
ports, and byte counts (``131072 bytes``). What could identify a patient or a study is replaced:

* other UIDs by a short, stable hash (``uid:`` and 12 hex digits, the same hash the listener
  logs), so log lines stay correlatable without naming the study;
* quoted values (``'…'``, ``"…"``, ``b'…'``) by ``'***'``;
* person names in DICOM form (``FAMILY^GIVEN``) by ``***``;
* dates (``19991231``, ``1999-12-31``) and other runs of five or more digits by ``***``;
* a database error's statement, parameters and ``DETAIL`` values (``Key (col)=(…)``).

Pure functions on strings; nothing here reads configuration, the database or the network.
"""

from __future__ import annotations

import hashlib
import re
import traceback

__all__ = [
    "MASK",
    "describe_exception",
    "format_exception",
    "redact",
    "redact_identifiers",
    "uid_handle",
]

#: What a withheld value is replaced with.
MASK = "***"
#: At most this many characters of an exception's description.
MAX_DESCRIPTION = 500
#: Longer texts are cut to this many characters before they are redacted.
MAX_TEXT = 8000

#: Standard DICOM UIDs (SOP classes, transfer syntaxes, coding schemes) name no patient.
_STANDARD_UID_ROOT = "1.2.840.10008."

#: An IPv4 address with its port ("127.0.0.1:11112"): a peer, not a patient.
_HOST_PORT = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}:\d{1,5}(?![\d.])")
_UID = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w])")
_IPV4 = re.compile(r"^(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}$")
_HANDLE = re.compile(r"uid:[0-9a-f]{12}")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
#: SQLAlchemy appends the statement, its parameters and a link after the driver's message.
_SQL_TAIL = re.compile(r"\[(?:SQL|parameters|SQL parameters hidden)[: ].*", re.DOTALL)
_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
#: PostgreSQL's "DETAIL:  Key (study_instance_uid)=(1.2.3) already exists."
_KEY_VALUE = re.compile(r"\)=\((?:[^()]|\([^()]*\))*\)")
#: A quoted value: not an apostrophe inside a word ("doesn't"), optionally a bytes literal.
_QUOTED = re.compile(
    r"(?<![A-Za-z0-9_])(b?)(?:'((?:[^'\\\n]|\\.)*)'|\"((?:[^\"\\\n]|\\.)*)\")(?![A-Za-z0-9_])"
)
#: A token (tested for DICOM person names: components joined by carets, as in data set dumps).
_TOKEN = re.compile(r"[^\s'\"=,;:()\[\]{}<>|]+")
_ISO_DATE = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)")
#: Dates (YYYYMMDD), times with fractions, patient or accession numbers; not "N bytes".
_LONG_NUMBER = re.compile(r"(?<!\d)\d{5,}(?!\d)(?! bytes)")

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"

#: Known messages, rewritten to what they say without the value they quote.
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    # pydicom.valuerep: f"Invalid value for VR {vr}: {value!r}." (+ a link to the standard)
    (
        re.compile(
            r"Invalid value for VR ([A-Z]{2}): "
            r"(?:b?'(?:[^'\\\n]|\\.)*'|b?\"(?:[^\"\\\n]|\\.)*\"|[^\s]*?)\.?"
            r"(?: Please see <[^>\n]*> for allowed values for each VR\.)?(?=\s|$)"
        ),
        r"Invalid value for VR \1 (withheld).",
    ),
    # pydicom.valuerep DS/IS: f'Value "{self}" is not valid for elements with a VR of DS'
    (
        re.compile(r'Value "[^"\n]*" is not valid for elements with a VR of ([A-Z]{2})'),
        r"a value (withheld) is not valid for elements with a VR of \1",
    ),
)


def uid_handle(uid: str) -> str:
    """``uid:`` and the first 12 hex digits of the UID's SHA-256 (as the listener's logs)."""
    return "uid:" + hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


def redact_identifiers(text: str) -> str:
    """The light pass for xrayd's own log messages: UIDs hashed, person names in DICOM form,
    database parameters and key values withheld; quoted words and numbers are kept (xrayd's
    own messages name AE titles, counts and ids, never patient data)."""
    text = _PARAMETERS.sub("[parameters withheld]", _capped(text))
    text = _KEY_VALUE.sub(f")=({MASK})", text)
    text = _UID.sub(_uid_replacement, text)
    return _TOKEN.sub(_person_name_replacement, _capped(text))


def redact(text: str) -> str:
    """``text`` with anything that could identify a patient or a study replaced (see the
    module's description); for texts that are not ours (exceptions, third-party logs)."""
    text = _capped(text)
    for pattern, replacement in _KNOWN:
        text = pattern.sub(replacement, text)
    text = _SQL_TAIL.sub(" [SQL withheld]", text)
    text = _KEY_VALUE.sub(f")=({MASK})", text)
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x00{len(kept) - 1}\x00"

    text = _HOST_PORT.sub(lambda m: keep(m.group(0)), text)
    text = _UID.sub(lambda m: keep(_uid_replacement(m)), text)
    text = _QUOTED.sub(lambda m: _quoted_replacement(m, kept), text)
    text = _TOKEN.sub(_person_name_replacement, text)
    text = _ISO_DATE.sub(MASK, text)
    text = _LONG_NUMBER.sub(MASK, text)
    return _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], text)


def describe_exception(exc: BaseException) -> str:
    """One line safe to store or log: the exception's type and its redacted message.

    A database error (one with an ``orig`` driver exception, as SQLAlchemy's) is described by
    the driver's first line, without the statement, its parameters or the ``DETAIL`` line.
    """
    name = type(exc).__name__
    orig = getattr(exc, "orig", None)
    source: BaseException = exc
    if isinstance(orig, BaseException) and orig is not exc:
        name = f"{name} ({type(orig).__name__})"
        source = orig
    try:
        text = str(source)
    except Exception:  # a broken __str__ must not hide the failure it describes
        text = ""
    if source is orig:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        text = first
    message = " ".join(line.strip() for line in redact(text).splitlines() if line.strip())
    if len(message) > MAX_DESCRIPTION:
        message = message[: MAX_DESCRIPTION - 1] + "…"
    return f"{name}: {message}" if message else name


def format_exception(exc: BaseException) -> str:
    """A traceback of ``exc`` (and of its cause or context) as Python prints one, but with
    each exception's line replaced by :func:`describe_exception`: the frames name only files,
    lines and source code; the messages are what may quote data."""
    chain: list[tuple[BaseException, str | None]] = []  # (exception, how it led to the next)
    seen: set[int] = set()
    current: BaseException | None = exc
    relation: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, relation))
        if current.__cause__ is not None:
            relation = _CAUSE
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            relation = _CONTEXT
            current = current.__context__
        else:
            current = None
    parts: list[str] = []
    for item, led_to_next in reversed(chain):
        if item.__traceback__ is not None:
            frames = traceback.StackSummary.extract(traceback.walk_tb(item.__traceback__))
            parts.append("Traceback (most recent call last):\n" + "".join(frames.format()))
        parts.append(describe_exception(item) + "\n")
        if led_to_next is not None:
            parts.append(f"\n{led_to_next}\n\n")
    return "".join(parts).rstrip("\n")


def _uid_replacement(match: re.Match[str]) -> str:
    value = match.group(0)
    if value.startswith(_STANDARD_UID_ROOT) or _IPV4.match(value):
        return value
    return uid_handle(value)


def _quoted_replacement(match: re.Match[str], kept: list[str]) -> str:
    prefix, single, double = match.group(1), match.group(2), match.group(3)
    quote = "'" if single is not None else '"'
    inner = single if single is not None else double
    restored = _PLACEHOLDER.sub(lambda m: kept[int(m.group(1))], inner or "")
    if _HANDLE.fullmatch(restored) or (restored and restored.startswith(_STANDARD_UID_ROOT)):
        return match.group(0)  # a hashed or standard UID, nothing more
    return f"{prefix}{quote}{MASK}{quote}"


def _person_name_replacement(match: re.Match[str]) -> str:
    token = match.group(0)
    if "^" not in token or not any(c.isalnum() for c in token):
        return token  # no name (a caret marker line is none either)
    return MASK


def _capped(text: str) -> str:
    """At most :data:`MAX_TEXT` characters (a data dump is no message; bounded work)."""
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]} [{len(text) - MAX_TEXT} more characters withheld]"
