"""Shell: follow the anomaly events (and attributions) on Kafka for ``flowmon alerts``.

* :func:`subscribe` is the aiokafka consumer: an async iterator of decoded events
  (:mod:`pipeline.alerts.events`; a malformed message is skipped with a warning, never fatal);
* :func:`run_alerts` wires it to the filters (:mod:`pipeline.alerts.filters`), the dedup
  (:mod:`pipeline.alerts.dedup`) and the webhook (:mod:`pipeline.alerts.webhook`), and counts
  what it saw (:class:`~pipeline.alerts.stats.AlertStats`).

Catching up (``follow=False``). The subscriber stops once every assigned partition's
position reaches the high watermark the first fetch of that partition reported (the log
end when it started reading; what is produced later is not waited for). It uses the
fetch's high watermark, not ListOffsets: Tansu answers ListOffsets with the last batch's
base offset + 1, not the log end. For the same reason, starting "at the end" (only new
events) takes the end from a first fetch too, not from the "latest" reset (see :func:`subscribe`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from typing import Any

from pipeline.alerts.dedup import Dedup
from pipeline.alerts.events import MalformedEvent, decode_attribution, decode_event
from pipeline.alerts.filters import check_filters, matches
from pipeline.alerts.stats import AlertStats
from pipeline.alerts.webhook import Webhook
from pipeline.runtime import kafka

__all__ = ["subscribe", "run_alerts"]

#: How many alert ids :func:`run_alerts` remembers for pairing alerts with their attributions.
_REMEMBERED = 100_000


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


async def subscribe(conn: kafka.Connection | str, topic: str, *, from_beginning: bool, follow: bool, group: str | None = None,
                    poll_ms: int = 500, stall_timeout_s: float = 60.0, session_timeout_s: float = 10.0,
                    heartbeat_s: float = 3.0, rebalance_timeout_s: float | None = None,
                    warn: Callable[[str], None] | None = None,
                    on_malformed: Callable[[str], None] | None = None,
                    decode: Callable[[Any], dict[str, Any]] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Decoded anomaly events of ``topic`` (``decode``, default :func:`~pipeline.alerts.events.decode_event`),
    in order per partition (so per alert).

    ``group``: a consumer group, whose committed offsets say where to resume (committed
    automatically); ``from_beginning`` then only applies to partitions the group has no
    offset for. Without a group nothing is committed and every partition is read, from
    its beginning or from its end (``from_beginning=False``: only new events). The
    ``*_s`` timings are the group's (``Settings.session_timeout_s`` and friends).

    ``follow=False`` stops when caught up: every assigned partition's position has
    reached the high watermark its first fetch reported (see the module docstring); if
    that cannot be established for ``stall_timeout_s`` without any message arriving (no
    leader, say), it warns and stops. A malformed message is skipped and reported to
    ``on_malformed`` (default: ``warn``; default ``warn``: a line on stderr).

    Starting at the end. Kafka's "latest" reset asks ListOffsets, which Tansu answers with
    the last batch's base offset + 1: the rest of that batch would show up as new events.
    So a partition that starts at the end (no group offset, ``from_beginning=False``) is
    *primed* first: what its first fetches return is dropped, and once a fetch reported its
    high watermark the partition is moved there (``seek``). "The end" is thus the log end
    when the consumer had started, on any broker.
    """
    warn = warn or _stderr_warning
    on_malformed = on_malformed or warn
    consumer = kafka.consumer(
        conn, topic, group=group, auto_commit=group is not None, client_id="flowmon-alerts",
        auto_offset_reset="earliest" if from_beginning else "latest", fetch_max_wait_ms=min(poll_ms, 500),
        session_timeout_s=session_timeout_s, heartbeat_s=heartbeat_s,
        rebalance_timeout_s=rebalance_timeout_s or session_timeout_s)
    await consumer.start()
    try:
        starts = _Starts(consumer, from_beginning=from_beginning, grouped=group is not None)
        targets: dict[Any, int] = {}  # partition -> high watermark of its first fetch (follow=False)
        last_progress = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=poll_ms)
            await starts.decide()
            for event in _decoded(batch, starts.priming, decode or decode_event, on_malformed):
                yield event
            await starts.prime()
            if follow:
                continue
            if batch:
                last_progress = time.monotonic()
            if not starts.priming and await _caught_up(consumer, targets):
                return
            if time.monotonic() - last_progress > stall_timeout_s:
                warn(f"stopped before catching up: no progress on {topic} for {stall_timeout_s:g} s")
                return
    finally:
        await consumer.stop()


