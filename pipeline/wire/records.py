"""The records of the pairs path, and their codec: the one place that knows their compact JSON.

The ingest stage cuts each report into *partials* (one per destination subnet, see
``ingest.preagg``) and sends them, one *pairs message* per pairs partition, on the pairs
topic, with *progress marks* in between (``ingest.progress``). The aggregate stage
(``aggregate.windows``) turns them into *closed windows* (the windows topic) and hands
back *late partials* (dead-lettered with their origin).

On the topics these records are compact JSON:

* partial: ``{"src": [subnet, az, vpc], "dst": [...], "ws": window_start, "host": instance,
  "c": counters, "h": rtt_hist, "x": maxima, "top": top_ips, "ip": reporter_ip, "id": report_id,
  "m": median_hist}`` (its dead letters and the window state keep this form); on the pairs topic,
  the array of the same fields in this order (``Partial``'s)
* pairs message: ``{"o": [src_partition, src_offset], "t": report_start, "g": grid_interval,
  "P": [partial array, ...]}``; the ingest stage sends a JSON array of them per batch. Messages
  of earlier versions carry ``"parts": [partial, ...]`` (objects) instead, and are still read.
  Arrays: 20 % fewer bytes and about half the work to encode; :func:`decode_pairs` reads them
  with msgspec (``benchmarks/README.md``)
* progress mark: ``{"mark": [src_partition, event_time], "idle": clock, "at": ms}`` (``idle`` and ``at``
  optional)
* closed window: ``schemas/wire/flow_window.v1.json``

Positions inside the counters, maxima and top lists are named by the constants below;
nothing outside this module indexes them by number or reads the one-letter keys.

Examples
--------
>>> p = Partial(["s1", "a1", "v"], ["s2", "a2", "v"], 600, "h1", [10, 20, 0, 0, 1, 1, 1, 800],
...             {157: 1}, [0, 0], [None, None, "10.0.1.4"], "10.0.0.4", 7, {157: 1})
>>> p.counters[SAMPLES], p.top[TOP_RTT]
(1, '10.0.1.4')
>>> raw = encode_pairs_message(PairsMessage(Origin(3, 42), 630, 630, [p]))
>>> raw[:50]
b'{"o":[3,42],"t":630,"g":630,"P":[[["s1","a1","v"],'
>>> decode_pairs(b"[" + raw + b"]") == [PairsMessage(Origin(3, 42), 630, 630, [p])]
True
>>> encode_mark(ProgressMark(0, 1000, idle=1080, at=1_200_000))
b'{"mark":[0,1000],"idle":1080,"at":1200000}'
>>> decode_pairs(b'{"mark":[0,null]}')
[ProgressMark(source=0, event_time=None, idle=None, at=None)]
"""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import msgspec
import orjson

from pipeline.wire.contract import WIRE_VERSION
from pipeline.wire.events import AnomalyEvent, KeyHealth

__all__ = [
    # counters and the positions in a partial's lists
    "PARTIAL_COUNTERS", "BYTES_SENT", "BYTES_RECEIVED", "RETRANSMISSIONS", "TIMEOUTS", "FLOWS", "SAMPLES",
    "RTT_COUNT", "RTT_SUM_US", "MAX_RETRANSMISSIONS", "MAX_TIMEOUTS", "TOP_RETRANSMISSIONS", "TOP_TIMEOUTS",
    "TOP_RTT", "zero_counters", "no_maxima", "no_top",
    # records
    "Partial", "Origin", "PairsMessage", "ProgressMark", "LatePartial", "DeadLetter", "DeadLetterSource",
    "FlowWindow", "HealthUpdate", "WindowState",
    # codec
    "encode", "encode_state", "new_partial", "encode_partial", "decode_partial", "encode_pairs", "encode_pairs_message",
    "encode_pairs_batch", "encode_mark", "decode_message", "decode_pairs", "encode_deadletter", "deadletter_record",
    "encode_health",
    "encode_window_state", "decode_window_state", "pack_ids", "unpack_ids", "state_ids", "chunks", "instance_entries", "INSTANCE_FIELDS",
    "encode_window",
    "later_part",
    # an interval's per-host sums
    "GridInterval", "HOST_COUNTERS", "HOST_RTT_HIST", "HOST_MAXIMA", "HOST_TOP", "HOST_IP", "HOST_MEDIANS", "host_sums",
    "host_sums_from_state",
]

