"""Validation: raw report bytes -> columnar samples of one report, or reasons to refuse.

A report is refused whole when its header is bad (malformed JSON, missing or wrongly
typed header field, unsupported version, future timestamp, oversize, unplaceable
reporter). A bad sample inside a good report is refused alone; the others go on.
Every refusal carries a machine-readable ``reason`` from ``schemas/wire/deadletter``.

The fast path builds numpy columns for the whole report and checks types and ranges
vectorised; only when that fails does the slow path walk the samples one by one to say
exactly which are bad and why. Limits come from the JSON schema (``wire.LIMITS``).

:meth:`Validator.check_many` does the same for many reports at once (the worker's reader calls
it through ``Ingest.process_batch``): msgspec decodes each report straight into typed structs
(``_PlainReport``), checking every field's type in C; the header's ranges are checked per
report, and the samples' ranges and placements as numpy columns over a few thousand samples of
many reports. Whatever is not plainly good that way is handed back for :meth:`check`, so the
reasons stay exactly those ``check`` gives. The two paths check the same things on two input types
on purpose (``_header``/``_quick_header``, ``_gather``/``_gather_plain``): ``check`` works on the
orjson dicts and is the reference that ``tests/ingest/test_batch.py`` holds the msgspec path to;
running ``check`` through msgspec first would make that test compare the fast path with itself.

Examples
--------
>>> import orjson
>>> v = Validator()
>>> msg = {"version": 1, "instance": "h1", "local": {"ip": "10.0.0.4", "subnet": "s1", "az": "a1", "vpc": "v1"},
...        "start": 1764000000, "interval_s": 30,
...        "samples": [{"remote": {"ip": "10.0.1.4", "subnet": "s2", "az": "a2", "vpc": "v1"},
...                     "bytes_sent": 10, "bytes_received": 20, "retransmissions": 0, "timeouts": 0,
...                     "flows": 1, "rtt_us": [800, 900]},
...                    {"remote": {"ip": "10.0.1.5"}, "bytes_sent": -1, "bytes_received": 0,
...                     "retransmissions": 0, "timeouts": 0, "flows": 1, "rtt_us": []}]}
>>> rep, rejected = v.check(orjson.dumps(msg), now=1764000100)
>>> rep.n, rep.counters[0].tolist(), rep.rtt.tolist()
(1, [10], [800, 900])
>>> [(r.reason, r.field, r.sample_index) for r in rejected]
[('out_of_range', 'samples[1].bytes_sent', 1)]
>>> v.check(b'{"version": 2}', now=0)[1][0].reason
'unsupported_version'
"""

from __future__ import annotations

import functools
import ipaddress
import json
import hashlib
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple, Protocol

import msgspec
import numpy as np
import orjson

from pipeline.ingest.topology import EXTERNAL  # placement of an address outside every known CIDR
from pipeline.wire.contract import LIMITS, SAMPLE_COUNTERS, WIRE_VERSION

__all__ = ["Validator", "Report", "Batch", "Rejection", "EXTERNAL"]

_STR_OR_NONE = {str, type(None)}
_INT = {int}

_UNKNOWN = "unknown"


