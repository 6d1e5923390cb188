"""Exceptions raised by :mod:`storage`.

Messages never contain patient data, raw UIDs or database passwords: they are meant to be shown
to an operator as they are.

What kind of failure an error is travels in its type, never in its wording: a caller (the web
answers with an HTTP status, ``xrayd.web.app``) decides by class alone.

- :class:`NotFoundError`: the thing named does not exist (web: 404);
- :class:`ConflictError`: the current state forbids the change (web: 409);
- :class:`InvalidEntryError`: the input is invalid (web: 422);
- :class:`DatabaseUnavailableError`, :class:`storage.bytestore.ByteStoreUnavailableError`:
  the database or the object store cannot be used now (web: 503, try again later);
- :class:`StorageError` itself, and any other subclass: a fault of the storage layer or of
  stored data that the request did not cause (web: 500).
"""

from __future__ import annotations

from config.errors import XraydError


class StorageError(XraydError):
    """Base class of every error the storage layer raises on purpose; raised as itself, a
    fault the caller did not cause (an impossible state, an unusable spool path)."""


class NotFoundError(StorageError, LookupError):
    """The thing named (a caller, destination, user, token, job, delivery, model version,
    study, training run) does not exist. The web answers 404."""


class ConflictError(StorageError):
    """The change conflicts with the current state (exists already, not dead, the last admin,
    a lost job lease). The web answers 409."""


class InvalidEntryError(StorageError, ValueError):
    """An input has an invalid field (a caller, destination, review, audit query or entry; the
    message names the field). The web answers 422. Also importable from :mod:`storage.peers`."""


class SpoolWriteError(StorageError):
    """A file could not be written durably into the spool (disk full, I/O error, permissions).

    Nothing is left behind: neither the temporary ``.part`` file nor a destination file.
    A C-STORE handler answers this with "out of resources" (0xA700).
    """


class SchemaOutdatedError(StorageError):
    """The database schema is not the one this version of xrayd was written for."""


class DatabaseUnavailableError(StorageError):
    """The database cannot be reached; the message names the (password-masked) URL. The web
    answers 503."""


class JobNotFoundError(NotFoundError):
    """A job id given to :mod:`storage.jobs` does not exist."""


class JobLostError(ConflictError):
    """The worker no longer holds the job (its lease expired and another worker claimed it, or
    it was released): it must not commit results or mark the job done."""
