"""Exceptions raised by :mod:`storage`.

Messages never contain patient data, raw UIDs or database passwords: they are meant to be shown
to an operator as they are.
"""

from __future__ import annotations

from config.errors import XraydError


class StorageError(XraydError):
    """Base class of every error the storage layer raises on purpose."""


class SpoolWriteError(StorageError):
    """A file could not be written durably into the spool (disk full, I/O error, permissions).

    Nothing is left behind: neither the temporary ``.part`` file nor a destination file.
    A C-STORE handler answers this with "out of resources" (0xA700).
    """


class SchemaOutdatedError(StorageError):
    """The database schema is not the one this version of xrayd was written for."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached; the message names the (password-masked) URL."""


class JobNotFoundError(StorageError):
    """A job id given to :mod:`storage.jobs` does not exist."""


class JobLostError(StorageError):
    """The worker no longer holds the job (its lease expired and another worker claimed it, or
    it was released): it must not commit results or mark the job done."""
