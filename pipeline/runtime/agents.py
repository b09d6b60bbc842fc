"""Shell: Faust agents that wire topics and the window state to the pure cores.

* ``ingest`` (reports topic): ``ingest.Ingest`` validates, places and pre-aggregates a
  report, then sends one message per pairs partition, and dead letters.
* ``marks`` (timer): promises, per reports partition owned, how far ingest got
  (``ingest.SourceProgress``), on every pairs partition.
* ``aggregate`` (pairs topic): ``windows.PartitionWindows`` per partition; closed windows
  go to the windows topic (delivery awaited), late partials to the dead-letter topic;
  every complete agent interval is scored by ``detect.Detection`` and its alert events
  go to the anomalies topic; the changed window and detector state goes to the state
  topic (``state.py``), all before the batch is acked.

At-least-once: Faust flushes the producer before it commits offsets, so whatever an
acked event caused is durable first; replays are absorbed by the windows' per-source
offsets (see ``windows``).
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from faust.types import TP

from pipeline.runtime.app import Flow
from pipeline.ingest.step import Ingest, IngestResult, SourceProgress, deadletter, encode
from pipeline.attribute.correlate import AttributionStage
from pipeline.detect.detection import Detection
from pipeline.runtime.restore import PartitionState, restore_many, restore_stage
from pipeline.ingest.topology import Topology
from pipeline.ingest.validate import Rejection, Validator
from pipeline.aggregate.windows import PartitionWindows
from pipeline.wire.contract import pair_partition

__all__ = ["install"]

log = logging.getLogger("flowmon.agents")

#: Largest pairs message the ingest stage sends (a batch's partials for one partition are split above it).
PAIRS_MESSAGE_BYTES = 512 * 1024


def _chunks(payloads: list[bytes], limit: int):
    """Consecutive runs of ``payloads`` whose joined size stays under ``limit`` (at least one each)."""
    chunk: list[bytes] = []
    size = 0
    for b in payloads:
        if chunk and size + len(b) > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(b)
        size += len(b) + 1
    if chunk:
        yield chunk


def install(flow: Flow, topology: Topology | None = None) -> None:
    """Define the agents and timers on ``flow.app``."""
    s = flow.settings
    app, m, t = flow.app, flow.metrics, flow.topics
    core = Ingest(Validator(topology, max_future_s=s.max_future_s, max_message_bytes=s.max_message_bytes,
                            max_samples=s.max_samples_per_report), s.window_s, s.partitions,
                  grid_s=s.interval_s)
    progress = SourceProgress(s.source_idle_s, s.source_idle_lag_s)
    stores: dict[int, PartitionState] = {}
    health_upto: dict[int, int] = {}  # last 'upto' sent to the health topic, per pairs partition

    def new_state(q: int) -> PartitionState:
        return PartitionState(
            PartitionWindows(q, s.window_s, s.allowed_lateness_s, s.partitions, interval_lateness_s=s.interval_lateness_s,
                             grid_s=s.interval_s),
            Detection(interval_s=s.interval_s, window_s=s.window_s, model=s.detector, instances=s.detect_instances))

    async def send(topic: str, value: bytes, partition: int | None = None, key: bytes | None = None):
        return await app.producer.send(topic, key, value, partition, None, None)

    # --- ingest ----------------------------------------------------------------------------
    @app.agent(flow.reports, name="ingest")
    async def ingest(stream):
        # A batch of reports -> one pairs message per destination partition (a JSON array of the
        # per-report messages, each keeping its origin "o", so replay detection is unchanged):
        # per-message costs are paid per batch (benchmarks: 2.5x the rate on small reports).
        async for events in stream.take_events(500, within=0.05):
            now = time.time()
            by_part: dict[int, list[bytes]] = {}
            done = []
            for event in events:
                msg = event.message
                try:
                    res = core.process(event.value or b"", t.reports, msg.partition, msg.offset, now)
                except Exception as exc:  # a bug must not stop the worker nor lose the input
                    log.exception("ingest failed on %s[%d]@%d", t.reports, msg.partition, msg.offset)
                    res = IngestResult(deadletters=[deadletter(
                        Rejection("internal_error", f"{type(exc).__name__}: {exc}", raw=event.value or b""),
                        "ingest", t.reports, msg.partition, msg.offset, now)])
                for p, payload in res.messages.items():
                    by_part.setdefault(p, []).append(payload)
                for dl in res.deadletters:
                    await send(t.deadletter, encode(dl), key=dl["reason"].encode())
                    m.deadletters.labels(reason=dl["reason"]).inc(max(dl["samples"], 1))
                done.append((msg.partition, msg.offset, res.start))
                m.samples.inc(res.accepted)
            for p, payloads in by_part.items():
                for chunk in _chunks(payloads, PAIRS_MESSAGE_BYTES):
                    await send(t.pairs, b"[" + b",".join(chunk) + b"]", p)
            for part, off, start in done:  # a mark may only promise what has been sent
                progress.processed(part, off, start, now)
            m.reports.inc(len(done))

    @app.timer(s.mark_interval_s)
    async def marks() -> None:
        now = time.time()
        mine = [tp for tp in app.consumer.assignment() if tp.topic == t.reports]
        # idle candidates: nothing processed for source_idle_s
        idle = {tp for tp in mine if progress.idle(tp.partition, now)}
        for tp in mine:
            caught_up = False
            # the log end as the last fetch saw it: no broker round trip (ListOffsets took ~1 s per
            # tick on Kafka), and right on Tansu, whose ListOffsets answers the last batch's base + 1
            try:
                end = app.consumer.highwater(tp) if tp in idle else None
            except Exception:  # not fetched yet, or mid-rebalance: try again next tick
                end = None
            if end is not None:
                last = progress.last_offset.get(tp.partition)
                # next offset to process: after what we processed, else where the group committed
                nxt = last + 1 if last is not None else (app.consumer._committed_offset.get(tp) or 0)
                caught_up = nxt >= end
            mark = progress.mark(tp.partition, now, caught_up)
            if mark is None:
                continue
            payload = encode(mark)
            for p in range(s.partitions):
                await send(t.pairs, payload, p)

    # --- aggregate -------------------------------------------------------------------------
    async def store(p: int) -> PartitionState:
        ps = stores.get(p)
        if ps is None:
            # restore every assigned pairs partition not restored yet, with one consumer
            await app.producer.flush()  # our own last writes must be readable
            mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == t.pairs} | {p}
            todo = [new_state(q) for q in sorted(mine) if q not in stores]
            for q_ps, n in zip(todo, await restore_many(flow.bootstrap, t.state, todo)):
                stores[q_ps.partition] = q_ps
                q_pw = q_ps.windows
                log.info("pairs partition %d: restored %d keys: %d open, %d closed windows, %d detector keys, "
                         "watermark %s", q_ps.partition, n, len(q_pw.open), len(q_pw.closed),
                         len(q_ps.detection.keys) if q_ps.detection else 0, q_pw.watermark)
            ps = stores[p]
        return ps

    @app.agent(flow.pairs, name="aggregate")
    async def aggregate(stream):
        async for events in stream.take_events(1000, within=0.05):
            # everything below happens before these events are acked (take_events acks after)
            closed: list[dict] = []
            late: list[dict] = []
            alerts: list[dict] = []
            opened_in: dict[int, list[dict]] = {}
            touched: dict[int, PartitionState] = {}
            for event in events:
                p = event.message.partition
                ps = touched.get(p) or await store(p)
                touched[p] = ps
                pw, det = ps.windows, ps.detection
                val = orjson.loads(event.value)
                for sub in val if type(val) is list else (val,):  # ingest batches; marks come alone
                    out = pw.apply(sub)
                    closed.extend(out.closed)
                    if det is not None:
                        for iv in out.intervals:
                            try:
                                new = det.interval(iv)
                                alerts.extend(new)
                                opened_in.setdefault(p, []).extend(e for e in new if e["event"] == "opened")
                            except Exception:  # a detector bug must not stop the windows
                                log.exception("detection failed on %s->%s at %s", iv["src"][0], iv["dst"][0], iv["t"])
                                m.detect_errors.inc()
                        m.intervals.inc(len(out.intervals))
                    m.late_for_detection.inc(out.late_for_detection)
                    for part, origin in out.late:
                        rej = Rejection("late", f"window {part['ws']} of {part['src'][0]}->{part['dst'][0]} "
                                        f"closed (watermark {pw.watermark}, lateness {s.allowed_lateness_s} s)",
                                        samples=part["c"][5], payload=part)
                        late.append(deadletter(rej, "aggregate", t.reports, origin[0], origin[1]))
                    m.partials.inc(out.applied)
                    m.duplicates.inc(out.duplicates)
            pending = []
            for rec in closed:
                key = f"{rec['src_subnet']}|{rec['dst_subnet']}".encode()
                part = pair_partition(rec["src_subnet"], rec["dst_subnet"], s.partitions)
                pending.append(await send(t.windows, encode(rec), part, key))
            for dl in late:
                pending.append(await send(t.deadletter, encode(dl), key=b"late"))
                m.deadletters.labels(reason="late").inc(max(dl["samples"], 1))
            now = time.time()
            for a in alerts:  # an alert's events keep their order: keyed by alert_id
                a["emitted_at"] = now
                pending.append(await send(t.anomalies, encode(a), key=a["alert_id"].encode()))
                m.anomalies.labels(event=a["event"], metric=a["metric"]).inc()
            # the health of every scored key, and the alerts opened, to the attribution stage
            for p, ps in touched.items():
                if ps.detection is None:
                    continue
                health = ps.detection.take_health()
                opened = opened_in.get(p, [])
                upto = ps.windows.iv_upto
                if not health and not opened and (upto is None or upto == health_upto.get(p)):
                    continue
                chunks = list(_chunks([encode(h) for h in health], PAIRS_MESSAGE_BYTES)) or [[]]
                for i, chunk in enumerate(chunks):
                    last = i == len(chunks) - 1
                    msg = (b'{"p":%d,"upto":%s,"health":[' % (p, b"null" if upto is None or not last else b"%d" % upto)
                           + b",".join(chunk) + b'],"opened":' + (encode(opened) if last else b"[]") + b"}")
                    pending.append(await send(t.health, msg, 0, str(p).encode()))
                if upto is not None:
                    health_upto[p] = upto
            if pending:  # closed windows (and alerts, health) must be durable before the state says so
                await asyncio.gather(*pending)
            m.windows.inc(len(closed))
            biggest = 0
            for p, ps in touched.items():
                for k, v in ps.take_dirty().items():
                    payload = None if v is None else encode(v)
                    await send(t.state, payload, p, k.encode())
                    if payload is not None and '"__detect__"' in k:
                        biggest = max(biggest, len(payload))
            m.open_windows.set(sum(len(ps.windows.open) for ps in stores.values()))
            m.detector_keys.set(sum(len(ps.detection.keys) for ps in stores.values() if ps.detection))
            if biggest:
                m.detector_state_bytes.set(biggest)

    # --- attribute -------------------------------------------------------------------------
    stage_box: dict[str, AttributionStage] = {}

    async def publish(recs: list[dict], nhi: list[dict]) -> list:
        futs = []
        for r in recs:
            futs.append(await send(t.attributions, encode(r), key=r["alert_id"].encode()))
            m.attributions.labels(cause=r["cause"]).inc()
        for r in nhi:
            futs.append(await send(t.nhi, encode(r), key=f"{r['scope_kind']}|{r['scope']}".encode()))
        return futs

    @app.agent(flow.health, name="attribute")
    async def attribute(stream):
        # one partition: every pairs partition's health meets here (fleet-wide correlation)
        async for events in stream.take_events(1000, within=0.05):
            stage = stage_box.get("stage")
            if stage is None:
                stage = stage_box["stage"] = AttributionStage(s.partitions, s.interval_s)
                replayed, recs, nhi = await restore_stage(flow.bootstrap, t.attribution_state, t.health, stage,
                                                          events[0].message.offset)
                log.info("attribution stage restored: done up to %s, %d messages replayed", stage.done_upto, replayed)
                pending = await publish(recs, nhi)
            else:
                pending = []
            now = time.time()
            for event in events:
                try:
                    recs, nhi = stage.apply(orjson.loads(event.value), now, event.message.offset)
                except Exception:  # a bug must not stop the stream; the message stays in the topic
                    log.exception("attribution failed on %s@%d", t.health, event.message.offset)
                    m.detect_errors.inc()
                    continue
                pending += await publish(recs, nhi)
            if pending:
                await asyncio.gather(*pending)
            nxt = stage.replay_from()
            state = {"stage": stage.state(), "replay_from": nxt if nxt is not None else events[-1].message.offset + 1}
            await send(t.attribution_state, encode(state), 0, b"stage")

    # --- rebalances ---------------------------------------------------------------------------
    # After any rebalance, rebuild every window store from the table: Faust has restored the
    # table for the partitions we now hold, and our write-through kept it current for the ones
    # we kept. An in-memory store is never trusted across a rebalance (another worker may have
    # advanced that partition meanwhile).
    @app.on_partitions_revoked.connect
    async def on_revoked(sender, revoked: set[TP], **kwargs) -> None:
        stores.clear()
        if any(tp.topic == t.health for tp in revoked):
            stage_box.clear()  # restored from its state topic by whoever gets the partition next
        for tp in revoked:
            if tp.topic == t.reports:
                progress.revoked(tp.partition)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned: set[TP], **kwargs) -> None:
        stores.clear()
        now = time.time()
        mine = {tp.partition for tp in assigned if tp.topic == t.reports}
        for p in list(progress.last_seen):
            if p not in mine:
                progress.revoked(p)
        for p in mine:
            progress.assigned(p, now)
        log.info("assigned reports %s, pairs %s", sorted(mine),
                 sorted(tp.partition for tp in assigned if tp.topic == t.pairs))
