"""After a saved review: send the radiologist-verified SR when the site enables it."""

from __future__ import annotations

import logging
from typing import Literal

from config.errors import XraydError
from xrayd.web.context import WebContext

__all__ = ["VerifiedOutcome", "send_verified_sr"]

LOGGER = logging.getLogger(__name__)

VerifiedOutcome = Literal["off", "queued", "no_ai_sr", "failed"]


def send_verified_sr(ctx: WebContext, override_id: int) -> tuple[VerifiedOutcome, int | None]:
    """``(outcome, result id)``. The review is stored whatever happens here: a failure to
    build the SR is logged and reported, never turned into a failed review."""
    if not ctx.settings.review.send_verified_sr or ctx.write_verified_sr is None:
        return "off", None
    try:
        result_id = ctx.write_verified_sr(override_id)
    except XraydError as exc:
        LOGGER.error(
            "verified SR not sent: %s", type(exc).__name__, extra={"override_id": override_id}
        )
        return "failed", None
    if result_id is None:
        return "no_ai_sr", None
    return "queued", result_id
