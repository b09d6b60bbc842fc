"""Helpers for integration tests (and the benchmarks): import with ``from tests.support.helpers import unique_name``."""

from __future__ import annotations

import re
import urllib.request
import uuid
from datetime import datetime

__all__ = ["unique_name", "log_time", "metric"]

#: The time a log record starts with: ``[2026-12-04 23:35:04,606]`` (Faust and mode) or ``2026-12-04 23:35:04,606``
#: (flowmon's own records).
_ASCTIME = re.compile(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]? ")


def log_time(text: str, needle: str, start: int = 0) -> tuple[datetime, int] | None:
    """The time of the first record of a worker's log ``text``, at or after character ``start``, whose line holds
    ``needle``, and where that line ends; ``None`` if there is none (a line without a time is not a record).

    >>> text = "[2026-12-04 23:35:04,606] [1] [INFO] a\\nnot a record: b\\n2026-12-04 23:35:05,616 INFO b\\n"
    >>> t, end = log_time(text, "a"); t.second, t.microsecond, text[end:end + 13]
    (4, 606000, '\\nnot a record')
    >>> log_time(text, "b", end)[0].second, log_time(text, "c")
    (5, None)
    """
    i = text.find(needle, start)
    while i >= 0:
        line = text.rfind("\n", 0, i) + 1
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        if m := _ASCTIME.match(text, line):
            return datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), end
        i = text.find(needle, end)
    return None


def unique_name(prefix: str) -> str:
    """A topic/group/app name no other test (or earlier run on the same broker) uses.

    >>> unique_name("flows").startswith("flows-")
    True
    >>> unique_name("a") != unique_name("a")
    True
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def metric(port: int, sample: str) -> float | None:
    """The value of one sample on a worker's ``/metrics`` (``FLOWMON_METRICS_PORT``): ``sample`` is its name, with
    its labels as the page writes them (``python_gc_collections_total{generation="0"}``); ``None`` if it is not there."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample + " ")), None)
