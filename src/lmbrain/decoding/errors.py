"""The decoder's error type."""

from __future__ import annotations

from .. import LmbrainError


class DecodingError(LmbrainError, ValueError):
    """Inputs the decoder cannot use (the message says which and why)."""
