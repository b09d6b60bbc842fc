"""Tumbling event-time windows per directional subnet pair, for one pairs-topic partition.

Pure state machine, no Kafka: ``PartitionWindows.apply(message)`` takes what arrives
on one partition of the pairs topic, in order, and says what to emit.

Messages (the pairs topic carries both kinds, in one order per partition; the records and
their JSON are ``wire.records``; ``apply`` also takes a message's decoded JSON):

* data, ``PairsMessage``: one report's partials (``preagg.partials``; each carries the
  report's identity, ``validate.report_identity``), its ``origin`` (where the report was
  read, for dead letters), its ``start`` and the fleet-wide ``grid`` interval it belongs to
  (``ingest.step.grid_interval``: the one containing the middle of the agent's own interval);
* ``ProgressMark``: the ingest stage promises it has sent everything it has read from that
  reports partition up to that event time (``None`` if nothing yet); ``idle`` (optional)
  says the partition is caught up and quiet, with the wall clock less a lag; ``at`` (optional)
  is when its maker found that out.

Watermark. Each reports partition (a *source*) progresses at its own pace; the
partition's watermark is the minimum over the *active* sources of the largest event time
each has reached (data or mark); idle sources do not hold it back. Window
``[ws, ws + W)`` closes when the watermark reaches ``ws + W + lateness``: it is then
emitted exactly once and remembered as closed for one more window length. When every
source is idle, windows also close by the idle marks' clock (the end of a finished
stream), without moving the watermark: a backfill of old data into an idle worker is
not late. Because the decision depends only on the order of messages in the
partition (and marks are messages too), replaying the partition gives the same result.

Stale idle marks. An idle mark is a promise its maker keeps only while it reads the partition.
A worker frozen in the middle of making one (a VM pause, SIGSTOP) past its session timeout sends
it when it thaws, after the partition's next owner has woken it (a non-idle mark) and while that
owner reads a backlog there: taken, it would let the other sources close windows the backlog
belongs to. So each source remembers the ``at`` of the last mark that said it is active, and an
idle mark dated before that is ignored (marks of earlier versions, without ``at``, are taken).
This orders marks by their makers' wall clocks: a clock behind by more than the time between a
wake and the next idle mark only delays closing, never closes early.

Idempotence. Delivery is at least once, and agents re-send too: a crash replays reports
(re-cut into the same partials), and an agent that retries or drains its buffer after an
outage sends a report again, possibly to another reports partition. Every window
remembers the identities of the reports it has applied (and keeps them for one more
window length after closing); a partial whose report it has already applied is a
duplicate, counted and skipped. Two *different* reports of one host and interval (an
agent that splits an interval) have different identities: both count. A replay may come
long after the window closed and was forgotten (the ingest stage runs ahead of this one
on a backlog, and re-reads what it had not committed when it died): each pairs partition
also keeps, per reports partition, the highest report offset it has had a message of.
Messages come in offset order from one source, so one at or below it is a replay: a
duplicate, never late (the first time it was applied, or dead-lettered once).

Lateness. A partial for a window that has already closed is *late*: it is handed back
in ``Outcome.late`` with its origin (``aggregate.step`` dead-letters it); it never changes
an emitted window.

Detection intervals. Next to each window, the per-host sums of every grid interval ``g``
are kept until the closing threshold passes ``g + grid_s/2 + interval_lateness_s``; then
the interval is handed over in ``Outcome.intervals`` (merged over the windows its reports
fell in: a report placed by its own ``start`` in one window may belong to a grid interval
in the next). A report arriving after its interval was handed over still counts in its
window, not in detection (``Outcome.late_for_detection``).

Instances. Every window also keeps, per reporting instance, its counters over the whole
window, added exactly when the window's own are (a duplicate counts nowhere; every applied
partial counts in its instance, also one that arrives after its interval was scored), so
they always add up to the window's counters, after a replay or a restore too. They leave
with the closed window (``FlowWindow.instances``). A window restored from the state of a
worker that did not keep them has none (``None``), never a split that misses part of it.

Examples
--------
>>> w = PartitionWindows(partition=0, window_s=600, lateness_s=60, sources=1)
>>> part = Partial(["s1", "a1", "v1"], ["s2", "a2", "v1"], 0, "h1", [100, 0, 1, 0, 1, 1, 1, 900], {157: 1},
...                [1, 0], [None, None, None], None, 7, {})
>>> w.apply(PairsMessage(Origin(0, 10), 0, 0, [part])).closed
[]
>>> w.apply(PairsMessage(Origin(0, 10), 0, 0, [part])).duplicates   # replayed: skipped
1
>>> w.apply(PairsMessage(Origin(0, 99), 0, 0, [part])).duplicates   # re-sent by the agent: skipped
1
>>> out = w.apply(ProgressMark(0, 660))
>>> [(r.src_subnet, r.dst_subnet, r.window_start, r.bytes, r.hosts) for r in out.closed]
[('s1', 's2', 0, 100, 1)]
>>> [(e["instance"], e["bytes_sent"], e["samples"]) for e in out.closed[0].instances]
[('h1', 100, 1)]
>>> w.apply(PairsMessage(Origin(0, 100), 30, 30, [part._replace(report_id=8)])).late[0].origin   # new, too late
Origin(partition=0, offset=100)
>>> w.apply(PairsMessage(Origin(0, 100), 30, 30, [part._replace(report_id=8)])).duplicates   # read again
1
"""

