"""What an admin form answers: what it did (a redirect to its page with ``?done=``, shown once
as a flash), or what it refused (:class:`FormError`: the page again, with the message beside
the form, the values the admin typed and the status of the refusal, so the admin never leaves
the page).

The refusals are the typed errors of :mod:`xrayd.admin` (invalid input 422, a conflict with
the current state 409); anything else (not found, unavailable) goes to the error page as on
every other route (:mod:`xrayd.web.app`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import RedirectResponse

from storage.errors import ConflictError, InvalidEntryError

__all__ = ["DONE", "FieldWords", "FormError", "back", "flash", "refusal"]

#: what a form did, shown once on the page it redirects to
DONE = {
    "model_promoted": "Model promoted: the next study is analysed with it.",
    "model_rolled_back": "Rolled back to the previous model.",
    "caller_added": "Caller added.",
    "caller_removed": "Caller removed.",
    "destination_added": "Destination added.",
    "destination_removed": "Destination removed.",
    "delivery_retried": "Delivery queued again.",
    "deliveries_retried": "Dead deliveries queued again.",
    "no_dead_deliveries": "There were no dead deliveries.",
    "job_retried": "Job queued again.",
    "jobs_retried": "Dead jobs queued again.",
    "no_dead_jobs": "There were no dead jobs.",
    "job_cancelled": "Job cancelled: it will not run.",
    "user_added": "User added.",
    "user_disabled": "User disabled (their sessions are ended).",
    "user_enabled": "User enabled.",
    "token_revoked": "API token revoked.",
    "password_set": "Password set: the user's sessions are ended and their API tokens revoked.",
    "user_unlocked": "Counted failed logins forgotten: the user can log in again.",
}

#: (field, words): the first field one of whose words is in the message is the one it is about
FieldWords = Sequence[tuple[str, tuple[str, ...]]]


def back(path: str, done: str, count: int | None = None) -> RedirectResponse:
    """A 303 to ``path`` saying ``done`` (a key of :data:`DONE`), with a count if given."""
    suffix = "" if count is None else f"&n={count}"
    sep = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{sep}done={done}{suffix}", status_code=303)


def flash(request: Request) -> str | None:
    """The message of the request's ``?done=`` (never free text from the query)."""
    message = DONE.get(request.query_params.get("done", ""))
    count = request.query_params.get("n", "")
    if message is not None and count.isdigit():
        message = f"{message} ({int(count)})"
    return message


@dataclass(frozen=True)
class FormError:
    """A form's refusal: ``form`` names the form on its page, ``field`` the input the message
    is about (None: the form as a whole), ``values`` what was typed (never a password)."""

    form: str
    message: str
    status: int
    field: str | None = None
    values: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def value(self, name: str, default: object = "") -> object:
        return self.values.get(name, default)


def refusal(
    exc: InvalidEntryError | ConflictError,
    form: str,
    values: Mapping[str, object],
    fields: FieldWords = (),
) -> FormError:
    """The :class:`FormError` of a refused form: 409 for a conflict, 422 for invalid input;
    the field is the first of ``fields`` whose words the message names."""
    message = str(exc)
    lowered = message.lower()
    about = next((f for f, words in fields if any(w in lowered for w in words)), None)
    status = 409 if isinstance(exc, ConflictError) else 422
    return FormError(form=form, message=message, status=status, field=about, values=values)