class _Locator(Protocol):  # what validate needs of a topology.Topology
    def locate(self, ip: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message or sample (becomes a dead letter)."""

    reason: str
    detail: str
    field: str | None = None
    sample_index: int | None = None
    samples: int = 0
    payload: Any = None  # decoded JSON value when there is one
    raw: bytes | None = None  # the raw bytes when they could not be decoded


@dataclass(slots=True)
class Report:
    """The accepted samples of one report, as columns.

    ``counters`` has one row per name in ``wire.SAMPLE_COUNTERS``; ``dst`` is an index
    into ``Validator.places``; ``rtt`` holds all RTT observations, ``rtt_owner`` the
    row of the sample each came from.
    """

    instance: str
    src: tuple[str, str, str]
    start: int
    interval_s: int
    dst: np.ndarray
    counters: np.ndarray
    rtt: np.ndarray
    rtt_owner: np.ndarray
    index: np.ndarray  # original sample index of each accepted row
    ips: list[str] = field(default_factory=list)  # remote IP of each accepted row
    rid: int = 0  # report identity (see :func:`report_identity`): a re-sent report has the same
    local_ip: str | None = None  # the reporter's own address

    @property
    def n(self) -> int:
        return int(self.dst.shape[0])


@dataclass(slots=True)
class Batch:
    """The samples of many reports, each accepted whole, as one set of columns (``Validator.check_many``).

    Report ``k`` is ``heads[k]`` (instance, src, start, interval_s, local_ip), its identity ``rids[k]``,
    and samples ``bounds[k]:bounds[k + 1]`` of the columns; ``rtt_owner`` holds the batch row of the
    sample each RTT observation came from. The columns are what ``Report`` holds, concatenated.
    """

    rows: list[int]  # the index, in what ``check_many`` was given, of each report
    heads: list[tuple[str, tuple[str, str, str], int, int, str]]
    rids: list[int]
    bounds: np.ndarray
    dst: np.ndarray
    counters: np.ndarray
    rtt: np.ndarray
    rtt_owner: np.ndarray
    ips: list[str]

    @property
    def n(self) -> int:
        return int(self.dst.shape[0])


def report_identity(instance: str, start: int, interval_s: int, report_id: str | None,
                    content: tuple[bytes, ...] = ()) -> int:
    """63-bit identity of a report: a re-sent report (retry, drained buffer) has the same one.

    With the agent's ``report_id``: (instance, start, report_id). Without: (instance, start,
    interval_s) and the content, as parsed numbers and strings (not the bytes: a re-send whose
    JSON differs only in key order, spacing or ``1.0`` for ``1`` is the same report).

    >>> a = report_identity("h1", 1764000000, 30, None, (b"x",))
    >>> a == report_identity("h1", 1764000000, 30, None, (b"x",)), a == report_identity("h1", 1764000000, 30, None, (b"y",))
    (True, False)
    >>> report_identity("h1", 1764000000, 30, "r7", (b"x",)) == report_identity("h1", 1764000000, 60, "r7", (b"z",))
    True
    """
    h = hashlib.blake2b(digest_size=8)
    if report_id is not None:
        h.update(f"id\x00{instance}\x00{start}\x00{report_id}".encode())
    else:
        h.update(f"content\x00{instance}\x00{start}\x00{interval_s}".encode())
        # each part after its length (8 bytes, little-endian), fed at once: one update, the same digest
        h.update(b"".join([x for part in content for x in (len(part).to_bytes(8, "little"), part)]))
    return int.from_bytes(h.digest(), "little") >> 1


class _PlainEndpoint(msgspec.Struct):
    ip: str
    subnet: str | None = None
    az: str | None = None
    vpc: str | None = None


class _PlainSample(msgspec.Struct):
    remote: _PlainEndpoint
    bytes_sent: int
    bytes_received: int
    retransmissions: int
    timeouts: int
    flows: int
    rtt_us: list[int]


class _PlainReport(msgspec.Struct):
    """A report whose every field has its exact JSON type (integers that are integers, a sample
    list, endpoints with a string ``ip``): what ``check_many``'s decoder accepts. Ranges, lengths
    and placement are checked after it; anything else (a ``1.0``, a flat report, a ``null``
    ``report_id``) is left to ``check``. Unknown fields are ignored, as ``check`` ignores them."""

    version: int
    instance: str
    local: _PlainEndpoint
    start: int
    interval_s: int
    samples: list[_PlainSample]
    report_id: str | msgspec.UnsetType = msgspec.UNSET


#: Decodes and type-checks a plainly good report in one pass, in C (``check_many``).
_PLAIN = msgspec.json.Decoder(_PlainReport)


class _Columns(NamedTuple):
    dst: np.ndarray  # place code per sample, -1: not placeable
    counters: np.ndarray  # (len(SAMPLE_COUNTERS), samples)
    rtt: np.ndarray
    rtt_owner: np.ndarray
    ips: list[str]
    rtt_items: np.ndarray  # per sample


@functools.lru_cache(maxsize=1024)
def _arange_bytes(n: int) -> bytes:
    """``np.arange(n).tobytes()``: a report's sample indices, as its identity hashes them."""
    return np.arange(n, dtype=np.int64).tobytes()