from __future__ import annotations

import sys
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator
from typing import Any

from operator import add

import orjson

from pipeline.wire.contract import WIRE_VERSION
from pipeline.wire.records import (
    BYTES_RECEIVED,
    BYTES_SENT,
    GridInterval,
    FLOWS,
    HOST_COUNTERS,
    HOST_IP,
    HOST_MAXIMA,
    HOST_MEDIANS,
    HOST_RTT_HIST,
    HOST_TOP,
    MAX_RETRANSMISSIONS,
    MAX_TIMEOUTS,
    RETRANSMISSIONS,
    RTT_COUNT,
    RTT_SUM_US,
    SAMPLES,
    TIMEOUTS,
    TOP_RETRANSMISSIONS,
    TOP_RTT,
    TOP_TIMEOUTS,
    FlowWindow,
    LatePartial,
    Origin,
    PairsMessage,
    Partial,
    ProgressMark,
    WindowState,
    decode_message,
    decode_window_state,
    encode_window_state,
    host_sums,
    instance_entries,
    pack_ids,
    state_ids,
    zero_counters,
)
from pipeline.wire.rtt import merge_into, quantile

__all__ = ["PartitionWindows", "Outcome", "WindowAgg", "ClosedIds", "PROGRESS_KEY", "merge_host"]

PROGRESS_KEY = "__progress__"

_intern = sys.intern

#: The one-sample maxima compared across reports, each with the position of the top remote IP that goes with it.
_MAXIMA = ((MAX_RETRANSMISSIONS, TOP_RETRANSMISSIONS), (MAX_TIMEOUTS, TOP_TIMEOUTS))


