"""``[limits]`` settings -> :class:`models.limits.ImageLimits`, converted in one place."""

from __future__ import annotations

from config.settings import LimitsSettings
from models.limits import MIB, ImageLimits

__all__ = ["image_limits"]


def image_limits(settings: LimitsSettings) -> ImageLimits:
    """The image limits of analysis, web viewer and retraining, from ``[limits]``."""
    return ImageLimits(
        max_pixels=settings.max_image_pixels,
        max_decoded_bytes=settings.max_decoded_mb * MIB,
        max_compression_ratio=settings.max_compression_ratio,
        max_inflated_bytes=settings.max_inflated_mb * MIB,
    )