_OPTS = orjson.OPT_NON_STR_KEYS


def encode(obj: Any) -> bytes:
    """JSON bytes as they go on every flowmon topic (int dict keys allowed; records by their codec).

    >>> encode({"a": {1: 2}})
    b'{"a":{"1":2}}'
    """
    return orjson.dumps(obj, default=_default, option=_OPTS)


def encode_state(obj: Any) -> bytes:
    """A state-topic value (plain dicts, lists, strings and numbers: a window's or a detector key's state) as
    JSON, by msgspec: about half of :func:`encode`'s time on these values. What it writes decodes to what
    :func:`encode`'s does (``null`` for NaN and infinities too); the bytes differ only in how an exponent is
    spelt (``1e300`` where orjson writes ``1e+300``).

    >>> v = {"s": [0.1, None, float("nan")], "h": {1: 2}}
    >>> encode_state(v), encode_state(v) == encode(v)
    (b'{"s":[0.1,null,null],"h":{"1":2}}', True)
    """
    return _STATE_ENCODE(obj)


_STATE_ENCODE = msgspec.json.Encoder().encode


def _default(obj: Any) -> Any:
    if isinstance(obj, Partial):
        return encode_partial(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# --- counters --------------------------------------------------------------------------------
#: Order of the counters in a partial (and a window, and an interval's host sums).
PARTIAL_COUNTERS = ("bytes_sent", "bytes_received", "retransmissions", "timeouts", "flows",
                    "samples", "rtt_count", "rtt_sum_us")
BYTES_SENT, BYTES_RECEIVED, RETRANSMISSIONS, TIMEOUTS, FLOWS, SAMPLES, RTT_COUNT, RTT_SUM_US = range(8)
#: The one-sample maxima of a partial: ``[retransmissions, timeouts]``.
MAX_RETRANSMISSIONS, MAX_TIMEOUTS = range(2)
#: The remote IPs that go with them, and the remote of the highest RTT: ``[retrans, timeouts, rtt]``.
TOP_RETRANSMISSIONS, TOP_TIMEOUTS, TOP_RTT = range(3)


def zero_counters() -> list[int]:
    """A fresh list of zero counters (``PARTIAL_COUNTERS`` order)."""
    return [0] * len(PARTIAL_COUNTERS)


def no_maxima() -> list[int]:
    return [0, 0]


def no_top() -> list[str | None]:
    return [None, None, None]


# --- partial ---------------------------------------------------------------------------------
class Partial(NamedTuple):
    """One report's sums towards one destination subnet (``ingest.preagg``)."""

    src: list[str]  # [subnet, az, vpc] of the reporter
    dst: list[str]  # [subnet, az, vpc] of the remotes
    window_start: int
    host: str  # the reporting instance
    counters: list[int]  # PARTIAL_COUNTERS order
    rtt_hist: dict[int, int]  # rtt.bucket -> observations
    maxima: list[int]  # [MAX_RETRANSMISSIONS, MAX_TIMEOUTS]: largest one-sample values
    top: list[str | None]  # [TOP_RETRANSMISSIONS, TOP_TIMEOUTS, TOP_RTT]: whose they were
    ip: str | None  # the reporter's own address
    report_id: int  # the report's identity (validate.report_identity)
    medians: dict[int, int]  # rtt.bucket -> samples, of each sample's median RTT


#: ``new_partial((src, dst, ...))``: a ``Partial`` from a tuple of its fields, without the Python-level
#: ``__new__`` of a NamedTuple (the hot paths build one per partial).
new_partial = functools.partial(tuple.__new__, Partial)


def encode_partial(p: Partial) -> dict[str, Any]:
    """The wire dict of a partial (its keys in the order they always had)."""
    return {"src": p.src, "dst": p.dst, "ws": p.window_start, "host": p.host, "c": p.counters, "h": p.rtt_hist,
            "x": p.maxima, "top": p.top, "ip": p.ip, "id": p.report_id, "m": p.medians}


def decode_partial(d: dict[str, Any]) -> Partial:
    """A partial from its decoded JSON (histogram keys back to ints; absent extras default). Names and
    addresses are interned where an open window keeps them (``aggregate.windows.WindowAgg.add``)."""
    m = d.get("m")
    top = d.get("top")
    return new_partial((d["src"], d["dst"], d["ws"], d["host"], d["c"], {int(b): n for b, n in d["h"].items()},
                        d.get("x") or [0, 0], list(top) if top else [None, None, None], d.get("ip"), d["id"],
                        {int(b): n for b, n in m.items()} if m else {}))


# --- pairs topic -----------------------------------------------------------------------------
class Origin(NamedTuple):
    """Where a report was read: reports partition and offset (for dead letters)."""

    partition: int
    offset: int


class PairsMessage(NamedTuple):
    """One report's partials for one pairs partition."""

    origin: Origin
    start: int | None  # the report's start (event time); None: no progress to record
    grid: int | None  # the fleet-wide grid interval the report belongs to (ingest.grid_interval)
    parts: list[Partial]


@dataclass(frozen=True, slots=True)
class ProgressMark:
    """The ingest stage has sent everything it read from reports partition ``source`` up to
    ``event_time`` (None: nothing yet); ``idle``: the partition is caught up and quiet (wall clock
    less a lag); ``at``: its maker's wall clock, in milliseconds, when it found that out (None in the
    marks of earlier versions). ``at`` orders the promises of different makers about one partition:
    an idle mark made before the partition was last woken is stale (``aggregate.windows``)."""

    source: int
    event_time: int | None
    idle: int | None = None
    at: int | None = None



def encode_mark(mark: ProgressMark) -> bytes:
    out: dict[str, Any] = {"mark": [mark.source, mark.event_time]}
    if mark.idle is not None:
        out["idle"] = mark.idle
    if mark.at is not None:
        out["at"] = mark.at
    return encode(out)


_new_origin = functools.partial(tuple.__new__, Origin)
_new_pairs = functools.partial(tuple.__new__, PairsMessage)


def encode_pairs_message(msg: PairsMessage) -> bytes:
    return encode_pairs(msg.origin, msg.start, msg.grid, msg.parts)


def encode_pairs(origin: Origin, start: int | None, grid: int | None, parts: list[Partial]) -> bytes:
    """``encode_pairs_message`` from the fields (the ingest hot path builds no ``PairsMessage``); each
    partial as the array of its fields, in one msgspec call. msgspec writes a ``NamedTuple`` as an array
    itself; ``orjson`` takes one only through ``default``, a Python call per partial (the same bytes at
    1.5-2x the cost: ``benchmarks/README.md``, issue 14, fourteenth session)."""
    return _PAIRS_ENCODE({"o": [origin[0], origin[1]], "t": start, "g": grid, "P": parts})


_PAIRS_ENCODE = msgspec.json.Encoder().encode


def decode_message(d: dict[str, Any]) -> PairsMessage | ProgressMark:
    """One decoded pairs-topic message as its record (older data messages carry their partials as
    objects, and may lack ``g`` or ``t``)."""
    mark = d.get("mark")
    if mark is not None:
        src, t = mark
        at = d.get("at")
        return ProgressMark(int(src), None if t is None else int(t), d.get("idle"), None if at is None else int(at))
    t = d.get("t")
    arrays = d.get("P")
    if arrays is None:
        parts = [decode_partial(p) for p in d["parts"]]
    else:
        new = new_partial
        parts = [new((a[0], a[1], a[2], a[3], a[4], {int(b): n for b, n in a[5].items()}, a[6], list(a[7]), a[8], a[9],
                      {int(b): n for b, n in a[10].items()}))
                 for a in arrays]
    return _new_pairs((_new_origin(d["o"]), None if t is None else int(t), d.get("g", t), parts))


class _WireMessage(msgspec.Struct):
    """A pairs-topic message as :func:`decode_pairs` decodes it first: data (``o``, ``t``, ``g``, and
    ``P``, or ``parts`` from an earlier version) or a mark (``mark``, ``idle``, ``at``)."""

    o: tuple[int, int] | None = None
    t: int | None = None
    g: int | None | msgspec.UnsetType = msgspec.UNSET  # absent in the oldest messages: the report's start
    P: list[Partial] | None = None
    parts: list[Any] | None = None
    mark: tuple[int, int | None] | None = None
    idle: int | float | None = None
    at: int | None = None


#: Decodes a pairs-topic value with its types (histogram keys back to ints, partials built) in C.
_PAIRS_DECODER = msgspec.json.Decoder(list[_WireMessage] | _WireMessage)


def decode_pairs(value: bytes) -> list[PairsMessage | ProgressMark]:
    """A pairs-topic value: the ingest stage's batch (a JSON array) or a lone mark.

    Decoded by msgspec into typed records at about the cost of ``orjson.loads`` alone (building the
    partials from orjson's dicts and lists in Python took twice that again: ``benchmarks/README.md``).
    A value whose types msgspec does not expect (a float where the ingest stage writes integers) goes
    the general way: ``orjson`` and :func:`decode_message`. Names and addresses are interned where the
    windows keep them (``aggregate.windows``), not here.
    """
    try:
        val = _PAIRS_DECODER.decode(value)
    except msgspec.ValidationError:
        d = orjson.loads(value)
        return [decode_message(m) for m in (d if type(d) is list else (d,))]
    out: list[PairsMessage | ProgressMark] = []
    for m in (val if type(val) is list else (val,)):
        mark = m.mark
        if mark is not None:
            out.append(ProgressMark(mark[0], mark[1], m.idle, m.at))
            continue
        parts = m.P
        if parts is None:
            parts = [decode_partial(p) for p in m.parts or ()]
        o, t = m.o, m.t
        if o is None:
            raise ValueError("a pairs message without its origin ('o')")
        g = m.g
        out.append(_new_pairs((_new_origin(o), t, t if g is msgspec.UNSET else g, parts)))
    return out


def encode_pairs_batch(messages: list[bytes]) -> bytes:
    """One pairs-topic value carrying several encoded data messages (the ingest stage's batch)."""
    return b"[" + b",".join(messages) + b"]"


def chunks(payloads: list[bytes], limit: int) -> Iterator[list[bytes]]:
    """Consecutive runs of ``payloads`` whose joined size stays under ``limit`` (at least one each).

    >>> list(chunks([b"aa", b"bb", b"cc"], 6))
    [[b'aa', b'bb'], [b'cc']]
    """
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


# --- health topic --------------------------------------------------------------------------------
class HealthUpdate(NamedTuple):
    """What one pairs partition tells the attribution stage: the health of the keys scored since
    its last update, the alerts opened meanwhile, and ``upto``: every grid interval up to it has
    been scored there (None: none yet). The health entries and alert events are ``detect.Detection``'s."""

    partition: int
    upto: int | None
    health: list[KeyHealth]
    opened: list[AnomalyEvent]

    def message(self) -> dict[str, Any]:
        """The health-topic message, decoded (what ``attribute.AttributionStage.apply`` takes)."""
        return {"p": self.partition, "upto": self.upto, "health": self.health, "opened": self.opened}


def _health_parts(rows: list[KeyHealth], limit: int) -> Iterator[bytes]:
    """``rows`` encoded as consecutive JSON arrays of at most ``limit`` bytes each (a single row larger
    than that alone), in order. msgspec writes a ``KeyHealth`` (a NamedTuple) as the array of its fields
    itself: one C call per part (``orjson`` takes a NamedTuple only through ``default``, a Python call per
    row, at twice the cost). An update whose first rows say it will not fit is cut into parts by their
    size; each part is encoded once, and one that still comes out too large is halved."""
    n = len(rows)
    step = n or 1
    if n > _HEALTH_PROBE:
        per_row = len(_HEALTH_ENCODE(rows[:_HEALTH_PROBE])) / _HEALTH_PROBE
        if per_row * n > limit * 0.9:
            step = max(1, int(limit * 0.9 / per_row))
    for i in range(0, n or 1, step):
        part = rows[i:i + step]
        body = _HEALTH_ENCODE(part)
        if len(body) <= limit or len(part) < 2:
            yield body
        else:
            half = len(part) // 2
            yield from _health_parts(part[:half], limit)
            yield from _health_parts(part[half:], limit)


_HEALTH_ENCODE = msgspec.json.Encoder().encode
#: Rows whose encoded size estimates the bytes per row of a large update.
_HEALTH_PROBE = 256


def encode_health(update: HealthUpdate, limit: int, emitted_at: float = 0.0) -> list[bytes]:
    """The health-topic messages of one update: its health entries split to stay under ``limit``
    bytes; only the last message carries ``upto`` and the opened alerts (stamped ``emitted_at``,
    as they went to the anomalies topic). Each entry is the array of its ``KeyHealth`` fields in
    order (``KeyHealth.from_wire`` reads it, and the objects earlier versions wrote): encoded in one
    call per message and read back positionally, it costs a tenth of an object per entry.

    >>> h = [KeyHealth(t, ("s1", "a1", "v"), ("s2", "a2", "v"), "s1/0", retrans=0) for t in (30, 60)]
    >>> msgs = encode_health(HealthUpdate(2, 60, h, []), limit=100)
    >>> [(orjson.loads(m)["upto"], [(e[0], e[3]) for e in orjson.loads(m)["health"]]) for m in msgs]
    [(None, [(30, 's1/0')]), (60, [(60, 's1/0')])]
    >>> orjson.loads(msgs[0])["health"][0]
    [30, ['s1', 'a1', 'v'], ['s2', 'a2', 'v'], 's1/0', 0, None, None, [], None, None]
    >>> len(encode_health(HealthUpdate(2, 60, h, []), limit=1000))
    1
    """
    parts = list(_health_parts(update.health, limit)) if update.health else [b"[]"]
    out = []
    for i, body in enumerate(parts):
        last = i == len(parts) - 1
        upto = b"null" if update.upto is None or not last else b"%d" % update.upto
        out.append(b'{"p":%d,"upto":%s,"health":' % (update.partition, upto) + body
                   + b',"opened":' + (encode([dict(e.to_wire(), emitted_at=emitted_at) for e in update.opened])
                                      if last else b"[]") + b"}")
    return out


# --- late partials -----------------------------------------------------------------------------
class LatePartial(NamedTuple):
    """A partial whose window had closed when it arrived, and where its report was read."""

    partial: Partial
    origin: Origin


# --- dead letters ------------------------------------------------------------------------------
class DeadLetterSource(NamedTuple):
    """Where the refused input was read."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Refused input and why (``schemas/wire/deadletter.v1.json``): the decoded ``payload``
    (a late ``Partial``, or a report's JSON), else its raw bytes in ``payload_b64``."""

    reason: str
    field: str | None
    detail: str
    stage: str
    source: DeadLetterSource
    sample_index: int | None
    samples: int
    at: float
    payload: Any = None
    payload_b64: str | None = None
    payload_truncated: bool = False


def encode_deadletter(dl: DeadLetter) -> bytes:
    """The dead-letter record's JSON (:func:`deadletter_record`).

    >>> encode_deadletter(DeadLetter("late", None, "closed", "aggregate", DeadLetterSource("r", 0, 7), None, 1, 0.0,
    ...                              payload={"a": 1}))
    b'{"version":1,"reason":"late","field":null,"detail":"closed","stage":"aggregate","source":{"topic":"r","partition":0,"offset":7},"sample_index":null,"samples":1,"at":0.0,"payload":{"a":1}}'
    """
    return encode(deadletter_record(dl))


def deadletter_record(dl: DeadLetter) -> dict[str, Any]:
    """The dead-letter record (``schemas/wire/deadletter.v1.json``) as a dict: ``payload_b64`` when there
    are raw bytes, else ``payload``."""
    src = dl.source
    rec: dict[str, Any] = {
        "version": WIRE_VERSION, "reason": dl.reason, "field": dl.field, "detail": dl.detail, "stage": dl.stage,
        "source": {"topic": src.topic, "partition": src.partition, "offset": src.offset},
        "sample_index": dl.sample_index, "samples": dl.samples, "at": dl.at,
    }
    if dl.payload_b64 is not None:
        rec["payload_b64"] = dl.payload_b64
    else:
        rec["payload"] = dl.payload
    if dl.payload_truncated:
        rec["payload_truncated"] = True
    return rec


# --- interval host sums (inside the windows, handed to detection) ------------------------------
#: Positions in one host's sums of one grid interval: ``[counters, rtt_hist, maxima, top, ip, medians]``.
HOST_COUNTERS, HOST_RTT_HIST, HOST_MAXIMA, HOST_TOP, HOST_IP, HOST_MEDIANS = range(6)


@dataclass(frozen=True, slots=True)
class GridInterval:
    """One complete grid interval of one subnet pair, handed by the windows to detection.

    ``src``/``dst``: ``[subnet, az, vpc]``; ``hosts``: reporting instance -> its sums for the
    interval (``[counters, rtt_hist, maxima, top, ip, medians]``, read with the ``HOST_*`` positions).
    """

    t: int
    src: list[str]
    dst: list[str]
    hosts: dict[str, list]


def host_sums(p: Partial) -> list:
    """A host's interval sums started from one partial: its own lists, not copied (the hot path);
    ``aggregate.windows.merge_host`` replaces an element rather than change it in place."""
    return [p.counters, p.rtt_hist, p.maxima, p.top, p.ip, p.medians]


def host_sums_from_state(e: list) -> list:
    """Host sums as the window state stores them (older state lacks the trailing extras)."""
    n = len(e)
    return [list(e[HOST_COUNTERS]), {int(b): c for b, c in e[HOST_RTT_HIST].items()},
            list(e[HOST_MAXIMA]) if n > HOST_MAXIMA else no_maxima(),
            list(e[HOST_TOP]) if n > HOST_TOP else no_top(),
            e[HOST_IP] if n > HOST_IP else None,
            {int(b): c for b, c in e[HOST_MEDIANS].items()} if n > HOST_MEDIANS else {}]


# --- window state ------------------------------------------------------------------------------
class WindowState(NamedTuple):
    """What the state topic keeps of one open window (``aggregate.windows.WindowAgg``)."""

    src: list[str]
    dst: list[str]
    window_start: int
    counters: list[int]
    rtt_hist: dict[int, int]
    hosts: list[str]  # sorted
    report_ids: list[int]  # sorted
    intervals: dict[int, dict[str, list]]  # grid interval -> host -> host sums
    #: reporting instance -> its counters (PARTIAL_COUNTERS order) over the whole window; None: not
    #: known (the window was opened by a worker that did not keep them)
    instances: dict[str, list[int]] | None = None


def pack_ids(ids: Iterable[int]) -> str:
    """Report identities (63-bit, ``validate.report_identity``) as the state topic keeps them: sorted, each
    as 8 little-endian bytes, base64 — ~11 characters per identity where a JSON number takes ~20. They were
    ~60 % of an open window's state, which is written after every batch that touches the window.

    >>> pack_ids({3, 1}), unpack_ids(pack_ids({3, 1}))
    ('AQAAAAAAAAADAAAAAAAAAA==', [1, 3])
    """
    s = sorted(ids)
    return base64.b64encode(struct.pack(f"<{len(s)}Q", *s)).decode()


def unpack_ids(text: str) -> list[int]:
    """:func:`pack_ids` back (sorted); a value that is not such a string is refused (``ValueError``)."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 8:
        raise ValueError(f"packed report identities of {len(raw)} bytes, not a multiple of 8")
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))


def state_ids(d: dict[str, Any]) -> list[int]:
    """The report identities of a window's state: packed (``I``), or a JSON list (``ids``, written before
    they were packed), or none (before report identities existed)."""
    packed = d.get("I")
    return unpack_ids(packed) if packed is not None else list(d.get("ids", ()))


def encode_window_state(w: WindowState) -> dict[str, Any]:
    """The JSON-ready dict of an open window's state (the key order it always had, the identities packed
    under ``I`` where they were a list under ``ids``; ``inst`` last, when known)."""
    d = {"src": w.src, "dst": w.dst, "ws": w.window_start, "c": w.counters, "h": w.rtt_hist,
         "hosts": w.hosts, "I": pack_ids(w.report_ids), "iv": w.intervals}
    if w.instances is not None:
        d["inst"] = w.instances
    return d


def decode_window_state(d: dict[str, Any]) -> WindowState:
    """An open window's state back (state written before report identities, interval sums or per-instance
    counters existed has none; the per-instance counters then stay unknown: ``None``)."""
    iv = {int(t): {host: host_sums_from_state(e) for host, e in hosts.items()} for t, hosts in d.get("iv", {}).items()}
    inst = d.get("inst")
    return WindowState(d["src"], d["dst"], d["ws"], list(d["c"]), {int(b): n for b, n in d["h"].items()},
                       d["hosts"], state_ids(d), iv,
                       None if inst is None else {host: list(c) for host, c in inst.items()})


# --- closed windows ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FlowWindow:
    """A closed window (``schemas/wire/flow_window.v1.json``); ``encode`` writes its fields in this order."""

    version: int
    src_subnet: str
    src_az: str
    src_vpc: str
    dst_subnet: str
    dst_az: str
    dst_vpc: str
    window_start: int
    window_s: int
    bytes_sent: int
    bytes_received: int
    bytes: int
    retransmissions: int
    timeouts: int
    flows: int
    samples: int
    hosts: int
    rtt_count: int
    rtt_sum_us: int
    rtt_mean_us: float
    rtt_p50_us: float
    rtt_p90_us: float
    rtt_p99_us: float
    rtt_hist: dict[str, int]
    closed_at: float
    #: one entry per reporting instance (``instance_entries``), sorted by instance; None: not known
    #: (a window opened before the worker kept them). Optional on the wire.
    instances: list[dict[str, Any]] | None = None


def encode_window(rec: FlowWindow, limit: int) -> list[bytes]:
    """The closed window as the messages of the windows topic: one, its JSON, when it fits in ``limit`` bytes;
    else (a window with thousands of reporting instances: ~190 bytes each) as many as its ``instances`` need,
    each the whole window with a run of its entries, in order, and ``instances_part`` (0, 1, ...) of
    ``instances_parts``. Every entry is in exactly one of them, and every one is within ``limit`` unless one
    entry alone does not fit beside the window (it then goes alone). A reader counts the window once, by
    its key, as it does a window emitted again after a restart (the ClickHouse sink takes the window's row
    from part 0 and the instances of every part).

    >>> w = FlowWindow(1, "s", "a", "v", "d", "b", "v", 0, 600, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0.0, 0.0, 0.0, 0.0,
    ...                {}, 0.0, instance_entries({"h1": [1, 0, 0, 0, 1, 1, 0, 0], "h2": [0, 0, 0, 0, 1, 1, 0, 0]}))
    >>> [orjson.loads(m)["instances"][0]["instance"] for m in encode_window(w, 1000)]
    ['h1']
    >>> parts = [orjson.loads(m) for m in encode_window(w, 600)]
    >>> [(p["instances_part"], p["instances_parts"], [e["instance"] for e in p["instances"]]) for p in parts]
    [(0, 2, ['h1']), (1, 2, ['h2'])]
    >>> all(parts[1][k] == v for k, v in parts[0].items() if not k.startswith("instances"))   # each is the whole window
    True
    """
    raw = encode(rec)
    if len(raw) <= limit or not rec.instances:
        return [raw]
    # the window without its entries, and room for the part fields ('"instances_part":N,"instances_parts":N')
    room = limit - len(encode(replace(rec, instances=[]))) - 64
    runs: list[list[dict[str, Any]]] = [[]]
    used = 0
    for e in rec.instances:
        size = len(encode(e)) + 1  # the comma
        if used + size > room and runs[-1]:
            runs.append([])
            used = 0
        runs[-1].append(e)
        used += size
    base = {f.name: getattr(rec, f.name) for f in fields(rec)}
    return [encode({**base, "instances": run, "instances_part": i, "instances_parts": len(runs)})
            for i, run in enumerate(runs)]


def later_part(window: dict[str, Any]) -> bool:
    """Is this decoded closed-window record part 1 or later of a window sent in parts (:func:`encode_window`)?
    Its window was already given by part 0; only its instances are new.

    >>> later_part({"instances_part": 1}), later_part({"instances_part": 0}), later_part({})
    (True, False, False)
    """
    return bool(window.get("instances_part"))


#: The fields of one entry of a closed window's ``instances``: the instance, then its counters named and
#: ordered as the window's own (``bytes`` = ``bytes_sent + bytes_received``, as the window's).
INSTANCE_FIELDS = ("instance", "bytes_sent", "bytes_received", "bytes", "retransmissions", "timeouts", "flows",
                   "samples", "rtt_count", "rtt_sum_us")


def instance_entries(instances: dict[str, list[int]]) -> list[dict[str, Any]]:
    """A window's per-instance counters (``PARTIAL_COUNTERS`` order) as the closed window's ``instances``,
    sorted by instance.

    >>> instance_entries({"h2": [1, 2, 0, 0, 1, 1, 1, 900], "h1": [5, 0, 1, 0, 1, 1, 0, 0]})[0]
    {'instance': 'h1', 'bytes_sent': 5, 'bytes_received': 0, 'bytes': 5, 'retransmissions': 1, 'timeouts': 0, 'flows': 1, 'samples': 1, 'rtt_count': 0, 'rtt_sum_us': 0}
    """
    return [{"instance": host, "bytes_sent": c[BYTES_SENT], "bytes_received": c[BYTES_RECEIVED],
             "bytes": c[BYTES_SENT] + c[BYTES_RECEIVED], "retransmissions": c[RETRANSMISSIONS],
             "timeouts": c[TIMEOUTS], "flows": c[FLOWS], "samples": c[SAMPLES], "rtt_count": c[RTT_COUNT],
             "rtt_sum_us": c[RTT_SUM_US]} for host, c in sorted(instances.items())]