def merge_host(cur: list, other: list) -> None:
    """Fold one host's interval sums ``other`` into ``cur`` (both ``wire.records.host_sums``): counters
    and histograms add up; the one-sample maxima take the larger, with the top IP that goes with it.
    ``cur``'s elements are replaced, never changed in place (they may be a partial's own lists).

    >>> a = [[1, 0, 5, 0], {3: 1}, [5, 0], ["10.0.0.1", None, "10.0.0.1"], "10.0.0.9", {3: 1}]
    >>> first = list(a)   # the same element objects
    >>> merge_host(a, [[2, 0, 9, 1], {3: 2}, [9, 1], ["10.0.0.2", "10.0.0.2", "10.0.0.2"], "10.0.0.9", {3: 1}])
    >>> a
    [[3, 0, 14, 1], {3: 3}, [9, 1], ['10.0.0.2', '10.0.0.2', '10.0.0.1'], '10.0.0.9', {3: 2}]
    >>> first   # left as they were
    [[1, 0, 5, 0], {3: 1}, [5, 0], ['10.0.0.1', None, '10.0.0.1'], '10.0.0.9', {3: 1}]
    """
    cur[HOST_COUNTERS] = [a + b for a, b in zip(cur[HOST_COUNTERS], other[HOST_COUNTERS])]
    cur[HOST_RTT_HIST] = merge_into(dict(cur[HOST_RTT_HIST]), other[HOST_RTT_HIST])
    cur[HOST_MEDIANS] = merge_into(dict(cur[HOST_MEDIANS]), other[HOST_MEDIANS])
    cmax = cur[HOST_MAXIMA] = list(cur[HOST_MAXIMA])
    ctop = cur[HOST_TOP] = list(cur[HOST_TOP])
    omax, otop = other[HOST_MAXIMA], other[HOST_TOP]
    for mi, ti in _MAXIMA:
        if omax[mi] > cmax[mi]:
            cmax[mi] = omax[mi]
            ctop[ti] = otop[ti]
    if ctop[TOP_RTT] is None:  # the highest-RTT remote: no comparison across reports possible, keep the first
        ctop[TOP_RTT] = otop[TOP_RTT]


class ClosedIds:
    """The report identities of a closed window, kept one more window length to tell a re-sent report
    (a duplicate) from a late one: sorted in an array, 8 bytes each where a set of ints takes ~120. Only
    partials that arrive after their window closed look them up. A pair's window with 5 reporters of 30-s
    intervals holds 100 identities: ~12 KiB as a set, ~0.9 KiB here. (An open window keeps a set: every
    partial asks it, and a sorted array made the windows 10-25 % slower on ``benchmarks.core fleet``.)

    >>> ids = ClosedIds({9, 3, 2**63 - 1})
    >>> [x in ids for x in (3, 9, 2**63 - 1, 4, 0, 2**63)], len(ids), sorted(ids) == list(ids)
    ([True, True, True, False, False, False], 3, True)
    """

    __slots__ = ("_a",)

    def __init__(self, ids: Iterable[int]) -> None:
        self._a = array("Q", sorted(ids))

    def __contains__(self, rid: object) -> bool:
        a = self._a
        i = bisect_left(a, rid)  # type: ignore[arg-type]
        return i < len(a) and a[i] == rid

    def __iter__(self) -> Iterator[int]:
        return iter(self._a)

    def __len__(self) -> int:
        return len(self._a)


