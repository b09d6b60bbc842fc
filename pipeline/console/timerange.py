"""The console's time range: what ``?range=6h`` or ``?from=...&to=...`` means.  *core*

A range is either *relative* (``6h``, ``90m``, ``7d``: that long, ending at the end of the
newest landed window, so a backfill or a simulated day shows up at once and a live
system shows its last hours) or *absolute* (``from``/``to`` in ISO 8601, UTC unless an
offset is given; also Unix seconds). The page's "share" link always carries the absolute
form, so the receiver sees the same numbers.

Examples
--------
>>> from datetime import datetime, timezone
>>> latest = datetime(2026, 12, 1, 2, 50, tzinfo=timezone.utc)
>>> r = parse_range(range_="6h", latest=latest)
>>> r.start.isoformat(), r.end.isoformat(), r.label
('2026-11-30T20:50:00+00:00', '2026-12-01T02:50:00+00:00', 'last 6h of data')
>>> parse_range(from_="2026-12-01T00:00", to="2026-12-01 01:30", latest=latest).label
'2026-12-01 00:00 – 2026-12-01 01:30 UTC'
>>> parse_range(range_="6 hours", latest=latest)
Traceback (most recent call last):
...
pipeline.console.timerange.RangeError: range '6 hours' is not a duration: use e.g. 90m, 6h, 7d
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["TimeRange", "RangeError", "parse_range", "parse_instant", "DEFAULT_RANGE", "PRESETS"]

DEFAULT_RANGE = "24h"
PRESETS = ("1h", "6h", "24h", "7d", "30d")
_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_SPAN_S = 400 * 86400


class RangeError(ValueError):
    """A range the console cannot read (shown to the user as one line)."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    label: str
    relative: str | None = None  # '6h' when relative

    @property
    def start_s(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_s(self) -> int:
        return int(self.end.timestamp())

    def params(self) -> dict[str, int]:
        """The bound parameters of the named queries (Unix seconds: unambiguous whatever the server's zone)."""
        return {"from": self.start_s, "to": self.end_s}

    def absolute_query(self) -> str:
        return f"from={_fmt_iso(self.start)}&to={_fmt_iso(self.end)}"

    @property
    def span_s(self) -> int:
        return self.end_s - self.start_s


def _fmt_iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_s(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text or "")
    if not m or int(m.group(1)) == 0:
        raise RangeError(f"range {text!r} is not a duration: use e.g. 90m, 6h, 7d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_instant(text: str, what: str) -> datetime:
    """ISO 8601 (UTC unless it says otherwise) or Unix seconds."""
    t = (text or "").strip()
    if re.fullmatch(r"\d{9,11}", t):
        return datetime.fromtimestamp(int(t), tz=timezone.utc)
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{what} {text!r} is not a time: use ISO 8601 like 2026-12-01T02:00 (UTC) "
                         "or Unix seconds") from None
    return d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)


def parse_range(range_: str | None = None, from_: str | None = None, to: str | None = None,
                latest: datetime | None = None, now: datetime | None = None) -> TimeRange:
    """The range of a request; ``latest`` is the end of the newest landed window (None: no data, use ``now``)."""
    anchor = latest or now or datetime.now(timezone.utc)
    if from_ or to:
        if not (from_ and to):
            raise RangeError("give both from and to (or a relative range like range=6h)")
        start, end = parse_instant(from_, "from"), parse_instant(to, "to")
        if end <= start:
            raise RangeError(f"'to' ({_fmt_iso(end)}) must be after 'from' ({_fmt_iso(start)})")
        if (end - start).total_seconds() > MAX_SPAN_S:
            raise RangeError("a range longer than 400 days is not shown; narrow it")
        label = f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"
        return TimeRange(start, end, label)
    rel = range_ or DEFAULT_RANGE
    span = duration_s(rel)
    if span > MAX_SPAN_S:
        raise RangeError("a range longer than 400 days is not shown; narrow it")
    end = anchor.astimezone(timezone.utc)
    return TimeRange(end - timedelta(seconds=span), end, f"last {rel.strip()} of data", rel.strip())
