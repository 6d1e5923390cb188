"""Who ran a CLI command, as the audit trail names them: ``cli:<operating-system user>``."""

from __future__ import annotations

import getpass

UNKNOWN_USER = "unknown"


def os_user() -> str:
    """The operating-system user running this process (``unknown`` if it cannot be told, e.g.
    a container without an entry in ``/etc/passwd``)."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        return UNKNOWN_USER
    return name.strip() or UNKNOWN_USER


def cli_actor() -> str:
    """The audit actor of a CLI command: ``cli:`` and the operating-system user."""
    return f"cli:{os_user()}"