@dataclass(slots=True)
class WindowAgg:
    """Running sums of one (pair, window)."""

    src: list[str]
    dst: list[str]
    window_start: int
    counters: list[int] = field(default_factory=zero_counters)  # PARTIAL_COUNTERS order
    rtt_hist: dict[int, int] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)
    ids: set[int] = field(default_factory=set)  # identities of the reports applied
    intervals: dict[int, dict[str, list]] = field(default_factory=dict)  # grid interval -> host -> host sums
    #: reporting instance -> its counters over the window (PARTIAL_COUNTERS order); their sum is ``counters``.
    #: None: not known (restored from the state of a worker that did not keep them).
    instances: dict[str, list[int]] | None = field(default_factory=dict)
    #: ``ids`` sorted as of the last :meth:`sorted_ids`, and the identities added since (``PartitionWindows.apply``
    #: appends each one it adds to ``ids``): a window's state, written after every batch that touches it, sorts
    #: only the new ones into the old, not the whole set again (it was ~80 % of building the state).
    ids_sorted: list[int] = field(default_factory=list, repr=False, compare=False)
    ids_new: list[int] = field(default_factory=list, repr=False, compare=False)

    def add(self, part: Partial, t: int | None = None) -> None:
        """Add a partial (to the window and to its instance); with ``t`` (its report's grid interval) also to
        that interval's per-host sums.

        The reporter's name and the addresses kept are interned: an open window keeps each partial's
        per-host sums until its grid interval is scored, and would otherwise hold the same few thousand
        names and addresses once per partial (``benchmarks.rss``: peak 859 -> 730 MiB with 10,000 open
        pair-windows when this was measured). The partial's ``top`` list is interned in place: it is the
        decoder's own, kept here as it is.
        """
        self.counters[:] = map(add, self.counters, part.counters)
        merge_into(self.rtt_hist, part.rtt_hist)
        host = _intern(part.host)
        self.hosts.add(host)
        inst = self.instances
        if inst is not None:
            mine = inst.get(host)
            if mine is None:
                inst[host] = list(part.counters)  # a copy: the partial's list may be an interval's host sums
            else:
                mine[:] = map(add, mine, part.counters)
        if t is not None:
            per_host = self.intervals.setdefault(t, {})
            entry = host_sums(part)
            top = entry[HOST_TOP]
            top[:] = [x and _intern(x) for x in top]
            if (ip := entry[HOST_IP]) is not None:
                entry[HOST_IP] = _intern(ip)
            cur = per_host.get(host)
            if cur is None:
                per_host[host] = entry
            else:  # two reports of one host for one interval: sum them
                merge_host(cur, entry)

    def take_interval(self, t: int) -> GridInterval:
        """Remove and return interval ``t`` (the host sums are ``wire.records.host_sums``: counters,
        RTT histogram, one-sample maxima, top remotes, the reporter's address, and the histogram of
        its samples' median RTTs)."""
        return GridInterval(t, self.src, self.dst, self.intervals.pop(t))

    def record(self, window_s: int) -> FlowWindow:
        """The closed-window record (``schemas/wire/flow_window.v1.json``)."""
        c, h, src, dst = self.counters, self.rtt_hist, self.src, self.dst
        bs, br, rc, rsum = c[BYTES_SENT], c[BYTES_RECEIVED], c[RTT_COUNT], c[RTT_SUM_US]
        return FlowWindow(
            WIRE_VERSION, src[0], src[1], src[2], dst[0], dst[1], dst[2], self.window_start, window_s,
            bs, br, bs + br, c[RETRANSMISSIONS], c[TIMEOUTS], c[FLOWS], c[SAMPLES], len(self.hosts),
            rc, rsum, rsum / rc if rc else 0.0, quantile(h, 0.5), quantile(h, 0.9), quantile(h, 0.99),
            {str(b): n for b, n in sorted(h.items())}, time.time(),
            None if self.instances is None else instance_entries(self.instances))

    def sorted_ids(self) -> list[int]:
        """``sorted(self.ids)``, from the last one and the identities added since (a sorted run and a short
        one: timsort merges them in about linear time).

        >>> w = WindowAgg(["a"] * 3, ["b"] * 3, 0, ids={5, 1})   # restored: nothing sorted yet
        >>> w.sorted_ids()
        [1, 5]
        >>> w.ids.add(3); w.ids_new.append(3)
        >>> w.sorted_ids(), w.ids_new
        ([1, 3, 5], [])
        """
        srt, new = self.ids_sorted, self.ids_new
        if new:
            srt = sorted(srt + new)
            new.clear()
        if len(srt) != len(self.ids):  # restored, or an identity added some other way: the whole set
            srt = sorted(self.ids)
        self.ids_sorted = srt
        return srt

    def state(self) -> dict[str, Any]:
        return encode_window_state(WindowState(self.src, self.dst, self.window_start, self.counters, self.rtt_hist,
                                               sorted(self.hosts), self.sorted_ids(), self.intervals, self.instances))

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> WindowAgg:
        w = decode_window_state(s)
        return cls(w.src, w.dst, w.window_start, w.counters, w.rtt_hist, set(w.hosts), set(w.report_ids),
                   w.intervals, w.instances)


