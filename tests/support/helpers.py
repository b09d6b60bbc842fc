"""Helpers for integration tests: import with ``from tests.support.helpers import unique_name``."""

from __future__ import annotations

import uuid

__all__ = ["unique_name"]


def unique_name(prefix: str) -> str:
    """A topic/group/app name no other test (or earlier run on the same broker) uses.

    >>> unique_name("flows").startswith("flows-")
    True
    >>> unique_name("a") != unique_name("a")
    True
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
