"""Ingest stage core: one raw report -> pairs-topic messages and dead letters; source progress.

Pure: no Kafka. ``agents.py`` feeds it what it reads from the reports topic and sends
what it returns. The pairs topic is partitioned by directional subnet pair
(``wire.pair_partition``), so one message per destination partition carries all the
report's partials for that partition: per-message costs are paid per report, not per
sample or per pair.

Examples
--------
>>> import orjson
>>> ing = Ingest(Validator(), window_s=600, partitions=4)
>>> msg = {"version": 1, "instance": "h1", "local": {"ip": "10.0.0.4", "subnet": "s1", "az": "a1", "vpc": "v1"},
...        "start": 1764000030, "interval_s": 30, "remote": {"ip": "10.0.1.4", "subnet": "s2", "az": "a2", "vpc": "v1"},
...        "bytes_sent": 10, "bytes_received": 20, "retransmissions": 0, "timeouts": 0, "flows": 1, "rtt_us": [800]}
>>> res = ing.process(orjson.dumps(msg), "flow-reports-v1", 3, 42, now=1764000100)
>>> res.accepted, res.rejected, list(res.messages) == [pair_partition("s1", "s2", 4)]
(1, 0, True)
>>> orjson.loads(next(iter(res.messages.values())))["o"]
[3, 42]
>>> res = ing.process(b"{not json", "flow-reports-v1", 3, 43, now=1764000100)
>>> res.deadletters[0]["reason"], res.deadletters[0]["source"]
('malformed_json', {'topic': 'flow-reports-v1', 'partition': 3, 'offset': 43})
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.ingest.preagg import partials
from pipeline.ingest.validate import Rejection, Validator
from pipeline.wire.contract import WIRE_VERSION, pair_partition

__all__ = ["Ingest", "IngestResult", "SourceProgress", "deadletter", "encode", "grid_interval"]

_OPTS = orjson.OPT_NON_STR_KEYS


def encode(obj: Any) -> bytes:
    """JSON bytes as they go on every flowmon topic (int dict keys allowed)."""
    return orjson.dumps(obj, option=_OPTS)


def grid_interval(start: int, interval_s: int, grid_s: int) -> int:
    """The fleet-wide grid interval a report belongs to: the one containing the middle of its own.

    Agents start their intervals at their own second (and their clocks differ by a few
    seconds); placing each report by its middle makes neighbours meet in one scored
    interval. A 60-s report lands in the second grid interval it covers.

    >>> [grid_interval(s, 30, 30) for s in (1764000000, 1764000014, 1764000015, 1764000029)]
    [1764000000, 1764000000, 1764000030, 1764000030]
    >>> grid_interval(1764000007, 60, 30)
    1764000030
    """
    mid = start + interval_s // 2
    return mid - mid % grid_s


#: A dead letter larger than this keeps only the first ``TRUNCATED_PAYLOAD`` bytes of the raw
#: message (base64) and says so; the whole message stays in the reports topic at its offset.
MAX_DEADLETTER_BYTES = 256 * 1024
TRUNCATED_PAYLOAD = 64 * 1024


def deadletter(rej: Rejection, stage: str, topic: str, partition: int, offset: int,
               now: float | None = None) -> dict[str, Any]:
    """A dead-letter record (``schemas/wire/deadletter.v1.json``) for one rejection.

    >>> big = Rejection("oversize", "too big", raw=b"x" * 300_000)
    >>> rec = deadletter(big, "ingest", "r", 0, 7, now=0)
    >>> rec["payload_truncated"], len(base64.b64decode(rec["payload_b64"]))
    (True, 65536)
    """
    rec: dict[str, Any] = {
        "version": WIRE_VERSION, "reason": rej.reason, "field": rej.field, "detail": rej.detail, "stage": stage,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "sample_index": rej.sample_index, "samples": rej.samples,
        "at": time.time() if now is None else now,
    }
    if rej.raw is not None:
        rec["payload_b64"] = base64.b64encode(rej.raw).decode()
    else:
        rec["payload"] = rej.payload
    if len(rec.get("payload_b64", "")) > MAX_DEADLETTER_BYTES or (
            "payload" in rec and len(encode(rec["payload"])) > MAX_DEADLETTER_BYTES):
        raw = rej.raw if rej.raw is not None else encode(rej.payload)
        rec.pop("payload", None)
        rec["payload_b64"] = base64.b64encode(raw[:TRUNCATED_PAYLOAD]).decode()
        rec["payload_truncated"] = True
    return rec


@dataclass(slots=True)
class IngestResult:
    messages: dict[int, bytes] = field(default_factory=dict)  # pairs partition -> message
    deadletters: list[dict] = field(default_factory=list)
    accepted: int = 0  # samples
    rejected: int = 0  # samples (whole-message rejections count the samples they held)
    start: int | None = None  # event time of the report, when accepted


class Ingest:
    """Validate, place and pre-aggregate one report; cut it into per-partition messages."""

    def __init__(self, validator: Validator, window_s: int, partitions: int, grid_s: int = 30) -> None:
        self.validator = validator
        self.window_s = window_s
        self.partitions = partitions
        self.grid_s = grid_s

    def process(self, raw: bytes, topic: str, partition: int, offset: int, now: float) -> IngestResult:
        res = IngestResult()
        report, rejections = self.validator.check(raw, now)
        for rej in rejections:
            res.deadletters.append(deadletter(rej, "ingest", topic, partition, offset, now))
            res.rejected += rej.samples
        if report is None:
            return res
        res.accepted = report.n
        res.start = report.start
        by_part: dict[int, list[dict]] = {}
        for part in partials(report, self.validator.places, self.window_s):
            p = pair_partition(part["src"][0], part["dst"][0], self.partitions)
            by_part.setdefault(p, []).append(part)
        origin = [partition, offset]
        g = grid_interval(report.start, report.interval_s, self.grid_s)
        for p, parts in by_part.items():
            res.messages[p] = encode({"o": origin, "t": report.start, "g": g, "parts": parts})
        return res


class SourceProgress:
    """How far the ingest stage got on each reports partition it owns (for progress marks).

    A partition's mark carries the largest event time processed on it. When the partition
    is idle (caught up, nothing new for ``idle_s`` wall seconds) the mark also says so, with
    the wall clock less ``idle_lag_s``: the aggregator then stops waiting for it, and once
    every partition is idle it closes windows older than that clock (a finished stream).

    >>> sp = SourceProgress(idle_s=5, idle_lag_s=120)
    >>> sp.mark(0, now=1.0, caught_up=True) is None   # nothing seen, not idle yet: nothing to promise
    True
    >>> sp.processed(0, offset=9, start=1000, now=50.0)
    >>> sp.mark(0, now=51.0, caught_up=True)
    {'mark': [0, 1000]}
    >>> sp.mark(0, now=1200.0, caught_up=True)
    {'mark': [0, 1000], 'idle': 1080}
    >>> sp.mark(0, now=1200.0, caught_up=False)
    {'mark': [0, 1000]}
    """

    def __init__(self, idle_s: float, idle_lag_s: float) -> None:
        self.idle_s = idle_s
        self.idle_lag_s = idle_lag_s
        self.max_start: dict[int, int] = {}
        self.last_offset: dict[int, int] = {}
        self.last_seen: dict[int, float] = {}

    def processed(self, partition: int, offset: int, start: int | None, now: float) -> None:
        self.last_offset[partition] = offset
        self.last_seen[partition] = now
        if start is not None and start > self.max_start.get(partition, -1):
            self.max_start[partition] = start

    def assigned(self, partition: int, now: float) -> None:
        self.last_seen.setdefault(partition, now)

    def revoked(self, partition: int) -> None:
        for d in (self.max_start, self.last_offset, self.last_seen):
            d.pop(partition, None)

    def idle(self, partition: int, now: float) -> bool:
        """Nothing processed on ``partition`` for ``idle_s`` (a candidate: the caller checks it is caught up)."""
        return now - self.last_seen.get(partition, now) >= self.idle_s

    def mark(self, partition: int, now: float, caught_up: bool) -> dict | None:
        """The progress mark to send for ``partition`` now, or ``None`` (nothing to promise yet)."""
        best = self.max_start.get(partition)
        idle = caught_up and self.idle(partition, now)
        if best is None and not idle:
            return None
        msg: dict = {"mark": [partition, best]}
        if idle:
            msg["idle"] = int(now - self.idle_lag_s)
        return msg
