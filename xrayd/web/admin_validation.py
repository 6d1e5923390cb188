"""FastAPI's own refusals of an admin form answered like the routes' own refusals.

A field missing, too long or of the wrong type is refused by FastAPI before the route runs
(:class:`fastapi.exceptions.RequestValidationError`). For the admin forms listed in
:data:`FORMS` the answer is the form's page again (:mod:`xrayd.web.admin_forms`): the message
beside the form naming the field, the field marked, what was typed kept (never a password),
422. Any other page keeps the error page, and the REST API its 422 JSON
(:mod:`xrayd.web.app`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import FormData

from xrayd.web import admin_pages, admin_user_pages
from xrayd.web.admin_forms import FormError

__all__ = ["FORMS", "LABELS", "form_refusal", "message"]

FormPage = Callable[[Request, FormError], Response]

#: route path -> (the form's name on its page, from the path parameters; the page)
FORMS: dict[str, tuple[Callable[[Mapping[str, Any]], str], FormPage]] = {
    "/admin/callers": (lambda _: "caller", admin_pages.index_with_error),
    "/admin/destinations": (lambda _: "destination", admin_pages.index_with_error),
    "/admin/users": (lambda _: "user", admin_user_pages.page_with_error),
    "/admin/users/{name}/password": (
        lambda p: f"password:{p['name']}",
        admin_user_pages.page_with_error,
    ),
    "/admin/users/{name}/tokens": (
        lambda p: f"token:{p['name']}",
        admin_user_pages.page_with_error,
    ),
}
#: the words the forms' labels use for their fields
LABELS = {
    "ae_title": "AE title",
    "host": "Host",
    "port": "Port",
    "name": "Name",
    "send": "Send",
    "ca_file": "CA file",
    "cert_file": "Client certificate",
    "key_file": "Client key",
    "server_hostname": "Server name",
    "role": "Role",
    "password": "Password",
    "password_again": "Password (again)",
    "label": "Label",
    "days": "Valid for days",
}
#: never typed back into a page
SECRET = frozenset({"password", "password_again", "csrf_token"})
#: fields whose value is a list of checked boxes
LISTS = frozenset({"send"})


def message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One sentence per refused field, named as its label names it."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        field = loc[0] if loc else ""
        label = LABELS.get(field, field.replace("_", " ") or "The form")
        if error.get("type") == "missing":
            parts.append(f"{label} is required.")
        else:
            text = str(error.get("msg", "is not valid"))
            parts.append(f"{label}: {text[:1].lower()}{text[1:]}.")
    return " ".join(parts)


def _typed(body: object) -> dict[str, object]:
    """What was typed, from the refused form (passwords and the CSRF token left out)."""
    if not isinstance(body, FormData):
        return {}
    typed: dict[str, object] = {}
    for key in dict.fromkeys(body):
        if key in SECRET:
            continue
        values = [v for v in body.getlist(key) if isinstance(v, str)]
        typed[key] = values if key in LISTS else (values[0] if values else "")
    typed["tls"] = typed.get("tls") == "yes"
    return typed


def form_refusal(request: Request, exc: RequestValidationError) -> Response | None:
    """The form's page with the refusal, or None when the request is not one of :data:`FORMS`
    or what was refused is not a form field (a path or query parameter)."""
    route = request.scope.get("route")
    found = FORMS.get(getattr(route, "path", ""))
    if request.method != "POST" or found is None:
        return None
    errors = [e for e in exc.errors() if tuple(e.get("loc", ()))[:1] == ("body",)]
    if not errors:
        return None
    name_of, page = found
    loc = [str(p) for p in errors[0].get("loc", ())[1:]]
    refused = FormError(
        form=name_of(request.path_params),
        message=message(errors),
        status=422,
        field=loc[0] if loc else None,
        values=_typed(exc.body),
    )
    return page(request, refused)