class _Starts:
    """Where each assigned partition starts reading (see :func:`subscribe`).

    A newly assigned partition is decided before anything of it is yielded: *settled* (read
    from where the consumer stands: the beginning, or the group's committed offset) or
    *priming* (start at the end: its fetched messages are dropped until a fetch reported the
    high watermark, then it is moved there and settled).
    """

    def __init__(self, consumer: Any, *, from_beginning: bool, grouped: bool) -> None:
        self.consumer = consumer
        self.from_beginning = from_beginning
        self.grouped = grouped
        self.settled: set[Any] = set()  # partitions whose start is decided
        self.priming: set[Any] = set()  # partitions starting at the end, until a fetch told where that is

    async def decide(self) -> None:
        """Decide the start of every newly assigned partition."""
        assigned = self.consumer.assignment()
        self.settled &= assigned  # a partition revoked by a rebalance is decided again if it comes back
        self.priming &= assigned
        for tp in assigned - self.settled - self.priming:
            if self.from_beginning or (self.grouped and await self.consumer.committed(tp) is not None):
                self.settled.add(tp)
            else:
                self.priming.add(tp)

    async def prime(self) -> None:
        """Move each priming partition whose high watermark is known to it (or stay, if already past)."""
        for tp in list(self.priming):
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.consumer.seek(tp, max(hw, await self.consumer.position(tp)))
                self.priming.discard(tp)
                self.settled.add(tp)


