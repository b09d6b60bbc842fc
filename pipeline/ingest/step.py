"""Ingest stage core: one raw report -> pairs-topic messages and dead letters.

Pure: no Kafka. The ingest agent (``runtime.agents.ingest``) feeds it what it reads from
the reports topic and sends what it returns; how far it got per reports partition is
``ingest.progress``. The pairs topic is partitioned by directional subnet pair
(``wire.pair_partition``), so one message per destination partition carries all the
report's partials for that partition: per-message costs are paid per report, not per
sample or per pair.

The worker's reader calls ``Ingest.process_batch``: the same result for many reports at once,
with their decoding and header checks per report but validation, placement and
pre-aggregation as numpy columns over all of them (``Validator.check_many``,
``preagg.partials_many``). ``process`` is the reference it is tested against, and the path
every report that is not plainly good takes, so each refusal keeps its exact reason.

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
>>> decode_pairs(next(iter(res.messages.values())))[0].origin
Origin(partition=3, offset=42)
>>> res = ing.process(b"{not json", "flow-reports-v1", 3, 43, now=1764000100)
>>> res.deadletters[0].reason, res.deadletters[0].source
('malformed_json', DeadLetterSource(topic='flow-reports-v1', partition=3, offset=43))
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from pipeline.ingest.preagg import partials, partials_many
from pipeline.ingest.progress import SourceProgress
from pipeline.ingest.validate import Rejection, Validator
from pipeline.wire.contract import pair_partition
from pipeline.wire.records import (
    DeadLetter,
    DeadLetterSource,
    Origin,
    Partial,
    decode_pairs,
    encode,
    encode_pairs,
)

__all__ = ["Ingest", "IngestResult", "BatchResult", "SourceProgress", "deadletter", "encode", "grid_interval", "decode_pairs"]


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
               now: float | None = None) -> DeadLetter:
    """The dead-letter record (``schemas/wire/deadletter.v1.json``) for one rejection.

    >>> big = Rejection("oversize", "too big", raw=b"x" * 300_000)
    >>> rec = deadletter(big, "ingest", "r", 0, 7, now=0)
    >>> rec.payload_truncated, len(base64.b64decode(rec.payload_b64))
    (True, 65536)
    """
    b64 = None if rej.raw is None else base64.b64encode(rej.raw).decode()
    truncated = (len(b64) > MAX_DEADLETTER_BYTES if b64 is not None
                 else len(encode(rej.payload)) > MAX_DEADLETTER_BYTES)
    if truncated:
        raw = rej.raw if rej.raw is not None else encode(rej.payload)
        b64 = base64.b64encode(raw[:TRUNCATED_PAYLOAD]).decode()
    return DeadLetter(rej.reason, rej.field, rej.detail, stage, DeadLetterSource(topic, partition, offset),
                      rej.sample_index, rej.samples, time.time() if now is None else now,
                      payload=None if b64 is not None else rej.payload, payload_b64=b64, payload_truncated=truncated)


@dataclass(slots=True)
class IngestResult:
    messages: dict[int, bytes] = field(default_factory=dict)  # pairs partition -> message
    deadletters: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0  # samples
    rejected: int = 0  # samples (whole-message rejections count the samples they held)
    start: int | None = None  # event time of the report, when accepted


@dataclass(slots=True)
class BatchResult:
    """What ``Ingest.process_batch`` made of many reports, in the order they were given."""

    messages: dict[int, list[bytes]] = field(default_factory=dict)  # pairs partition -> messages, in order
    deadletters: list[DeadLetter] = field(default_factory=list)
    starts: list[int | None] = field(default_factory=list)  # per report: its event time, when accepted
    accepted: int = 0
    rejected: int = 0


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
        by_part: dict[int, list[Partial]] = {}
        for part in partials(report, self.validator.places, self.window_s):
            p = pair_partition(part.src[0], part.dst[0], self.partitions)
            by_part.setdefault(p, []).append(part)
        origin = Origin(partition, offset)
        g = grid_interval(report.start, report.interval_s, self.grid_s)
        for p, parts in by_part.items():
            res.messages[p] = encode_pairs(origin, report.start, g, parts)
        return res

    def process_batch(self, records: list[tuple[bytes, int, int]], topic: str, now: float) -> BatchResult:
        """``process`` for many reports ``(raw, partition, offset)`` at once, with the same result.

        Reports whose header and samples are all plainly good are validated, placed and
        pre-aggregated together (``Validator.check_many``, ``preagg.partials_many``); every
        other report goes through ``process`` alone, so its refusals keep their exact reasons.
        Each pairs partition gets its messages in the order of ``records``."""
        v = self.validator
        batches, slow = v.check_many([r[0] for r in records], now)
        per: list[list[tuple[int, bytes]] | IngestResult | None] = [None] * len(records)
        out = BatchResult(starts=[None] * len(records))
        for b in batches:
            for row, head, parts in zip(b.rows, b.heads, partials_many(b, v.places, self.window_s)):
                _, part, off = records[row]
                start = head[2]
                by_part: dict[int, list[Partial]] = {}
                for pt in parts:
                    by_part.setdefault(pair_partition(pt.src[0], pt.dst[0], self.partitions), []).append(pt)
                origin = Origin(part, off)
                g = grid_interval(start, head[3], self.grid_s)
                per[row] = [(p, encode_pairs(origin, start, g, ps)) for p, ps in by_part.items()]
                out.starts[row] = start
            out.accepted += b.n
        for row in slow:  # after the batches: ``check`` may start the placement cache afresh
            raw, part, off = records[row]
            per[row] = res = self.process(raw, topic, part, off, now)
            out.starts[row] = res.start
        messages = out.messages
        for item in per:
            if type(item) is list:
                for p, payload in item:
                    messages.setdefault(p, []).append(payload)
            else:
                for p, payload in item.messages.items():
                    messages.setdefault(p, []).append(payload)
                out.deadletters.extend(item.deadletters)
                out.accepted += item.accepted
                out.rejected += item.rejected
        return out
