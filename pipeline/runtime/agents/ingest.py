"""The ingest stage's shell: reports -> ``Ingest`` -> one pairs message per destination partition, dead letters.

The reports topic is read below Faust's per-event machinery, by a plain aiokafka consumer in
its own group, ``<app_id>-ingest`` (:class:`ReportsReader`, an early task of the app: ``runtime.app.App``).
Real fleets send many small reports (one per host and interval, a handful of samples each);
delivering each as a Faust event cost ~90 µs of the worker's time per report before any
work was done (``benchmarks/floor.py``: aiokafka's ``getmany`` and decode, ~6 µs). The
stages after it (windows, detection, attribution, monitors) stay Faust agents.

At-least-once, as before: a batch's pairs messages and dead letters are sent through the
app's producer and *delivered* before the batch's offsets are committed, and a progress mark
only promises what has been sent. A commit refused (the group rebalanced meanwhile) is
logged: whoever owns the partition next reads the batch again, and the windows drop what
they already applied (``aggregate.windows``: per-source offsets and report identities).

Idle sources. A reports partition marked idle (caught up and quiet) does not hold the pairs
partitions' watermarks back. A batch holds up to 2,000 reports, often of one partition only, so
each batch first wakes, in every pairs partition, every source it carries or has not read to its
end (a non-idle mark ahead of the data): otherwise one partition's backlog would move the
watermark past the reports of another partition still marked idle, read next, and make them late.
For the same reason a partition that changes hands is woken by the worker that loses it and by the one
that gets it (:meth:`ReportsReader.wake`): an idle mark is a promise its reader stops keeping then. And
a backlog on a partition after a quiet spell wakes every partition, other workers' too, ahead of its
data: those may have a backlog of their own that their owner has not read yet.

Upgrading from a worker that read the reports in the Faust group ``<app_id>``: a partition the
ingest group has no offset for starts where ``<app_id>`` committed it, not at the beginning
(which would replay the whole topic into closed windows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.errors import first_line
from pipeline.ingest.step import BatchResult, IngestResult, deadletter
from pipeline.ingest.validate import Rejection
from pipeline.runtime import kafka
from pipeline.runtime.agents.context import PAIRS_MESSAGE_BYTES, Context, Pacer
from pipeline.runtime.land import backoff_delays
from pipeline.wire.records import DeadLetter, ProgressMark, chunks, encode_deadletter, encode_mark, encode_pairs_batch

__all__ = ["install", "send_deadletter", "ReportsReader", "ingest_group"]

log = logging.getLogger("flowmon.agents")


async def send_deadletter(ctx: Context, dl: DeadLetter):
    """Send a dead letter (keyed by its reason) and count it; returns the delivery future."""
    ctx.metrics.deadletters.labels(reason=dl.reason).inc(max(dl.samples, 1))
    return await ctx.send(ctx.topics.deadletter, encode_deadletter(dl), key=dl.reason.encode())


def ingest_group(app_id: str) -> str:
    """The consumer group that reads the reports topic.

    >>> ingest_group("flowmon")
    'flowmon-ingest'
    """
    return f"{app_id}-ingest"


def _wake_marks(sources: Iterable[int]) -> list[bytes]:
    """Progress marks that say ``sources`` are active (not idle), promising nothing more; dated now, so
    an idle mark made before them (by a worker frozen mid-mark, past its hand-over) cannot undo them."""
    at = int(time.time() * 1000)
    return [encode_mark(ProgressMark(src, None, None, at)) for src in sorted(sources)]


class ReportsReader(ConsumerRebalanceListener):
    """Reads the reports topic in batches (group :func:`ingest_group`), feeds ``ctx.core``, sends what it
    returns, commits once that is delivered; keeps ``ctx.progress`` following its assignment."""

    #: Reports per batch at most (what one ``getmany`` returns): per-batch costs (one pairs message
    #: per pairs partition, one commit) are spread over this many.
    BATCH = 2000
    #: Reports per ``Ingest.process_batch`` call: the event loop gets a turn (``Pacer``) between two.
    CORE_BATCH = 500

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.consumer = None
        self.faust_group = None  # a consumer of group <app_id> that never joins it: reads its committed offsets
        self.committed: dict[int, int] = {}  # reports partition -> next offset to process, as committed
        self.assigned: set[int] = set()
        #: held while progress marks are sent: a hand-over's wake marks (:meth:`wake`) and the marks
        #: timer's never interleave
        self.marks_lock = asyncio.Lock()
        #: counts hand-overs: the marks timer drops the marks it worked out before one (``agents.marks``)
        self.epoch = 0

    # --- what the marks timer asks ---------------------------------------------------------
    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.ctx.topics.reports, p) for p in sorted(self.assigned)]

    def fetched_to_end(self, tp: TopicPartition) -> bool | None:
        """Is everything before the log end, as the last fetch saw it, processed (no broker round trip)?
        False too before a first fetch; None when the partition is not assigned (revoked meanwhile)."""
        try:
            end = self.consumer.highwater(tp) if self.consumer is not None else None
        except Exception:  # noqa: BLE001 - aiokafka raises for a partition it no longer has
            return None
        return end is not None and self.next_offset(tp.partition) >= end

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The log ends now (ListOffsets: one broker round trip)."""
        return await self.consumer.end_offsets(tps) if self.consumer is not None and tps else {}

    def next_offset(self, partition: int) -> int:
        """The next offset to process on ``partition``: after what was processed, else where the group
        (or, on an upgrade, the Faust group) committed it, else 0."""
        last = self.ctx.progress.last_offset.get(partition)
        return last + 1 if last is not None else self.committed.get(partition, 0)

    # --- rebalance ---------------------------------------------------------------------------
    async def wake(self, partitions: Iterable[int], why: str, timeout_s: float = 10.0) -> None:
        """Mark reports ``partitions`` active (not idle) in every pairs partition, and wait for delivery.

        A hand-over: an idle mark is a promise about a partition only while its maker reads it. Once it is
        revoked, a backlog may wait there that no one reads yet, and with the partition still marked idle the
        other partitions' backlogs would move the watermark past it: its reports, read by the next owner,
        would be late. So a worker wakes the partitions it loses before the group moves on (the group waits
        for the revoke callback), and the partitions it gets before it reads them (their last owner may have
        died without a word); the next owner marks them idle again once it finds them caught up and quiet.
        (While two workers own partitions that are all idle and a backlog reaches both, the one that reads
        first wakes every partition with its first data: :meth:`_process`.)"""
        wake = _wake_marks(partitions)
        if not wake:
            return
        ctx = self.ctx
        async with self.marks_lock:
            self.epoch += 1
            try:
                pending = []
                for p in range(ctx.settings.partitions):
                    for chunk in chunks(wake, PAIRS_MESSAGE_BYTES):
                        pending.append(await ctx.send(ctx.topics.pairs, encode_pairs_batch(chunk), p))
                await asyncio.wait_for(asyncio.gather(*pending), timeout_s)
            except Exception as exc:  # noqa: BLE001 - a stopping producer, an unreachable broker: not fatal
                log.warning("ingest: could not mark reports %s active on %s (%s); a backlog there may be "
                            "late if they were idle", sorted(partitions), why, first_line(exc) or type(exc).__name__)

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        for tp in revoked:
            self.ctx.progress.revoked(tp.partition)
            self.assigned.discard(tp.partition)
            self.committed.pop(tp.partition, None)
        await self.wake([tp.partition for tp in revoked], "revocation")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        """Wake the partitions, find where each starts, then let them be read.

        aiokafka hands the new assignment to the fetcher *before* this callback runs, and ``getmany``
        returns its records meanwhile: fetched from the auto-reset position (the beginning), not yet
        from where the Faust group left a partition on an upgrade, and read before the wake marks are
        sent. So the partitions stay paused until both are done (``getmany`` drops what a paused
        partition had fetched)."""
        ctx, now = self.ctx, time.time()
        tps = sorted(assigned)
        mine = {tp.partition for tp in tps}
        self.consumer.pause(*tps)  # before any await: nothing of the new assignment is returned until resumed
        try:
            for p in list(ctx.progress.last_seen):
                if p not in mine:
                    ctx.progress.revoked(p)
            for p in mine:
                ctx.progress.assigned(p, now)
            self.assigned = mine
            await self.wake(mine, "assignment")
            try:
                await self._start_offsets(tps)
            except Exception as exc:  # noqa: BLE001 - the group's own offsets (or the reset) still apply
                log.warning("ingest: could not read the committed offsets of %s (%s)", ctx.topics.reports,
                            first_line(exc))
        finally:
            held = self.consumer.paused()
            self.consumer.resume(*[tp for tp in tps if tp in held])  # one revoked meanwhile is no longer ours
        log.info("ingest: assigned reports %s", sorted(mine))

    async def _start_offsets(self, tps: list[TopicPartition]) -> None:
        """Where each assigned partition starts: the ingest group's offset, else the Faust group's (upgrade).
        (Through consumers, not the admin client: Tansu's OffsetFetch answer to the admin client does not
        decode in aiokafka 0.14. aiokafka refreshes committed offsets before this callback, so asking
        here is what it provides for.)"""
        s = self.ctx.settings
        for tp in tps:
            own = await self.consumer.committed(tp)
            if own is not None:
                self.committed[tp.partition] = own
                continue
            old = await self.faust_group.committed(tp) if self.faust_group is not None else None
            if old is not None:
                self.committed[tp.partition] = old
                self.consumer.seek(tp, old)
                log.info("ingest: %s[%d] starts at offset %d, where group %s left it", tp.topic, tp.partition,
                         old, s.app_id)

    # --- reading -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read for ever; a failed consumer is restarted (after a backoff), never the worker."""
        delays = backoff_delays()
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - ingest that stops would silently stall everything
                delay = next(delays)
                log.error("ingest: consumer failed (%s); restarting it in %.1f s", first_line(exc), delay)
                await asyncio.sleep(delay)

    async def _consume(self) -> None:
        ctx, s = self.ctx, self.ctx.settings
        conn = ctx.flow.conn
        self.faust_group = kafka.consumer(conn, group=s.app_id)
        self.consumer = kafka.consumer(
            conn, group=ingest_group(s.app_id), **kafka.group_timings(s), auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(s.max_message_bytes * 2, 4 * 1_048_576))
        try:
            await self.faust_group.start()
            await self.consumer.start()
            self.consumer.subscribe([ctx.topics.reports], listener=self)
            while True:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=self.BATCH)
                if batch:
                    await self._process(batch)
        finally:
            self.assigned.clear()
            await self.consumer.stop()
            await self.faust_group.stop()

    def _one_by_one(self, chunk: list[tuple[bytes, int, int]], now: float) -> BatchResult:
        """``process_batch`` of ``chunk`` as ``process`` of each report; a report it fails on is dead-lettered."""
        t, out = self.ctx.topics, BatchResult()
        for raw, part, off in chunk:
            try:
                res = self.ctx.core.process(raw, t.reports, part, off, now)
            except Exception as exc:
                log.exception("ingest failed on %s[%d]@%d", t.reports, part, off)
                res = IngestResult(deadletters=[deadletter(
                    Rejection("internal_error", f"{type(exc).__name__}: {exc}", raw=raw), "ingest", t.reports, part,
                    off, now)])
            for p, payload in res.messages.items():
                out.messages.setdefault(p, []).append(payload)
            out.deadletters.extend(res.deadletters)
            out.starts.append(res.start)
            out.accepted += res.accepted
            out.rejected += res.rejected
        return out

    def _unfinished(self, batch: dict[TopicPartition, list]) -> set[int]:
        """The reports partitions with reports in ``batch`` or not known to be read to their end."""
        out = {tp.partition for tp, records in batch.items() if records}
        for tp in self.assignment():
            if self.fetched_to_end(tp) is False:  # None: revoked meanwhile, not ours to wake
                out.add(tp.partition)
        return out

    async def _process(self, batch: dict[TopicPartition, list]) -> None:
        """One batch: through the core, pairs messages and dead letters sent and delivered, progress
        recorded, offsets committed."""
        ctx, t, m = self.ctx, self.ctx.topics, self.ctx.metrics
        pacer = Pacer()
        now = time.time()
        by_part: dict[int, list[bytes]] = {}
        pending = []
        done: list[tuple[int, int, int | None]] = []
        samples = 0
        # reports on a partition quiet for source_idle_s, which its marks may have said idle (see below)
        quiet = any(recs and ctx.progress.idle(tp.partition, now) for tp, recs in batch.items())
        records = [(rec.value or b"", tp.partition, rec.offset) for tp, recs in batch.items() for rec in recs]
        for i in range(0, len(records), self.CORE_BATCH):
            chunk = records[i:i + self.CORE_BATCH]
            try:
                res = ctx.core.process_batch(chunk, t.reports, now)
            except Exception:  # a bug must not stop the worker nor lose the input: one report at a time
                log.exception("ingest failed on a batch of %s; retrying its %d reports one by one", t.reports,
                              len(chunk))
                res = self._one_by_one(chunk, now)
            for p, payloads in res.messages.items():
                by_part.setdefault(p, []).extend(payloads)
            for dl in res.deadletters:
                pending.append(await send_deadletter(ctx, dl))
            done.extend((part, off, start) for (_, part, off), start in zip(chunk, res.starts))
            samples += res.accepted
            await pacer.tick()
        # every source with reports in this batch, or still to read, is active again in every pairs partition
        # *before* any of the batch's data: a source marked idle earlier would otherwise not hold the
        # watermark back while another source's backlog went through, and its own reports, read next,
        # would be late (a backfill into an idle worker; a replacement worker reading a dead one's backlog)
        wake_up = self._unfinished(batch)
        # A backlog (reports older than the idle lag) after a quiet spell wakes every source, other workers'
        # too: theirs may have a backlog of their own, not read yet; marked idle, they would not hold the
        # watermark back while ours moves it, and their reports would be late. Their owners mark them idle
        # again at their next mark if they are still caught up and quiet. (Not for reports of now: live data
        # cannot move the watermark past a backlog that is late anyway, and a sparse fleet would hold every
        # window back at every report.)
        if quiet and any(start is not None and start < now - ctx.settings.source_idle_lag_s for _, _, start in done):
            wake_up = range(ctx.settings.partitions)
        wake = _wake_marks(wake_up)
        for p in range(ctx.settings.partitions):
            for chunk in chunks(wake + by_part.get(p, []), PAIRS_MESSAGE_BYTES):
                pending.append(await ctx.send(t.pairs, encode_pairs_batch(chunk), p))
        for part, off, start in done:  # a mark may only promise what has been sent
            if part in self.assigned:  # a partition revoked meanwhile: its next owner reads the batch again
                ctx.progress.processed(part, off, start, now)
        m.samples.inc(samples)
        m.reports.inc(len(done))
        if pending:
            await asyncio.gather(*pending)  # delivered before the offsets say so
        mine = self.consumer.assignment()  # a partition revoked meanwhile is its next owner's to commit
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records and tp in mine}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:  # the group moved on: the next owner reads the batch again (deduplicated)
            log.warning("ingest: offsets not committed (%s); the batch will be read again and deduplicated", exc)
            return
        for tp, off in offsets.items():
            if tp.partition in self.assigned:
                self.committed[tp.partition] = off


def install(ctx: Context) -> None:
    reader = ctx.reader = ReportsReader(ctx)

    @ctx.flow.app.early_task  # its group joins beside Faust's (``runtime.app.App``)
    async def ingest() -> None:
        await reader.run()
