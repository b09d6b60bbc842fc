"""The aggregate agent: pairs messages -> each partition's ``PartitionStep`` -> windows, dead letters,
alerts, health and state, all sent (and delivered) before the batch is acked."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from faust.types import TP

from pipeline.aggregate.step import StepOutput
from pipeline.aggregate.windows import PartitionWindows
from pipeline.detect.detection import Detection
from pipeline.runtime import collector, fence
from pipeline.runtime.agents.context import PAIRS_MESSAGE_BYTES, Context, Pacer
from pipeline.runtime.agents.ingest import send_deadletter
from pipeline.runtime.gaps import APPLY, DROP, GAP, SKIP
from pipeline.runtime.process import exit_on_failed_batch
from pipeline.runtime.restore import WRITER_HEADER, PartitionState, new_writer, owner_marker, restore_owned
from pipeline.wire.contract import pair_partition
from pipeline.wire.records import DeadLetter, decode_pairs, encode, encode_health, encode_window

__all__ = ["install", "store", "new_state"]

log = logging.getLogger("flowmon.agents")

#: Grid intervals scored between two looks at the clock (``Pacer``): a fleet pair-interval is ~2 ms.
SCORE_CHUNK = 16


def new_state(ctx: Context, q: int) -> PartitionState:
    """An empty state for pairs partition ``q``: its windows and detectors."""
    s = ctx.settings
    return PartitionState(
        PartitionWindows(q, s.window_s, s.allowed_lateness_s, s.partitions, interval_lateness_s=s.interval_lateness_s,
                         grid_s=s.interval_s),
        Detection(interval_s=s.interval_s, window_s=s.window_s, model=s.detector, instances=s.detect_instances,
                  key_ttl_s=s.detector_key_ttl_s))


async def store(ctx: Context, p: int, gen: int | None = None) -> PartitionState:
    """Pairs partition ``p``'s state; on first use after a rebalance, every assigned pairs
    partition not restored yet is restored from the state topic, with one consumer. ``gen``: the
    group generation the batch was read under; :class:`fence.Fenced` if this worker is no longer
    in it (it must not own anything)."""
    ps = ctx.stores.get(p)
    if ps is None:
        app = ctx.flow.app
        await app.producer.flush()  # our own last writes must be readable
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == ctx.topics.pairs} | {p}
        todo = [new_state(ctx, q) for q in sorted(mine) if q not in ctx.stores]
        # own each partition before reading it back: a stale owner's writes after the marker never count
        # (``runtime.restore``), and the restore reads past the marker, so it sees what any later one will;
        # only a member may make a marker, and it is made right after the coordinator said so
        if not await fence.still_member(app, gen):
            raise fence.Fenced
        writer, at = new_writer(), time.time()
        marks = []
        for q_ps in todo:
            q_ps.writer = writer
            w = owner_marker(q_ps.partition, writer, at)
            marks.append(await ctx.send(ctx.topics.state, w.value, q_ps.partition, w.key.text.encode()))
        if marks:
            await asyncio.gather(*marks)
        rewrites = []
        for q_ps, got in zip(todo, await restore_owned(ctx.flow.conn, ctx.topics.state, todo,
                                                                  max_bytes=ctx.topics.state_fetch_bytes)):
            ctx.stores[q_ps.partition] = q_ps
            q_pw = q_ps.windows
            log.info("pairs partition %d: restored %d keys: %d open, %d closed windows, %d detector keys, "
                     "watermark %s, up to pairs offset %d", q_ps.partition, got.keys, len(q_pw.open), len(q_pw.closed),
                     len(q_ps.detection.keys) if q_ps.detection else 0, q_pw.watermark, q_ps.pairs_offset)
            if got.ignored:
                log.warning("pairs partition %d: ignored %d state records a worker wrote after it had lost the "
                            "partition", q_ps.partition, got.ignored)
            if got.torn:
                log.warning("pairs partition %d: dropped the %d state records of a batch whose writes were cut (its "
                            "worker died, or the broker refused a write, part way through): the pairs messages "
                            "after the last whole batch are read again", q_ps.partition, got.torn)
            headers = [(WRITER_HEADER, writer.encode())]
            for key, value in got.rewrite.items():  # their last record is ignored: compaction must not keep only it
                rewrites.append(await ctx.send(ctx.topics.state, value, q_ps.partition, key, headers))
            if got.rewrite:  # a whole batch of its own
                w = q_ps.pairs_write()
                rewrites.append(await ctx.send(ctx.topics.state, w.value, q_ps.partition, w.key.text.encode(), headers))
        if rewrites:
            await asyncio.gather(*rewrites)
        if todo and ctx.settings.gc_young_threshold:
            collector.settle()  # the restored state lives as long as the assignment
        ps = ctx.stores[p]
    return ps


async def _emit(ctx: Context, out: StepOutput, late: list[DeadLetter], touched: dict[int, PartitionState]) -> list:
    """Send what a batch produced (windows, dead letters, alerts, health); returns the delivery futures."""
    t, s, m = ctx.topics, ctx.settings, ctx.metrics
    pending = []
    for rec in out.closed:
        key = f"{rec.src_subnet}|{rec.dst_subnet}".encode()
        values = encode_window(rec, s.max_message_bytes)
        if len(values) > 1:
            log.info("window %s->%s at %s: its %d instances are above the message limit (%d bytes); sent in %d "
                     "parts", rec.src_subnet, rec.dst_subnet, rec.window_start, len(rec.instances or ()),
                     s.max_message_bytes, len(values))
        p = pair_partition(rec.src_subnet, rec.dst_subnet, s.partitions)
        for value in values:  # one partition and key: the parts keep their order
            pending.append(await ctx.send(t.windows, value, p, key))
    for dl in late:
        pending.append(await send_deadletter(ctx, dl))
    now = time.time()
    for a in out.alerts:  # an alert's events keep their order: keyed by alert_id
        pending.append(await ctx.send(t.anomalies, encode(replace(a, emitted_at=now).to_wire()),
                                      key=a.alert_id.encode()))
        m.anomalies.labels(event=a.event, metric=a.metric).inc()
    # the health of every scored key, and the alerts opened, to the attribution stage
    for p, ps in touched.items():
        update = ps.step.take_health()
        if update is not None:
            for msg in encode_health(update, PAIRS_MESSAGE_BYTES, emitted_at=now):
                pending.append(await ctx.send(t.health, msg, 0, str(p).encode()))
    return pending


async def _write_state(ctx: Context, touched: dict[int, PartitionState]) -> None:
    """The changed state of every partition the batch touched, then the gauges."""
    m = ctx.metrics
    biggest = 0
    for p, ps in touched.items():
        headers = [(WRITER_HEADER, ps.writer.encode())] if ps.writer is not None else None
        for w in ps.iter_dirty():  # each state made as it is sent: a big batch's states are not all held at once
            await ctx.send(ctx.topics.state, w.value, p, w.key.text.encode(), headers)
            if w.value is not None and w.key.detector_key is not None:
                biggest = max(biggest, len(w.value))
    m.open_windows.set(sum(len(ps.windows.open) for ps in ctx.stores.values()))
    m.detector_keys.set(sum(len(ps.detection.keys) for ps in ctx.stores.values() if ps.detection))
    if biggest:
        m.detector_state_bytes.set(biggest)


async def _batch(ctx: Context, events: list, pacer: Pacer) -> None:
    """One batch of pairs messages: placed and scored, what it produced sent and delivered, then its state
    written. :class:`fence.Fenced` (nothing sent) when this worker left the group meanwhile."""
    app, m = ctx.flow.app, ctx.metrics
    gen = fence.generation(app)  # the group generation these events were read under
    out = StepOutput()
    late: list[DeadLetter] = []
    touched: dict[int, PartitionState] = {}
    replayed = 0
    later: list = []  # events after a gap: they come again once the messages before them have (unacked)
    for event in events:
        p = event.message.partition
        ps = touched.get(p) or await store(ctx, p, gen)
        touched[p] = ps
        verdict = ctx.gaps.verdict(p, event.message.offset, ps.pairs_offset)
        if verdict == GAP:
            verdict = DROP if await _rewind(ctx, event.message.tp, ps.pairs_offset + 1, event.message.offset) else APPLY
        if verdict == SKIP:  # already in the restored state
            replayed += 1
            continue
        if verdict == DROP:
            later.append(event)
            continue
        for msg in decode_pairs(event.value):  # ingest batches (wake-up marks may lead them), or a mark
            n = len(out.late)
            intervals = ps.step.place(msg, out)
            if len(out.late) > n:  # (rare: most messages have no late partial)
                late += [ps.step.deadletter(lp, ctx.topics.reports) for lp in out.late[n:]]
            # one message may complete a backlog's intervals (seconds of scoring): the loop's other
            # tasks (sink, timers, the ingest reader's group) get their turn between them too
            for i in range(0, len(intervals), SCORE_CHUNK):
                ps.step.score(intervals[i:i + SCORE_CHUNK], out)
                await pacer.tick()
            await pacer.tick()
        ps.applied(event.message.offset)
    if not await fence.still_member(app, gen):
        raise fence.Fenced
    fence.unack(app, later)
    if replayed:
        m.pairs_replayed.inc(replayed)
        log.info("skipped %d pairs messages read again that the restored state already holds", replayed)
    m.intervals.inc(out.intervals)
    m.detect_errors.inc(out.detect_errors)
    m.late_for_detection.inc(out.late_for_detection)
    m.partials.inc(out.applied)
    m.duplicates.inc(out.duplicates)
    if out.stale_marks:
        m.stale_marks.inc(out.stale_marks)
        log.info("ignored %d idle marks made before their reports partition was last woken (a worker that was "
                 "frozen while it made them)", out.stale_marks)
    pending = await _emit(ctx, out, late, touched)
    if pending:  # closed windows (and alerts, health) must be durable before the state says so
        await asyncio.gather(*pending)
    m.windows.inc(len(out.closed))
    await _write_state(ctx, touched)


async def _rewind(ctx: Context, tp, want: int, got: int) -> bool:
    """Pairs message ``got`` came, but the state ends before ``want`` (``runtime.gaps``): move the partition
    back to ``want`` (True), or, if the topic no longer has it, accept the gap (False). Logged either way."""
    consumer = ctx.flow.app.consumer
    begin = (await consumer.earliest_offsets(tp)).get(tp, 0)
    if begin > want:
        log.warning("pairs partition %d: its state ends before offset %d, which the topic no longer has (it starts "
                    "at %d: retention deleted it); going on from %d", tp.partition, want, begin, got)
        return False
    log.warning("pairs partition %d: message %d came, but its state ends before %d: reading again from %d (the "
                "messages between were skipped, e.g. by Faust during a rebalance)", tp.partition, got, want, want)
    ctx.gaps.rewinding(tp.partition, want)
    ctx.metrics.pairs_rewinds.inc()
    await _seek(ctx, tp, want)
    return True


async def _seek(ctx: Context, tp, offset: int) -> None:
    """Move ``tp`` to ``offset``, in the consumer's own thread, and let Faust deliver what comes from there: it
    drops a message below the last one it delivered, and the ones fetched before the move may still come."""
    consumer = ctx.flow.app.consumer
    await consumer._thread.seek_wait({tp: offset})
    consumer._read_offset.pop(tp, None)


def install(ctx: Context) -> None:
    flow, m = ctx.flow, ctx.metrics

    @flow.app.timer(1.0)
    async def rewind() -> None:
        """Until a partition moved back gets its message (``runtime.gaps``), move it back again each second: the
        messages Faust had fetched after the gap come first, and it drops what comes below the last of them."""
        for p, want in list(ctx.gaps.rewound.items()):
            try:
                await _seek(ctx, TP(ctx.topics.pairs, p), want)
            except Exception as exc:  # noqa: BLE001 - revoked meanwhile: the next owner starts from its own state
                log.warning("pairs partition %d: could not move back to %d (%s)", p, want, exc)

    @flow.app.agent(flow.pairs, name="aggregate")
    async def aggregate(stream):
        pacer = Pacer()
        async for events in stream.take_events(1000, within=0.05):
            # everything the batch causes happens before its events are acked: take_events acks them when
            # the next batch is asked for, and also when the body raised (in its ``finally``), so a batch that
            # fails part way must take its events out of the acknowledgements itself
            try:
                await _batch(ctx, events, pacer)
            except fence.Fenced:
                # put out of the group mid-batch (paused past the session timeout, or the batch outlasted
                # the rebalance timeout): another worker owns these partitions and restored their state;
                # nothing this batch caused may be sent after that restore (``runtime.fence``)
                fence.unack(flow.app, events)
                ctx.stores.clear()
                ctx.gaps.clear()
                m.fenced.inc(len(events))
                log.warning("aggregate: this worker was no longer in the group during its batch of %d pairs "
                            "messages (paused longer than the session timeout, or the batch outlasted the "
                            "rebalance timeout); the batch is dropped, unacknowledged, and read again by the "
                            "partitions' owner", len(events))
            except BaseException as exc:
                # a batch that failed part way (a state too big to send, a bug): its windows hold part of it in
                # memory and its state may be partly written, so neither may go on. Acked, its offsets would be
                # committed past messages whose effects were never stored: lost at the next restore
                fence.unack(flow.app, events)
                ctx.stores.clear()
                if not isinstance(exc, Exception):  # cancelled: the worker stops, and reads them again next time
                    raise
                log.exception("aggregate: a batch of %d pairs messages failed", len(events))
                exit_on_failed_batch("aggregate", len(events), exc)