class _Bad(Exception):
    def __init__(self, reason: str, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


def _count_samples(raw: bytes) -> int:
    """How many samples a message holds, if it can be told (for counting what is dead-lettered)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    if type(msg) is not dict:
        return 0
    return len(msg["samples"]) if type(msg.get("samples")) is list else 1


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _typename(x: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(x), type(x).__name__)


def _as_int(x: Any) -> int | None:
    """JSON Schema's integer: an int, or a number with no fractional part (``1.0``); never a boolean."""
    if type(x) is int:
        return x
    if type(x) is float and x.is_integer():
        return int(x)
    return None


def _intcol(values: list) -> np.ndarray | None:
    """The vectorised twin of ``_as_int`` over a column; ``None`` if any value is not an integer."""
    types = set(map(type, values))
    if types == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return None
    if types <= {int, float}:
        arr = np.array(values, dtype=np.float64)
        if np.all(arr == np.trunc(arr)) and np.all(np.abs(arr) < 2.0**53):
            return arr.astype(np.int64)
    return None


def _int(obj: dict, key: str, path: str, lo: int, hi: int | None) -> int:
    if key not in obj:
        raise _Bad("missing_field", path, f"{path} is required")
    x = _as_int(obj[key])
    if x is None:
        raise _Bad("wrong_type", path, f"{path} must be an integer, got {_typename(obj[key])}")
    if x < lo or (hi is not None and x > hi):
        raise _Bad("out_of_range", path, f"{path}={x} outside [{lo}, {hi if hi is not None else 'inf'}]")
    return x


def _str(obj: dict, key: str, path: str, required: bool = True, lo: int = 1,
         hi: int = LIMITS["id_max_len"]) -> str | None:
    x = obj.get(key)
    if x is None:  # missing, or an explicit null
        if required:
            raise _Bad("missing_field" if key not in obj else "wrong_type", path, f"{path} is required")
        return None
    if type(x) is not str:
        raise _Bad("wrong_type", path, f"{path} must be a string, got {_typename(x)}")
    if not lo <= len(x) <= hi:
        raise _Bad("out_of_range", path, f"{path} must be {lo}..{hi} characters")
    return x


def _endpoint(obj: dict, key: str, path: str) -> tuple[str, str | None, str | None, str | None]:
    if key not in obj:
        raise _Bad("missing_field", path, f"{path} is required")
    ep = obj[key]
    if type(ep) is not dict:
        raise _Bad("wrong_type", path, f"{path} must be an object, got {_typename(ep)}")
    ip = _str(ep, "ip", f"{path}.ip", True, LIMITS["ip_min_len"], LIMITS["ip_max_len"])
    hi = LIMITS["place_max_len"]
    return ip, _str(ep, "subnet", f"{path}.subnet", False, 1, hi), _str(ep, "az", f"{path}.az", False, 1, hi), \
        _str(ep, "vpc", f"{path}.vpc", False, 1, hi)


class Validator:
    """Checks reports and places their endpoints; holds the placement cache.

    Parameters
    ----------
    topology
        Anything with ``locate(ip)`` returning an object with ``subnet``, ``az`` and
        ``vpc`` (``topology.Topology``); ``None`` places every unnamed remote in
        ``external`` and refuses reporters that do not name their subnet.
    max_future_s, max_message_bytes, max_samples
        See ``config.Settings``.
    """

    #: Samples per set of columns in ``check_many`` at most. Gathering 300,000 samples' fields at once
    #: cost 1.7 times what a report at a time did (cache misses); a few thousand, three quarters of it.
    CHUNK_SAMPLES = 4096

    def __init__(self, topology: _Locator | None = None, *, max_future_s: int = 300,
                 max_message_bytes: int = 4 * 1024 * 1024, max_samples: int | None = None) -> None:
        self.topology = topology
        self.max_future_s = max_future_s
        self.max_message_bytes = max_message_bytes
        self.max_samples = min(max_samples or LIMITS["samples_max"], LIMITS["samples_max"])
        self.places: list[tuple[str, str, str]] = []
        self._place_code: dict[tuple, int] = {}
        self._place_index: dict[tuple[str, str, str], int] = {}
        self._local_src: dict[tuple, tuple[str, str, str]] = {}  # reporters' endpoints known to be good
        self._hi = np.array([LIMITS[k] for k in SAMPLE_COUNTERS], dtype=np.int64)[:, None]
        self._lo = np.array([1 if k == "flows" else 0 for k in SAMPLE_COUNTERS], dtype=np.int64)[:, None]

    # --- placement --------------------------------------------------------------------
    def _resolve(self, ip: str, subnet: str | None, az: str | None, vpc: str | None) -> tuple[str, str, str] | None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise _Bad("wrong_type", "ip", f"{ip!r} is not an IP address") from None
        if subnet is not None and az is not None and vpc is not None:
            return subnet, az, vpc
        loc = self.topology.locate(ip) if self.topology is not None else None
        if subnet is None:
            if loc is None or loc.subnet == EXTERNAL:
                return None
            return loc.subnet, az or loc.az, vpc or loc.vpc
        if loc is not None and loc.subnet == subnet:
            return subnet, az or loc.az, vpc or loc.vpc
        return subnet, az or _UNKNOWN, vpc or _UNKNOWN

    def _code(self, key: tuple) -> int:
        """Index in ``places`` of the placement of an endpoint (ip, subnet, az, vpc).

        Codes are per *placement*, not per key: two samples towards one subnet, one naming
        it and one leaving it to the topology, must land in the same partial.
        """
        code = self._place_code.get(key)
        if code is None:
            # the fast path checked only the types: lengths here, once per distinct endpoint
            # (the slow path's _endpoint then names the field and the reason)
            ip, hi = key[0], LIMITS["place_max_len"]
            if not LIMITS["ip_min_len"] <= len(ip) <= LIMITS["ip_max_len"] or any(
                    x is not None and not 1 <= len(x) <= hi for x in key[1:]):
                raise _Bad("out_of_range", None, "endpoint field length")
            placed = self._resolve(*key)
            if placed is None:
                placed = (EXTERNAL, EXTERNAL, EXTERNAL)
            code = self._place_index.get(placed)
            if code is None:
                code = self._place_index[placed] = len(self.places)
                self.places.append(placed)
            self._place_code[key] = code
        return code

    def _bound_cache(self) -> None:
        """Start the placement cache afresh when it is large; codes only live for one report (or batch)."""
        if len(self._place_code) + len(self._local_src) >= 1_000_000:
            self.places.clear()
            self._place_index.clear()
            self._place_code.clear()
            self._local_src.clear()

    # --- checking -----------------------------------------------------------------------
    def check(self, raw: bytes, now: float) -> tuple[Report | None, list[Rejection]]:
        """Validate one message; ``now`` is the wall clock (Unix seconds) for the future check."""
        self._bound_cache()
        if len(raw) > self.max_message_bytes:
            return None, [Rejection("oversize", f"message is {len(raw)} bytes, limit {self.max_message_bytes}",
                                    samples=_count_samples(raw), raw=raw)]
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # orjson stops at 64-bit integers; valid JSON may hold bigger ones (then out of range)
                msg = json.loads(raw, parse_constant=_no_constants)
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None, [Rejection("malformed_json", f"not JSON: {exc}", raw=raw)]
        if type(msg) is not dict:
            return None, [Rejection("not_an_object", f"a report is a JSON object, got {_typename(msg)}",
                                    payload=msg)]
        try:
            header = self._header(msg, now)
        except _Bad as bad:
            n = len(msg["samples"]) if type(msg.get("samples")) is list else (0 if "samples" in msg else 1)
            return None, [Rejection(bad.reason, bad.detail, bad.field, samples=n, payload=msg)]
        samples = msg.get("samples")
        if samples is None:  # flat form: the sample fields sit in the message itself
            samples, flat = [msg], True
        else:
            flat = False
            if type(samples) is not list:
                return None, [Rejection("wrong_type", f"samples must be an array, got {_typename(samples)}",
                                        "samples", samples=1, payload=msg)]
            if not samples:
                return None, [Rejection("out_of_range", "samples must not be empty", "samples", payload=msg)]
            if len(samples) > self.max_samples:
                return None, [Rejection("oversize", f"{len(samples)} samples, limit {self.max_samples}", "samples",
                                        samples=len(samples), payload=msg)]
        instance, src, start, interval_s, report_id, local_ip = header
        report = self._fast(samples, instance, src, start, interval_s)
        rejected: list[Rejection] = []
        if report is None:
            report, rejected = self._slow(samples, flat, instance, src, start, interval_s)
        if report is not None:
            report.local_ip = local_ip
            report.rid = report_identity(instance, start, interval_s, report_id, () if report_id is not None else (
                repr(src).encode(), report.counters.tobytes(), report.rtt.tobytes(), report.rtt_owner.tobytes(),
                report.index.tobytes(), "\x00".join(report.ips).encode()))
        return report, rejected

    def _header(self, msg: dict, now: float) -> tuple[str, tuple[str, str, str], int, int, str | None, str]:
        if "version" not in msg:
            raise _Bad("missing_field", "version", "version is required")
        if _as_int(msg["version"]) != WIRE_VERSION:
            raise _Bad("unsupported_version", "version",
                       f"version {msg['version']!r} is not supported on this topic (expects {WIRE_VERSION})")
        instance = _str(msg, "instance", "instance")
        start = _int(msg, "start", "start", LIMITS["start_min"], None)
        if start > now + self.max_future_s:
            raise _Bad("future_timestamp", "start",
                       f"start={start} is {start - now:.0f} s ahead of the worker clock (limit {self.max_future_s} s)")
        interval_s = _int(msg, "interval_s", "interval_s", LIMITS["interval_min"], LIMITS["interval_max"])
        report_id = None
        if "report_id" in msg:
            if msg["report_id"] is None:
                raise _Bad("wrong_type", "report_id", "report_id must be a string (or left out), got null")
            report_id = _str(msg, "report_id", "report_id", True, 1, LIMITS["report_id_max_len"])
        local = _endpoint(msg, "local", "local")
        src = self.places[self._code(local)]
        if local[1] is None and src == (EXTERNAL, EXTERNAL, EXTERNAL):
            raise _Bad("unknown_local", "local",
                       f"reporter {instance} at {local[0]} names no subnet and is in no known CIDR")
        return instance, src, start, interval_s, report_id, local[0]

    def _fast(self, samples: list, instance: str, src: tuple, start: int, interval_s: int) -> Report | None:
        """All-or-nothing vectorised path: ``None`` means 'look closer'."""
        cols = self._gather(samples)
        if cols is None or self._bad(cols).any():
            return None
        dst, counters, rtt, owner, ips, _ = cols
        return Report(instance, src, start, interval_s, dst, counters, rtt, owner,
                      np.arange(len(samples), dtype=np.int64), ips)

    def _gather(self, samples: list) -> _Columns | None:
        """The columns of ``samples`` if every field has its type (ranges unchecked), else ``None``.

        ``dst`` is -1 where the remote endpoint cannot be placed (bad IP, field lengths)."""
        try:
            cols = [[s[k] for s in samples] for k in SAMPLE_COUNTERS]
            rtts = [s["rtt_us"] for s in samples]
            remotes = [s["remote"] for s in samples]
            keys = [(r["ip"], r.get("subnet"), r.get("az"), r.get("vpc")) for r in remotes]
            lens = [len(x) for x in rtts]
            flat_rtt = list(chain.from_iterable(rtts))
        except (KeyError, TypeError, AttributeError):
            return None
        if set(map(type, rtts)) != {list}:
            return None
        if set(map(type, [k[0] for k in keys])) != {str}:  # ip: a string, required
            return None
        if not set(map(type, chain.from_iterable(keys))) <= _STR_OR_NONE:  # subnet/az/vpc: string or null
            return None
        rtt = _intcol(flat_rtt)
        if rtt is None:
            return None
        if all(set(map(type, c)) == _INT for c in cols):  # the usual case: one conversion
            try:
                counters = np.array(cols, dtype=np.int64)
            except OverflowError:
                return None
        else:
            counters_l = [_intcol(c) for c in cols]
            if any(c is None for c in counters_l):
                return None
            counters = np.vstack(counters_l)
        codes = list(map(self._place_code.get, keys))  # the cache answers nearly every sample
        if None in codes:
            codes = [self._try_code(k) if c is None else c for k, c in zip(keys, codes)]
        lens_a = np.array(lens, dtype=np.int64)
        owner = np.repeat(np.arange(len(samples), dtype=np.int64), lens_a)
        return _Columns(np.array(codes, dtype=np.int64), counters, rtt, owner, [k[0] for k in keys], lens_a)

    def _gather_plain(self, samples: list[_PlainSample]) -> _Columns | None:
        """``_gather`` of decoded ``_PlainSample``: their types are checked, so only the conversions can fail
        (an integer beyond 64 bits)."""
        try:
            counters = np.array([[x.bytes_sent for x in samples], [x.bytes_received for x in samples],
                                 [x.retransmissions for x in samples], [x.timeouts for x in samples],
                                 [x.flows for x in samples]], dtype=np.int64)
            rtts = [x.rtt_us for x in samples]
            lens = np.fromiter(map(len, rtts), dtype=np.int64, count=len(rtts))
            rtt = np.fromiter(chain.from_iterable(rtts), dtype=np.int64, count=int(lens.sum()))
        except OverflowError:
            return None
        keys = [(r.ip, r.subnet, r.az, r.vpc) for r in [x.remote for x in samples]]
        codes = list(map(self._place_code.get, keys))
        if None in codes:
            codes = [self._try_code(k) if c is None else c for k, c in zip(keys, codes)]
        owner = np.repeat(np.arange(len(samples), dtype=np.int64), lens)
        return _Columns(np.array(codes, dtype=np.int64), counters, rtt, owner, [k[0] for k in keys], lens)

    def _try_code(self, key: tuple) -> int:
        try:
            return self._code(key)
        except _Bad:
            return -1

    def _bad(self, cols: _Columns) -> np.ndarray:
        """Per sample: does it break a range (counters, RTT values, RTT items) or have no placement?"""
        dst, counters, rtt, owner, _, lens = cols
        bad = (counters < self._lo).any(axis=0) | (counters > self._hi).any(axis=0)
        bad |= (dst < 0) | (lens > LIMITS["rtt_items"])
        if rtt.size:
            out = (rtt < LIMITS["rtt_us_min"]) | (rtt > LIMITS["rtt_us"])
            if out.any():
                bad[owner[out]] = True
        return bad

    # --- many reports at once -----------------------------------------------------------------
    def check_many(self, raws: list[bytes], now: float) -> tuple[list[Batch], list[int]]:
        """Validate many messages at once: the columns of those accepted whole, and the rest.

        Returns batches of reports whose header and every sample pass (each report exactly what
        ``check`` would accept) and the indices in ``raws`` of every other message, for ``check``
        to refuse or cut with the exact reason. Python works per report here (decode, header);
        numpy per sample, over all reports together."""
        self._bound_cache()
        out: list[Batch] = []
        slow: list[int] = []
        heads: list[tuple] = []
        lists: list[list] = []
        rows: list[int] = []
        size = 0
        decode = _PLAIN.decode
        for i, raw in enumerate(raws):
            head = None
            if len(raw) <= self.max_message_bytes:
                try:
                    head = self._quick_header(decode(raw), now)
                except msgspec.MsgspecError:  # not plainly good: ``check`` says what is wrong
                    pass
            if head is None:
                slow.append(i)
                continue
            n = len(head[-1])
            if rows and size + n > self.CHUNK_SAMPLES:  # columns of a few thousand samples stay in the CPU's caches
                self._many(list(range(len(rows))), heads, lists, rows, out, slow)
                heads, lists, rows, size = [], [], [], 0
            heads.append(head[:-1])
            lists.append(head[-1])
            rows.append(i)
            size += n
        self._many(list(range(len(rows))), heads, lists, rows, out, slow)
        slow.sort()
        return out, slow

    def _quick_header(self, msg: _PlainReport, now: float) -> tuple | None:
        """``(instance, src, start, interval_s, report_id, local_ip, samples)`` when the header's values are
        in range (their types the decoder checked); ``None`` leaves the message to ``check``."""
        instance, start, interval_s, samples, report_id = (msg.instance, msg.start, msg.interval_s, msg.samples,
                                                           msg.report_id)
        if not (msg.version == WIRE_VERSION and 1 <= len(instance) <= LIMITS["id_max_len"]
                and LIMITS["start_min"] <= start <= now + self.max_future_s
                and LIMITS["interval_min"] <= interval_s <= LIMITS["interval_max"]
                and 1 <= len(samples) <= self.max_samples):
            return None
        if report_id is msgspec.UNSET:
            report_id = None
        elif not 1 <= len(report_id) <= LIMITS["report_id_max_len"]:
            return None
        local = msg.local
        key = (local.ip, local.subnet, local.az, local.vpc)
        src = self._local_src.get(key)
        if src is None:
            try:
                src = self.places[self._code(key)]
            except _Bad:
                return None
            if key[1] is None and src == (EXTERNAL, EXTERNAL, EXTERNAL):
                return None
            self._local_src[key] = src
        return instance, src, start, interval_s, report_id, key[0], samples

    def _many(self, ks: list[int], heads: list[tuple], lists: list[list], rows: list[int], out: list[Batch],
              slow: list[int]) -> None:
        """Columns for reports ``ks`` (indices into heads/lists); halves them while a type is wrong somewhere."""
        if not ks:
            return
        lens = [len(lists[k]) for k in ks]
        cols = self._gather_plain(list(chain.from_iterable(lists[k] for k in ks)))
        if cols is None:
            if len(ks) == 1:
                slow.append(rows[ks[0]])
                return
            half = len(ks) // 2
            self._many(ks[:half], heads, lists, rows, out, slow)
            self._many(ks[half:], heads, lists, rows, out, slow)
            return
        bounds = np.zeros(len(ks) + 1, dtype=np.int64)
        np.cumsum(lens, out=bounds[1:])
        bad = self._bad(cols)
        if bad.any():
            refused = np.logical_or.reduceat(bad, bounds[:-1])
            slow.extend(rows[k] for k, r in zip(ks, refused.tolist()) if r)
            self._many([k for k, r in zip(ks, refused.tolist()) if not r], heads, lists, rows, out, slow)
            return
        dst, counters, rtt, owner, ips, _ = cols
        rids = []
        starts_rtt = np.searchsorted(owner, bounds) if rtt.size else np.zeros(len(bounds), dtype=np.int64)
        for j, k in enumerate(ks):
            instance, src, start, interval_s, report_id, _ = heads[k]
            if report_id is not None:
                rids.append(report_identity(instance, start, interval_s, report_id))
                continue
            a, b = int(bounds[j]), int(bounds[j + 1])
            ra, rb = int(starts_rtt[j]), int(starts_rtt[j + 1])
            rids.append(report_identity(instance, start, interval_s, None, (
                repr(src).encode(), counters[:, a:b].tobytes(), rtt[ra:rb].tobytes(), (owner[ra:rb] - a).tobytes(),
                _arange_bytes(b - a), "\x00".join(ips[a:b]).encode())))
        out.append(Batch([rows[k] for k in ks], [(h[0], h[1], h[2], h[3], h[5]) for h in (heads[k] for k in ks)],
                         rids, bounds, dst, counters, rtt, owner, ips))

    def _slow(self, samples: list, flat: bool, instance: str, src: tuple, start: int,
              interval_s: int) -> tuple[Report | None, list[Rejection]]:
        good: list[int] = []
        rejected: list[Rejection] = []
        for i, s in enumerate(samples):
            prefix = "" if flat else f"samples[{i}]."
            try:
                self._check_sample(s, prefix)
            except _Bad as bad:
                rejected.append(Rejection(bad.reason, bad.detail, bad.field, None if flat else i, 1, s))
            else:
                good.append(i)
        if not good:
            return None, rejected
        report = self._fast([samples[i] for i in good], instance, src, start, interval_s)
        if report is None:  # the per-sample checks must catch everything the fast path refuses
            raise AssertionError("validator fast and slow paths disagree")  # pragma: no cover
        report.index = np.array(good, dtype=np.int64)
        return report, rejected

    def _check_sample(self, s: Any, prefix: str) -> None:
        if type(s) is not dict:
            raise _Bad("wrong_type", prefix.rstrip(".") or None, f"a sample is an object, got {_typename(s)}")
        ip, subnet, az, vpc = _endpoint(s, "remote", f"{prefix}remote")
        for k in SAMPLE_COUNTERS:
            _int(s, k, f"{prefix}{k}", 1 if k == "flows" else 0, LIMITS[k])
        path = f"{prefix}rtt_us"
        if "rtt_us" not in s:
            raise _Bad("missing_field", path, f"{path} is required")
        rtt = s["rtt_us"]
        if type(rtt) is not list:
            raise _Bad("wrong_type", path, f"{path} must be an array of integers, got {_typename(rtt)}")
        if len(rtt) > LIMITS["rtt_items"]:
            raise _Bad("oversize", path, f"{path} has {len(rtt)} items, limit {LIMITS['rtt_items']}")
        for j, x0 in enumerate(rtt):
            x = _as_int(x0)
            if x is None:
                raise _Bad("wrong_type", f"{path}[{j}]", f"{path}[{j}] must be an integer, got {_typename(x0)}")
            if not LIMITS["rtt_us_min"] <= x <= LIMITS["rtt_us"]:
                raise _Bad("out_of_range", f"{path}[{j}]",
                           f"{path}[{j}]={x} outside [{LIMITS['rtt_us_min']}, {LIMITS['rtt_us']}] us")
        try:
            self._code((ip, subnet, az, vpc))
        except _Bad as bad:
            raise _Bad(bad.reason, f"{prefix}remote.ip", bad.detail) from None