@dataclass(slots=True)
class Outcome:
    """What one ``apply`` produced."""

    closed: list[FlowWindow] = field(default_factory=list)  # window records to emit
    late: list[LatePartial] = field(default_factory=list)  # (partial, origin) to dead-letter
    intervals: list[GridInterval] = field(default_factory=list)  # complete intervals per pair, to score (detect/)
    applied: int = 0
    duplicates: int = 0
    late_for_detection: int = 0  # partials applied to their window after their interval was scored
    stale_marks: int = 0  # idle marks ignored: made before their source was last woken


class PartitionWindows:
    """Open windows, closed-window memory and watermark of one pairs partition.

    Parameters
    ----------
    partition
        The pairs-topic partition this object owns (part of every state key).
    window_s, lateness_s
        Window length and allowed lateness, seconds of event time.
    sources
        Number of partitions of the reports topic; the watermark waits for all of them.
    grid_s
        The fleet-wide detection interval (``Settings.interval_s``); data messages say which
        grid interval ``g`` their report belongs to.
    interval_lateness_s
        Grid interval ``g`` is complete, and handed to detection in ``Outcome.intervals``,
        when the closing threshold reaches ``g + grid_s // 2 + interval_lateness_s``
        (default 15: with 30-s agents on the grid, once every source has moved on to the
        next interval; an agent whose interval starts at its own second is placed by its
        middle, so its report may start up to ``grid_s // 2`` after ``g``).
        ``g + grid_s // 2 + interval_lateness_s`` is kept at most ``g + lateness_s``, so
        intervals are scored before their window closes.
    """

    def __init__(self, partition: int, window_s: int, lateness_s: int, sources: int,
                 interval_lateness_s: int = 15, grid_s: int = 30) -> None:
        self.partition = partition
        self.window_s = window_s
        self.lateness_s = lateness_s
        self.sources = sources
        self.grid_s = grid_s
        self.interval_lateness_s = max(0, min(interval_lateness_s, lateness_s - grid_s // 2))
        self._iv_delay = grid_s // 2 + self.interval_lateness_s  # g is handed over at threshold >= g + this
        self._iv_threshold: int | None = None  # intervals with t + interval_lateness_s <= this are scored
        self.progress: dict[int, int] = {}
        self.idle: dict[int, int] = {}  # idle source -> the wall clock (less lag) its idle mark carried
        self.woke: dict[int, int] = {}  # source -> the latest ``at`` of a mark that said it is active
        self.open: dict[tuple[int, str, str], WindowAgg] = {}
        self.closed: dict[tuple[int, str, str], ClosedIds] = {}  # key -> report ids applied, kept one more window
        #: reports partition -> the highest report offset whose message this partition has had (a message
        #: at or below it is a replay: its partials were applied, or dead-lettered, the first time)
        self.reached: dict[int, int] = {}
        self.dirty: set[tuple[int, str, str] | str] = set()
        self._watermark: int | None = None

    # --- the one entry point ------------------------------------------------------------
    def apply(self, msg: PairsMessage | ProgressMark | dict[str, Any]) -> Outcome:
        """Apply one pairs-topic message (a record, or its decoded JSON) and say what to emit."""
        if type(msg) is dict:
            msg = decode_message(msg)
        out = Outcome()
        if type(msg) is ProgressMark:
            self._mark(msg.source, msg.event_time, msg.idle, out, msg.at)
            return out
        origin: Origin = msg.origin
        replay = origin.offset <= self.reached.get(origin.partition, -1)
        if not replay:
            self.reached[origin.partition] = origin.offset
            self.dirty.add(PROGRESS_KEY)
        g = msg.grid
        ivt = self._iv_threshold
        if g is not None and ivt is not None and g + self._iv_delay <= ivt:
            g = None  # its interval was already scored: windows only
            out.late_for_detection += len(msg.parts)
        now: dict[tuple[int, str, str], int] = {}
        for part in msg.parts:
            ws = part.window_start
            key = (ws, part.src[0], part.dst[0])
            rid = part.report_id
            agg = self.open.get(key)
            if agg is None:
                ids = self.closed.get(key)
                if ids is not None:
                    if rid in ids or replay:
                        out.duplicates += 1
                    else:
                        out.late.append(LatePartial(part, origin))
                    continue
                if self._is_closed(ws):
                    if replay:  # its window closed, and was forgotten, since the first time
                        out.duplicates += 1
                    else:
                        out.late.append(LatePartial(part, origin))
                    continue
                agg = self.open[key] = WindowAgg(part.src, part.dst, ws)
            elif rid in agg.ids and now.get(key) != rid:
                out.duplicates += 1
                continue
            agg.add(part, g)
            now[key] = rid
            self.dirty.add(key)
            out.applied += 1
        # a report may hold several partials of one key (endpoints of one subnet placed differently):
        # its identity is recorded once the whole message is applied, so they all count
        for key, rid in now.items():
            agg = self.open[key]
            agg.ids.add(rid)
            agg.ids_new.append(rid)
        if msg.start is not None:
            self._mark(origin.partition, msg.start, None, out)
        return out

    # --- watermark ------------------------------------------------------------------------
    @property
    def iv_upto(self) -> int | None:
        """Every grid interval starting at or before this has been handed to detection."""
        return None if self._iv_threshold is None else self._iv_threshold - self._iv_delay

    @property
    def watermark(self) -> int | None:
        """Min over the active (not idle) sources of their progress; ``None`` until every source has spoken."""
        return self._watermark

    def _is_closed(self, ws: int) -> bool:
        wm = self._watermark
        return wm is not None and ws + self.window_s + self.lateness_s <= wm

    def _mark(self, src: int, t: int | None, idle_clock: int | None, out: Outcome, at: int | None = None) -> None:
        changed = False
        if t is not None and t > self.progress.get(src, -1):
            self.progress[src] = t
            changed = True
        if idle_clock is None:
            if at is not None and at > self.woke.get(src, -1):
                self.woke[src] = at
                self.dirty.add(PROGRESS_KEY)
            changed |= self.idle.pop(src, None) is not None
        elif at is not None and at < self.woke.get(src, -1):
            out.stale_marks += 1  # made before the source was last woken: a promise its maker no longer keeps
        elif self.idle.get(src) != idle_clock:
            self.idle[src] = int(idle_clock)
            changed = True
        if changed:
            self.dirty.add(PROGRESS_KEY)
            self._close(out)

    def _thresholds(self) -> tuple[int | None, int | None]:
        """(watermark, closing threshold). Idle sources do not hold the watermark back; when
        every source is idle, windows also close by the idle marks' clock."""
        known = set(self.progress) | set(self.idle)
        if len(known) < self.sources:
            return None, None
        active = [s for s in known if s not in self.idle]
        if active:
            if any(s not in self.progress for s in active):
                return None, None
            wm = min(self.progress[s] for s in active)
            return wm, wm
        wm = max(self.progress.values()) if self.progress else None
        clock = min(self.idle.values())
        return wm, clock if wm is None else max(wm, clock)

    def _close(self, out: Outcome) -> None:
        wm, threshold = self._thresholds()
        if wm is not None and (self._watermark is None or wm > self._watermark):
            self._watermark = wm
        if threshold is None:
            return
        if self._iv_threshold is None or threshold > self._iv_threshold:
            self._iv_threshold = threshold
            self.dirty.add(PROGRESS_KEY)
            cut = threshold - self._iv_delay
            done: dict[tuple[int, str, str], GridInterval] = {}
            for key, agg in self.open.items():
                ts = [t for t in agg.intervals if t <= cut]
                for t in ts:
                    iv = agg.take_interval(t)
                    k = (t, iv.src[0], iv.dst[0])
                    have = done.get(k)
                    if have is None:
                        done[k] = iv
                    else:  # the grid interval's reports fell in two windows (placed by their own start)
                        for host, entry in iv.hosts.items():
                            if host in have.hosts:
                                merge_host(have.hosts[host], entry)
                            else:
                                have.hosts[host] = entry
                if ts:
                    self.dirty.add(key)
            out.intervals.extend(done[k] for k in sorted(done))
        for key in [k for k in self.open if k[0] + self.window_s + self.lateness_s <= threshold]:
            agg = self.open.pop(key)
            out.closed.append(agg.record(self.window_s))
            self.closed[key] = ClosedIds(agg.sorted_ids())
            self.dirty.add(key)
        if self._watermark is not None:
            forget = self._watermark - 2 * self.window_s - self.lateness_s
            for key in [k for k in self.closed if k[0] <= forget]:
                del self.closed[key]
                self.dirty.add(key)

    # --- persistence (the aggregate agent writes these to the state topic, ``runtime.restore``) ---
    def key_str(self, key: tuple[int, str, str] | str) -> str:
        """State key: JSON ``[partition, "__progress__"]`` or ``[partition, ws, src, dst]``."""
        if key == PROGRESS_KEY:
            return orjson.dumps([self.partition, PROGRESS_KEY]).decode()
        return orjson.dumps([self.partition, *key]).decode()

    def take_dirty(self) -> dict[str, dict | None]:
        """State of every key changed since the last call (``None``: deleted)."""
        return dict(self.iter_dirty())

    def iter_dirty(self) -> Iterator[tuple[str, dict | None]]:
        """:meth:`take_dirty` one key at a time (the keys taken when the iteration starts, each state built
        when it is reached): the windows' states first, then the progress, then the windows forgotten.

        Part of one call's writes (a worker that died, or had its writes refused, part way through them) is
        not a state the pairs messages can be replayed onto, in this order or any other: with the progress
        stored but not the deletions, a window it closed and forgot comes back open with an older state
        while the watermark says it closed; with the deletions first, the replay opens it again and lands
        it short. So a restore keeps whole batches only (``runtime.restore.StateLog``: the pairs offset
        ends each); ``tests/runtime/test_restore_keys.py`` cuts such calls everywhere."""
        dirty, self.dirty = self.dirty, set()
        progress = False
        gone: list[tuple[int, str, str]] = []
        for key in dirty:
            if key == PROGRESS_KEY:
                progress = True
            elif key in self.open:
                yield self.key_str(key), self.open[key].state()
            elif key in self.closed:
                yield self.key_str(key), {"closed": True, "I": pack_ids(self.closed[key])}
            else:
                gone.append(key)
        if progress:
            yield self.key_str(PROGRESS_KEY), {"progress": self.progress, "idle": self.idle, "woke": self.woke,
                                               "watermark": self._watermark, "iv_threshold": self._iv_threshold,
                                               "reached": self.reached}
        for key in gone:
            yield self.key_str(key), None

    def load(self, key: str, val: dict) -> None:
        """Restore one key written by ``take_dirty`` (after a restart or rebalance)."""
        parts = orjson.loads(key)
        if parts[1] == PROGRESS_KEY:
            self.progress = {int(k): v for k, v in val["progress"].items()}
            self.idle = {int(k): v for k, v in val.get("idle", {}).items()}
            self.woke = {int(k): v for k, v in val.get("woke", {}).items()}
            # the watermark only rises; it is stored, since idle sources may have lowered the minimum since
            self._watermark = val["watermark"] if "watermark" in val else self._thresholds()[0]
            self._iv_threshold = val.get("iv_threshold")
            self.reached = {int(k): v for k, v in val.get("reached", {}).items()}
            return
        k = (int(parts[1]), parts[2], parts[3])
        if val.get("closed"):
            self.closed[k] = ClosedIds(state_ids(val))
        else:
            self.open[k] = WindowAgg.from_state(val)