def _decoded(batch: Mapping[Any, list[Any]], skip: set[Any], decode: Callable[[Any], dict[str, Any]],
             on_malformed: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The decoded messages of one fetch, partition by partition, leaving out the partitions in ``skip``."""
    for tp in sorted(batch):
        if tp in skip:
            continue
        for msg in batch[tp]:
            try:
                event = decode(msg.value)
            except MalformedEvent as exc:
                on_malformed(f"skipped malformed message {tp.topic}[{tp.partition}]@{msg.offset}: {exc}")
                continue
            yield event


async def _caught_up(consumer: Any, targets: dict[Any, int]) -> bool:
    assigned = consumer.assignment()
    if not assigned:  # group join still under way
        return False
    done = True
    for tp in assigned:
        if tp not in targets:
            hw = consumer.highwater(tp)
            if hw is None:  # no fetch answered for it yet
                done = False
                continue
            targets[tp] = hw
        if done and await consumer.position(tp) < targets[tp]:
            done = False
    return done


async def run_alerts(conn: kafka.Connection | str, topic: str, emit: Callable[[dict[str, Any]], None], *, from_beginning: bool,
                     follow: bool, group: str | None = None, pairs: Iterable[str] | None = None,
                     severity: str | None = None, scope: str | Iterable[str] | None = None,
                     metric: str | Iterable[str] | None = None, webhook: Webhook | None = None,
                     dedup: Dedup | None = None, stats: AlertStats | None = None,
                     warn: Callable[[str], None] | None = None, attributions_topic: str | None = None,
                     emit_attribution: Callable[[dict[str, Any]], None] | None = None, **consumer: Any) -> AlertStats:
    """Subscribe, filter (:func:`~pipeline.alerts.filters.matches`), drop repeats
    (:class:`~pipeline.alerts.dedup.Dedup`), then ``emit`` each event and forward it to ``webhook``
    (awaited, so events reach it one at a time, in order). ``consumer``: more keyword arguments of
    :func:`subscribe` (timings). With ``attributions_topic``, each shown alert's attribution is
    passed to ``emit_attribution`` (and the webhook) right after its ``opened`` event, or when it
    arrives if later."""
    pairs = list(pairs or [])
    check_filters(pairs, severity, scope, metric)  # bad filters fail before connecting
    stats = stats if stats is not None else AlertStats()
    warn = warn or _stderr_warning

    def on_malformed(message: str) -> None:
        stats.malformed += 1
        warn(message)

    show = _Shown(emit, emit_attribution, webhook, stats, pairing=bool(attributions_topic))
    flt = {"pairs": pairs, "severity": severity, "scope": scope, "metric": metric}
    dedup = dedup or Dedup()
    common = {"from_beginning": from_beginning, "follow": follow, "warn": warn, "on_malformed": on_malformed}

    async def alerts() -> None:
        events = subscribe(conn, topic, group=group, **common, **consumer)
        async with aclosing(events):
            async for event in events:
                if not matches(event, **flt):
                    stats.filtered += 1
                elif dedup.is_duplicate(event):
                    stats.duplicates += 1
                else:
                    await show.event(event)

    async def verdicts() -> None:
        recs = subscribe(conn, attributions_topic, group=None, decode=decode_attribution, **common,
                         **{k: v for k, v in consumer.items() if k in ("poll_ms", "stall_timeout_s")})
        async with aclosing(recs):
            async for rec in recs:
                await show.attribution(rec)

    if attributions_topic:
        await asyncio.gather(alerts(), verdicts())
    else:
        await alerts()
    return stats


class _Shown:
    """Shows events and attributions one at a time (a lock: two subscribers feed it), each
    attribution right after its alert's ``opened`` event, or when it arrives if that is later.
    An attribution of an alert not shown (yet) waits; the last ``_REMEMBERED`` are kept."""

    def __init__(self, emit: Callable[[dict[str, Any]], None],
                 emit_attribution: Callable[[dict[str, Any]], None] | None, webhook: Webhook | None,
                 stats: AlertStats, *, pairing: bool) -> None:
        self.emit, self.emit_attribution, self.webhook, self.stats = emit, emit_attribution, webhook, stats
        self.pairing = pairing
        self.shown_ids: OrderedDict[str, bool] = OrderedDict()  # opened alerts shown -> attribution shown yet
        self.waiting: OrderedDict[str, dict[str, Any]] = OrderedDict()  # attributions of alerts not shown yet
        self.lock = asyncio.Lock()

    async def event(self, event: dict[str, Any]) -> None:
        async with self.lock:
            self.stats.shown += 1
            self.emit(event)
            if self.webhook is not None:
                await self.webhook.send(event)
            if event["event"] == "opened" and self.pairing:
                self.shown_ids.setdefault(event["alert_id"], False)
                _trim(self.shown_ids)
                rec = self.waiting.pop(event["alert_id"], None)
                if rec is not None and not self.shown_ids[event["alert_id"]]:
                    await self._show_attribution(rec)

    async def attribution(self, rec: dict[str, Any]) -> None:
        async with self.lock:
            done = self.shown_ids.get(rec["alert_id"])
            if done is None:
                self.waiting[rec["alert_id"]] = rec
                _trim(self.waiting)
            elif not done:
                await self._show_attribution(rec)

    async def _show_attribution(self, rec: dict[str, Any]) -> None:
        self.shown_ids[rec["alert_id"]] = True
        if self.emit_attribution is not None:
            self.emit_attribution(rec)
        if self.webhook is not None:
            await self.webhook.send(rec)


def _trim(d: OrderedDict[str, Any]) -> None:
    """Forget the oldest entries beyond ``_REMEMBERED``."""
    while len(d) > _REMEMBERED:
        d.popitem(last=False)
