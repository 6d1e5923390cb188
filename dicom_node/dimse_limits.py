"""Bounds on the DIMSE messages an acceptor assembles in memory.

pynetdicom collects a message's command set, and every data set other than a streamed C-STORE
one, in memory fragment by fragment, with no limit. :func:`bound_dimse` caps both; a peer that
goes past a cap, or sends a command set pynetdicom cannot decode (it raises inside its state
machine, which would end the association's thread without an A-ABORT), has its association
aborted (there is no request to answer yet: the command is
not complete, or xrayd serves no service that takes such a data set). C-STORE data sets stream
to disk and are bounded there (``node.max_instance_mb``, answered with a failure status; see
:class:`dicom_node.streaming.StreamingFile`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.pdu_primitives import P_DATA

LOGGER = logging.getLogger(__name__)

#: a command set is a few hundred bytes; 64 KiB is far beyond any valid one
MAX_COMMAND_BYTES = 64 * 1024
#: data sets of anything but C-STORE (xrayd serves only Verification and Storage)
MAX_OTHER_DATA_SET_BYTES = 1024 * 1024


def _buffered(stream: Any) -> int:
    """Bytes already written to a message's in-memory buffer (a BytesIO)."""
    try:
        return int(stream.tell())  # pynetdicom only appends: the position is the size
    except (AttributeError, ValueError, OSError):
        return 0


def over_limit(message: Any, primitive: P_DATA) -> str | None:
    """Why adding ``primitive`` to ``message`` (None: a new message) would pass a cap."""
    command = _buffered(message.encoded_command_set) if message is not None else 0
    streamed = message is not None and getattr(message, "_data_set_file", None) is not None
    data = 0 if message is None or streamed else _buffered(message.data_set)
    for _context_id, fragment in primitive.presentation_data_value_list:
        if not fragment:
            continue
        if fragment[0] & 0x01:
            command += len(fragment) - 1
            if command > MAX_COMMAND_BYTES:
                return f"command set over {MAX_COMMAND_BYTES} bytes"
        elif not streamed:
            data += len(fragment) - 1
            if data > MAX_OTHER_DATA_SET_BYTES:
                return f"in-memory data set over {MAX_OTHER_DATA_SET_BYTES} bytes"
    return None


def bound_dimse(assoc: Association, refuse: Callable[[], None]) -> None:
    """Check every P-DATA indication of ``assoc`` against the caps before pynetdicom keeps it.

    ``refuse`` aborts the association (it runs on the DUL thread, inside the state machine).
    """
    dimse = assoc.dimse
    original = dimse.receive_primitive
    refused = False

    def receive(primitive: P_DATA) -> None:
        nonlocal refused
        if refused:
            return
        reason = over_limit(dimse.message, primitive)
        if reason is not None:
            refused = True
            LOGGER.warning("aborting association from %s: %s", assoc.requestor.address, reason)
            refuse()
            return
        try:
            original(primitive)
        except Exception as exc:  # a malformed command set: pynetdicom raises while decoding
            refused = True
            LOGGER.warning(
                "aborting association from %s: undecodable DIMSE message (%s)",
                assoc.requestor.address,
                type(exc).__name__,
            )
            _discard_stream(dimse.message)
            refuse()

    dimse.receive_primitive = receive  # type: ignore[method-assign]


def _discard_stream(message: Any) -> None:
    """Remove the file a C-STORE data set was streaming into, if any (nobody will answer it)."""
    stream = getattr(message, "_data_set_file", None)
    discard = getattr(stream, "discard", None)
    if callable(discard):
        try:
            discard()
        except Exception:
            LOGGER.exception("could not remove a partial data set")
