"""``flowmon alerts``: follow the anomaly events, filter them, print them, forward them to a webhook.  *shell*

Anomaly events travel on ``<prefix>-anomalies-v1`` (``schemas/wire/flow_anomaly.v1.json``),
keyed by ``alert_id``. An alert has a lifecycle, ``opened`` (seq 0) → ``updated`` (seq 1, 2, ...)
→ ``resolved``, and ``(alert_id, seq)`` identifies one event.

Pieces, from pure to shell:

* :func:`decode_event` checks a message against the schema (a bad one raises
  :class:`MalformedEvent`; the subscriber skips it with a warning, it never stops);
* :func:`matches` is the filter: subnet pairs, minimum severity, scope, metric;
* :func:`format_event` renders one readable line (UTC time, units per metric);
* :class:`Dedup` drops an event already seen: delivery is at least once, so a replay
  repeats ``(alert_id, seq)``. It remembers the last ``maxlen`` keys (LRU, 100 000 by
  default): a repeat older than that passes again;
* :class:`Webhook` POSTs each event as JSON with retries and exponential backoff;
* :func:`subscribe` is the aiokafka consumer (an async iterator of decoded events);
  :func:`run_alerts` wires them together, :func:`alerts_command` is the typer command.

Severity filter. ``severity`` is a minimum and applies to each event's own ``severity``
field: ``"warning"`` passes everything, ``"critical"`` only events whose severity is
critical. Every event carries its alert's severity, ``resolved`` included, so the
resolution of a critical alert passes a critical filter like its opening did.

Catching up (``follow=False``). The subscriber stops once every assigned partition's
position reaches the high watermark the first fetch of that partition reported (the log
end when it started reading; what is produced later is not waited for). It uses the
fetch's high watermark, not ListOffsets: Tansu answers ListOffsets with the last batch's
base offset + 1, not the log end. For the same reason, starting "at the end" (only new
events) takes the end from a first fetch too, not from the "latest" reset (see :func:`subscribe`).

Examples
--------
>>> ev = example_event(event="updated", seq=2, metric="rtt_p90", observed=48_000.0, expected=9_500.0)
>>> matches(ev, pairs=["subnet-a->subnet-b"], severity="warning", metric="rtt_p90")
True
>>> matches(ev, pairs=["subnet-b"]), matches(ev, pairs=["subnet-b->subnet-a"]), matches(ev, severity="critical")
(True, False, False)
>>> format_event(ev)
'2023-11-14T22:20:00Z updated  warning  subnet-a → subnet-b  rtt_p90 48.0 ms (expected 9.50 ms)  score 5.2  alert 00c0ffee00c0ffee'
>>> d = Dedup()
>>> d.is_duplicate(ev), d.is_duplicate(dict(ev, emitted_at=1.0)), d.dropped
(False, True, 1)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Optional

import orjson
import typer

from pipeline.wire.contract import schema

__all__ = [
    "decode_attribution",
    "format_attribution",
    "SEVERITIES",
    "SCOPES",
    "METRICS",
    "MalformedEvent",
    "decode_event",
    "parse_pair",
    "matches",
    "format_event",
    "Dedup",
    "Webhook",
    "subscribe",
    "AlertStats",
    "run_alerts",
    "alerts_command",
    "example_event",
]

log = logging.getLogger(__name__)

_PROPS = schema("flow_anomaly")["properties"]
#: Severities, lowest first (from the schema).
SEVERITIES: tuple[str, ...] = tuple(_PROPS["severity"]["enum"])
#: Alert scopes (from the schema).
SCOPES: tuple[str, ...] = tuple(_PROPS["scope"]["enum"])
#: Metrics an alert can be about (from the schema).
METRICS: tuple[str, ...] = tuple(_PROPS["metric"]["enum"])


# --- decoding -------------------------------------------------------------------------------------
class MalformedEvent(ValueError):
    """A message on the anomalies topic that is not a valid ``flow_anomaly`` v1 event."""


def decode_event(value: bytes | str | None) -> dict[str, Any]:
    """Parse and check one message value against ``flow_anomaly.v1.json``.

    >>> decode_event(orjson.dumps(example_event()))["event"]
    'opened'
    >>> decode_event(b'{"version": 1')
    Traceback (most recent call last):
    ...
    pipeline.alerts.notify.MalformedEvent: not JSON: ...
    >>> decode_event(orjson.dumps(dict(example_event(), severity="meh")))
    Traceback (most recent call last):
    ...
    pipeline.alerts.notify.MalformedEvent: at severity: 'meh' is not one of ['warning', 'critical']
    """
    return _decode(value, "flow_anomaly")


_validators: dict[str, Any] = {}


def _decode(value: bytes | str | None, schema_name: str) -> dict[str, Any]:
    """JSON-decode ``value`` and check it against ``schemas/wire/<schema_name>.v1.json``."""
    if value is None:
        raise MalformedEvent("empty message (tombstone)")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    import jsonschema
    validator = _validators.get(schema_name)
    if validator is None:
        validator = _validators[schema_name] = jsonschema.Draft202012Validator(schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise MalformedEvent(f"at {where}: {error.message}")
    return doc


# --- filter ---------------------------------------------------------------------------------------
def parse_pair(spec: str) -> tuple[str, str] | str:
    """A pair filter: ``"SRC->DST"`` gives ``(src, dst)`` (``*`` = any subnet); a bare name is
    returned as is and matches either side.

    >>> parse_pair("subnet-a -> subnet-b"), parse_pair("subnet-a->*"), parse_pair(" subnet-c ")
    (('subnet-a', 'subnet-b'), ('subnet-a', '*'), 'subnet-c')
    >>> parse_pair("a->b->c")
    Traceback (most recent call last):
    ...
    ValueError: bad pair 'a->b->c': expected SRC_SUBNET->DST_SUBNET or one subnet name
    """
    parts = [p.strip() for p in spec.split("->")]
    if not all(parts) or len(parts) > 2:
        raise ValueError(f"bad pair {spec!r}: expected SRC_SUBNET->DST_SUBNET or one subnet name")
    return (parts[0], parts[1]) if len(parts) == 2 else parts[0]


def _one_of(value: str | Iterable[str] | None, allowed: tuple[str, ...], what: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = frozenset([value] if isinstance(value, str) else value)
    if not values:
        return None
    bad = sorted(values - set(allowed))
    if bad:
        raise ValueError(f"unknown {what} {', '.join(bad)}: expected one of {', '.join(allowed)}")
    return values


def matches(event: Mapping[str, Any], pairs: Iterable[str] | None = None, severity: str | None = None,
            scope: str | Iterable[str] | None = None, metric: str | Iterable[str] | None = None) -> bool:
    """Does ``event`` pass every given filter? (``None``/empty = no filter.)

    * ``pairs``: any of them matches; ``"SRC->DST"`` is one direction (``*`` = any
      subnet), a bare subnet name matches the event's source or destination subnet;
    * ``severity``: the minimum, compared with the event's own ``severity``
      (``"warning"`` passes all, ``"critical"`` only critical ones; a ``resolved``
      event carries its alert's severity, so it passes when the alert did);
    * ``scope``: ``"pair"`` or ``"instance"``; ``metric``: one metric or several.

    An unknown severity, scope or metric, or a malformed pair, raises ``ValueError``.

    >>> ev = example_event(src_subnet="web", dst_subnet="db", severity="critical", metric="timeout_rate")
    >>> [matches(ev, pairs=[p]) for p in ("web->db", "db->web", "db", "*->db", "web->*", "cache")]
    [True, False, True, True, True, False]
    >>> matches(ev, pairs=["cache", "db->web", "web"])   # any of them
    True
    >>> matches(ev, severity="warning"), matches(dict(ev, severity="warning"), severity="critical")
    (True, False)
    >>> matches(ev, scope="pair"), matches(ev, scope="instance"), matches(ev, metric=["rtt_mean", "timeout_rate"])
    (True, False, True)
    >>> matches(ev, severity="high")
    Traceback (most recent call last):
    ...
    ValueError: unknown severity high: expected one of warning, critical
    """
    if severity is not None:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown severity {severity}: expected one of {', '.join(SEVERITIES)}")
        if SEVERITIES.index(event["severity"]) < SEVERITIES.index(severity):
            return False
    scopes = _one_of(scope, SCOPES, "scope")
    if scopes is not None and event["scope"] not in scopes:
        return False
    metrics = _one_of(metric, METRICS, "metric")
    if metrics is not None and event["metric"] not in metrics:
        return False
    if pairs:
        src, dst = event["src_subnet"], event["dst_subnet"]
        for spec in pairs:
            p = parse_pair(spec)
            if isinstance(p, str):
                if p in (src, dst):
                    return True
            elif p[0] in ("*", src) and p[1] in ("*", dst):
                return True
        return False
    return True


# --- formatting -----------------------------------------------------------------------------------
def _num(x: float) -> str:
    """About three significant digits, never in exponent notation.

    >>> [_num(x) for x in (0, 0.0123, 0.5, 4.2, 12.34, 150.4, 12345.6, 1e-9)]
    ['0', '0.0123', '0.500', '4.20', '12.3', '150', '12346', '0.000000']
    """
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.{min(6, 2 - math.floor(math.log10(a)))}f}"


def _value(metric: str, v: float) -> str:
    """A metric value with its unit: retransmission rate in %, timeouts per flow, RTT (µs) in ms.

    >>> [_value(m, v) for m, v in [("retrans_rate", 0.042), ("timeout_rate", 0.125), ("rtt_mean", 700),
    ...                            ("rtt_p90", 150_400)]]
    ['4.20%', '0.125 per flow', '0.700 ms', '150 ms']
    """
    if metric == "retrans_rate":
        return f"{_num(v * 100)}%"
    if metric == "timeout_rate":
        return f"{_num(v)} per flow"
    if metric.startswith("rtt"):
        return f"{_num(v / 1000)} ms"
    return _num(v)


def decode_attribution(value: bytes | str | None) -> dict[str, Any]:
    """Parse and check one ``flow_attribution.v1.json`` record (raises :class:`MalformedEvent`)."""
    return _decode(value, "flow_attribution")


def format_attribution(rec: Mapping[str, Any]) -> str:
    """One readable line: the cause, the blamed element and the evidence.

    >>> print(format_attribution({"alert_id": "00c0ffee00c0ffee", "cause": "infrastructure", "element_kind": "az_pair",
    ...     "element": "az1|az2", "confidence": 0.8, "reporters_crossing": 12, "reporters_degraded": 10,
    ...     "exonerating": 2, "evidence_level": "instance"}))
    ↳ infrastructure: az_pair az1|az2 (confidence 0.80) — 10 of 12 reporters crossing it degraded  alert 00c0ffee00c0ffee
    >>> print(format_attribution({"alert_id": "00c0ffee00c0ffee", "cause": "workload", "element_kind": "instance",
    ...     "element": "s1/3", "confidence": 0.6, "keys_degraded": 3, "keys_scored": 3, "exonerating": 7,
    ...     "evidence_level": "instance"}))
    ↳ workload: instance s1/3 (confidence 0.60) — 3 of its 3 keys degraded, 7 reporters of its subnet healthy  alert 00c0ffee00c0ffee
    """
    cause = rec["cause"]
    if cause == "undetermined":
        why = "evidence too thin (too few independent reporters to tell a host from its path)"
        return f"↳ undetermined: {why}  alert {rec['alert_id']}"
    head = f"↳ {cause}: {rec['element_kind']} {rec['element']} (confidence {rec['confidence']:.2f})"
    if cause == "workload":
        ev = (f"{rec['keys_degraded']} of its {rec['keys_scored']} keys degraded, "
              f"{rec['exonerating']} reporters of its subnet healthy")
    else:
        ev = f"{rec['reporters_degraded']} of {rec['reporters_crossing']} reporters crossing it degraded"
        if rec.get("evidence_level") == "pair":
            ev += " (pair keys)"
    return f"{head} — {ev}  alert {rec['alert_id']}"


def format_event(event: Mapping[str, Any]) -> str:
    """One readable line: time (the interval that caused the event, UTC), event, severity,
    ``src → dst`` (``[instance]`` for an instance alert), metric observed and expected
    with units, score, why it resolved, alert id.

    >>> print(format_event(example_event()))
    2023-11-14T22:13:20Z opened   critical subnet-a → subnet-b  retrans_rate 4.20% (expected 0.300%)  score 9.1  alert 00c0ffee00c0ffee
    >>> print(format_event(example_event(event="resolved", seq=3, scope="instance", instance="web-1",
    ...                                  metric="timeout_rate", observed=0.01, expected=0.012, reason="normal")))
    2023-11-14T22:13:20Z resolved critical subnet-a → subnet-b [web-1]  timeout_rate 0.0100 per flow (expected 0.0120 per flow)  score 9.1  normal  alert 00c0ffee00c0ffee
    """
    at = datetime.fromtimestamp(event["at"], tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = f"{event['src_subnet']} → {event['dst_subnet']}"
    if event.get("instance"):
        key += f" [{event['instance']}]"
    metric = event["metric"]
    line = (f"{at} {event['event']:<8} {event['severity']:<8} {key}  {metric} {_value(metric, event['observed'])} "
            f"(expected {_value(metric, event['expected'])})  score {event['score']:.1f}")
    if event.get("reason"):
        line += f"  {event['reason']}"
    return f"{line}  alert {event['alert_id']}"


def example_event(**overrides: Any) -> dict[str, Any]:
    """A valid anomaly event (for doctests and tests); ``overrides`` replace fields.

    >>> import jsonschema
    >>> jsonschema.validate(example_event(), schema("flow_anomaly"))
    """
    ev: dict[str, Any] = {
        "version": 1, "alert_id": "00c0ffee00c0ffee", "event": "opened", "seq": 0, "scope": "pair",
        "instance": None, "src_subnet": "subnet-a", "src_az": "az-1", "src_vpc": "vpc-1",
        "dst_subnet": "subnet-b", "dst_az": "az-2", "dst_vpc": "vpc-1", "metric": "retrans_rate",
        "observed": 0.042, "expected": 0.003, "score": 9.1, "severity": "critical",
        "first_seen": 1700000000, "last_seen": 1700000000, "at": 1700000000, "interval_s": 30,
        "window_start": 1699999800, "reason": None, "emitted_at": 1700000031.5,
    }
    if overrides.get("event") == "updated":
        ev.update(at=1700000400, last_seen=1700000400, score=5.2, severity="warning")
    ev.update(overrides)
    return ev


# --- dedup ----------------------------------------------------------------------------------------
_HEX16 = re.compile("[0-9a-f]{16}")


class Dedup:
    """Drops an event whose ``(alert_id, seq)`` was seen among the last ``maxlen`` distinct ones.

    An LRU: a repeat refreshes its key; beyond ``maxlen`` keys the least recently seen is
    forgotten (a repeat of it would pass again). A key is one int (the 64-bit hex id and the
    seq), so 100 000 keys take about 15 MB.

    >>> d = Dedup(maxlen=2)
    >>> a0, a1, b0 = example_event(seq=0), example_event(seq=1), example_event(alert_id="0" * 16, seq=0)
    >>> [d.is_duplicate(e) for e in (a0, a1, a0, b0, a0, a1)]   # a1 was the least recent when b0 came
    [False, False, True, False, True, False]
    >>> d.dropped, len(d)
    (2, 2)
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self.maxlen = maxlen
        self.dropped = 0
        self._seen: OrderedDict[int | tuple[str, int], None] = OrderedDict()

    @staticmethod
    def key(event: Mapping[str, Any]) -> int | tuple[str, int]:
        """``(alert_id, seq)`` packed in an int when the id is 16 hex digits (always, on the wire).

        >>> Dedup.key({"alert_id": "0000000000000001", "seq": 2}), Dedup.key({"alert_id": "x", "seq": 2})
        (4294967298, ('x', 2))
        >>> Dedup.key({"alert_id": "+000000000000001", "seq": 2})   # int() would accept it: not packed
        ('+000000000000001', 2)
        """
        alert_id, seq = event["alert_id"], event["seq"]
        if 0 <= seq < 1 << 32 and _HEX16.fullmatch(alert_id):
            return int(alert_id, 16) << 32 | seq
        return (alert_id, seq)

    def is_duplicate(self, event: Mapping[str, Any]) -> bool:
        """True if this ``(alert_id, seq)`` was seen (counted in ``dropped``); else remember it."""
        key = self.key(event)
        if key in self._seen:
            self._seen.move_to_end(key)
            self.dropped += 1
            return True
        self._seen[key] = None
        if len(self._seen) > self.maxlen:
            self._seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._seen)


# --- webhook --------------------------------------------------------------------------------------
class Webhook:
    """POST each event as JSON to ``url`` (aiohttp), with retries and exponential backoff.

    One event is tried at most ``1 + retries`` times. Retried: connection errors, a timeout
    (``timeout_s`` per attempt), HTTP 5xx and 429. Not retried: any other status outside
    2xx (a 4xx says the request itself is wrong). Before retry *k* (1, 2, ...) it waits
    ``backoff_s * 2 ** (k - 1)`` seconds, at most ``max_backoff_s``, or longer if the 429/5xx
    answer says ``Retry-After: <seconds>`` (still at most ``max_backoff_s``). An event that
    cannot be delivered is logged as an error and counted in ``failed``; :meth:`send` never
    raises (except cancellation). Counters: ``delivered``, ``failed`` (events) and
    ``retried`` (attempts after the first).

    Each request carries ``Idempotency-Key: <alert_id>-<seq>``: an attempt that timed out
    may still have arrived, and a replay of the topic repeats events, so the receiver sees
    an event at least once and can drop repeats by that key.

    Use as ``async with Webhook(url) as hook: await hook.send(event)``.
    """

    def __init__(self, url: str, *, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 10.0,
                 max_backoff_s: float = 30.0, headers: Mapping[str, str] | None = None) -> None:
        import yarl
        u = yarl.URL(url)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"webhook URL must be http(s)://host/...: {url!r}")
        if retries < 0 or backoff_s < 0 or timeout_s <= 0 or max_backoff_s < 0:
            raise ValueError("retries and backoff_s must be >= 0, timeout_s > 0")
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.headers = dict(headers or {})
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self._session = None

    async def __aenter__(self) -> Webhook:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        import aiohttp
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Content-Type": "application/json", "User-Agent": "flowmon-alerts", **self.headers})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based).

        >>> h = Webhook("http://127.0.0.1:9/hook", backoff_s=0.5, max_backoff_s=3)
        >>> [h.delay(k) for k in (1, 2, 3, 4, 5)], h.delay(1, retry_after=2.0)
        ([0.5, 1.0, 2.0, 3, 3], 2.0)
        """
        d = self.backoff_s * 2 ** (retry - 1)
        if retry_after is not None:
            d = max(d, retry_after)
        return min(d, self.max_backoff_s)

    async def send(self, event: Mapping[str, Any]) -> bool:
        """Deliver one event; True if a receiver answered 2xx. Never raises (but cancellation)."""
        import aiohttp
        ident = f"{event.get('alert_id')}-{event.get('seq', 'attribution')}"
        try:
            body = orjson.dumps(event)
        except TypeError as exc:
            self.failed += 1
            log.error("webhook %s: event %s not delivered: cannot encode it: %s", self.url, ident, exc)
            return False
        if self._session is None:
            await self.start()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        attempt = 0
        while True:
            retry_after = None
            try:
                async with self._session.post(self.url, data=body, timeout=timeout,
                                              headers={"Idempotency-Key": ident}) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        self.delivered += 1
                        return True
                    text = (await resp.text(errors="replace"))[:200]
                    problem = f"HTTP {status} {resp.reason or ''}".rstrip() + (f": {text}" if text else "")
                    retryable = status >= 500 or status == 429
                    if retryable:
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.InvalidURL as exc:
                problem, retryable = f"invalid URL: {exc}", False
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True
            except Exception as exc:  # never let one event stop the stream
                problem, retryable = f"{type(exc).__name__}: {exc}", False
            if not retryable or attempt >= self.retries:
                self.failed += 1
                tries = f"after {attempt + 1} attempts" if attempt else "(not retried)"
                log.error("webhook %s: event %s not delivered %s: %s", self.url, ident, tries, problem)
                return False
            attempt += 1
            self.retried += 1
            wait = self.delay(attempt, retry_after)
            log.warning("webhook %s: event %s: %s; retry %d/%d in %.3g s", self.url, ident, problem, attempt,
                        self.retries, wait)
            await asyncio.sleep(wait)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (HTTP dates are ignored).

    >>> _retry_after("3"), _retry_after(None), _retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (3.0, None, None)
    """
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# --- Kafka ----------------------------------------------------------------------------------------
def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


async def subscribe(bootstrap: str, topic: str, *, from_beginning: bool, follow: bool, group: str | None = None,
                    poll_ms: int = 500, stall_timeout_s: float = 60.0, session_timeout_s: float = 10.0,
                    heartbeat_s: float = 3.0, rebalance_timeout_s: float | None = None,
                    warn: Callable[[str], None] | None = None,
                    on_malformed: Callable[[str], None] | None = None,
                    decode: Callable[[Any], dict[str, Any]] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Decoded anomaly events of ``topic`` (``decode``, default :func:`decode_event`), in order per
    partition (so per alert).

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
    from aiokafka import AIOKafkaConsumer

    warn = warn or _stderr_warning
    on_malformed = on_malformed or warn
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, client_id="flowmon-alerts",
        enable_auto_commit=group is not None, auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=min(poll_ms, 500), session_timeout_ms=int(session_timeout_s * 1000),
        heartbeat_interval_ms=int(heartbeat_s * 1000),
        rebalance_timeout_ms=int((rebalance_timeout_s or session_timeout_s) * 1000))
    await consumer.start()
    try:
        settled: set[Any] = set()  # partitions whose start is decided
        priming: set[Any] = set()  # partitions starting at the end, until a fetch told where that is
        targets: dict[Any, int] = {}  # partition -> high watermark of its first fetch (follow=False)
        last_progress = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=poll_ms)
            assigned = consumer.assignment()
            settled &= assigned  # a partition revoked by a rebalance is decided again if it comes back
            priming &= assigned
            for tp in assigned - settled - priming:  # newly assigned: decide before yielding
                if from_beginning or (group is not None and await consumer.committed(tp) is not None):
                    settled.add(tp)
                else:
                    priming.add(tp)
            for tp in sorted(batch):
                if tp in priming:
                    continue
                for msg in batch[tp]:
                    try:
                        event = (decode or decode_event)(msg.value)
                    except MalformedEvent as exc:
                        on_malformed(f"skipped malformed message {tp.topic}[{tp.partition}]@{msg.offset}: {exc}")
                        continue
                    yield event
            for tp in list(priming):
                hw = consumer.highwater(tp)
                if hw is not None:
                    consumer.seek(tp, max(hw, await consumer.position(tp)))
                    priming.discard(tp)
                    settled.add(tp)
            if follow:
                continue
            if batch:
                last_progress = time.monotonic()
            if not priming and await _caught_up(consumer, targets):
                return
            if time.monotonic() - last_progress > stall_timeout_s:
                warn(f"stopped before catching up: no progress on {topic} for {stall_timeout_s:g} s")
                return
    finally:
        await consumer.stop()


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


# --- the command ----------------------------------------------------------------------------------
@dataclass
class AlertStats:
    """What :func:`run_alerts` saw."""

    shown: int = 0  # passed the filters and were not duplicates
    filtered: int = 0  # valid events the filters dropped
    duplicates: int = 0  # repeats of a shown (alert_id, seq)
    malformed: int = 0  # skipped messages

    def __str__(self) -> str:
        return (f"{self.shown} event{'s' * (self.shown != 1)} shown ({self.filtered} filtered out, "
                f"{self.duplicates} duplicate{'s' * (self.duplicates != 1)} dropped, "
                f"{self.malformed} malformed skipped)")


async def run_alerts(bootstrap: str, topic: str, emit: Callable[[dict[str, Any]], None], *, from_beginning: bool,
                     follow: bool, group: str | None = None, pairs: Iterable[str] | None = None,
                     severity: str | None = None, scope: str | Iterable[str] | None = None,
                     metric: str | Iterable[str] | None = None, webhook: Webhook | None = None,
                     dedup: Dedup | None = None, stats: AlertStats | None = None,
                     warn: Callable[[str], None] | None = None, attributions_topic: str | None = None,
                     emit_attribution: Callable[[dict[str, Any]], None] | None = None, **consumer: Any) -> AlertStats:
    """Subscribe, filter (:func:`matches`), drop repeats (:class:`Dedup`), then ``emit`` each
    event and forward it to ``webhook`` (awaited, so events reach it one at a time, in order).
    ``consumer``: more keyword arguments of :func:`subscribe` (timings). With
    ``attributions_topic``, each shown alert's attribution is passed to ``emit_attribution``
    (and the webhook) right after its ``opened`` event, or when it arrives if later."""
    pairs = list(pairs or [])
    matches(example_event(), pairs, severity, scope, metric)  # bad filters fail before connecting
    stats = stats if stats is not None else AlertStats()
    dedup = dedup or Dedup()
    warn = warn or _stderr_warning

    def on_malformed(message: str) -> None:
        stats.malformed += 1
        warn(message)

    shown_ids: OrderedDict[str, bool] = OrderedDict()  # opened alerts shown -> attribution shown yet
    waiting: OrderedDict[str, dict[str, Any]] = OrderedDict()  # attributions of alerts not shown yet
    lock = asyncio.Lock()

    async def show_attribution(rec: dict[str, Any]) -> None:
        shown_ids[rec["alert_id"]] = True
        if emit_attribution is not None:
            emit_attribution(rec)
        if webhook is not None:
            await webhook.send(rec)

    async def alerts() -> None:
        events = subscribe(bootstrap, topic, from_beginning=from_beginning, follow=follow, group=group, warn=warn,
                           on_malformed=on_malformed, **consumer)
        async with aclosing(events):
            async for event in events:
                if not matches(event, pairs, severity, scope, metric):
                    stats.filtered += 1
                    continue
                if dedup.is_duplicate(event):
                    stats.duplicates += 1
                    continue
                async with lock:
                    stats.shown += 1
                    emit(event)
                    if webhook is not None:
                        await webhook.send(event)
                    if event["event"] == "opened" and attributions_topic:
                        shown_ids.setdefault(event["alert_id"], False)
                        while len(shown_ids) > 100_000:
                            shown_ids.popitem(last=False)
                        rec = waiting.pop(event["alert_id"], None)
                        if rec is not None and not shown_ids[event["alert_id"]]:
                            await show_attribution(rec)

    async def verdicts() -> None:
        recs = subscribe(bootstrap, attributions_topic, from_beginning=from_beginning, follow=follow, group=None,
                         warn=warn, on_malformed=on_malformed, decode=decode_attribution,
                         **{k: v for k, v in consumer.items() if k in ("poll_ms", "stall_timeout_s")})
        async with aclosing(recs):
            async for rec in recs:
                async with lock:
                    done = shown_ids.get(rec["alert_id"])
                    if done is None:
                        waiting[rec["alert_id"]] = rec
                        while len(waiting) > 100_000:
                            waiting.popitem(last=False)
                    elif not done:
                        await show_attribution(rec)

    if attributions_topic:
        await asyncio.gather(alerts(), verdicts())
    else:
        await alerts()
    return stats


class _ConsoleHandler(logging.Handler):
    """Log records as 'level: message' lines on a rich console (the command's stderr)."""

    def __init__(self, console: Any) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape
        colour = "red" if record.levelno >= logging.ERROR else "yellow"
        self.console.print(f"[{colour}]{record.levelname.lower()}:[/] {escape(record.getMessage())}",
                           highlight=False, soft_wrap=True)


# Same as cli.BrokerOpt (not imported from there: cli imports this module).
BrokerOpt = Annotated[Optional[str], typer.Option("--broker", "-b", help="Bootstrap 'host:port' or 'embedded'.")]


def alerts_command(
    broker: BrokerOpt = None,
    pair: Annotated[Optional[list[str]], typer.Option(
        "--pair", help="Only this subnet pair 'SRC->DST' ('*' = any subnet), or a subnet on either side. "
        "Repeatable.")] = None,
    severity: Annotated[Optional[str], typer.Option(
        help="Minimum severity: warning (everything) or critical. Compared with each event's own severity "
        "(a resolved event carries its alert's).")] = None,
    scope: Annotated[Optional[str], typer.Option(help="Only 'pair' alerts or only 'instance' alerts.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(
        help="Only this metric: retrans_rate, timeout_rate, rtt_mean, rtt_p90. Repeatable.")] = None,
    json_lines: Annotated[bool, typer.Option(
        "--json", help="Print each event as a JSON line (the wire format).")] = False,
    attribution: Annotated[bool, typer.Option(
        "--attribution/--no-attribution", help="Under each opened alert, its attribution (infrastructure / "
        "workload / undetermined, the blamed element and the evidence; flow-attributions-v1). JSON: the "
        "attribution record as its own line (it has 'cause', not 'event').")] = True,
    follow: Annotated[bool, typer.Option(
        "--follow/--no-follow", help="Keep waiting for new events; --no-follow exits once caught up.")] = True,
    from_beginning: Annotated[Optional[bool], typer.Option(
        "--from-beginning/--from-latest",
        help="Where to start. Default: from the beginning with --no-follow, only new events when following. "
        "With --group, only where the group has no committed offset.")] = None,
    group: Annotated[Optional[str], typer.Option(
        help="Consumer group: resume where it left off (offsets are committed). "
        "Default: none, nothing committed.")] = None,
    webhook: Annotated[Optional[str], typer.Option(
        help="Also POST each shown event as JSON to this http(s) URL.")] = None,
    webhook_retries: Annotated[int, typer.Option(
        min=0, help="Retries per event (5xx, 429, timeouts, no connection).")] = 5,
    webhook_backoff: Annotated[float, typer.Option(
        min=0.0, help="First retry delay, seconds; doubles each retry (at most 30 s).")] = 0.5,
    webhook_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per webhook attempt.")] = 10.0,
) -> None:
    """Show anomaly events (opened / updated / resolved) as they come, filtered; optionally POST them to a webhook.

    Repeats of an event (at-least-once delivery) are dropped, malformed messages skipped with a warning.
    Exit status 1 if a webhook delivery failed.
    """
    from rich.markup import escape

    from pipeline.cli.app import _bootstrap, _settings, console
    from pipeline.runtime.topics import Topics, ensure_topics

    pairs = pair or []
    try:
        for p in pairs:
            parse_pair(p)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pair") from None
    for hint, values, allowed in (("--severity", [severity] if severity else [], SEVERITIES),
                                  ("--scope", [scope] if scope else [], SCOPES), ("--metric", metric or [], METRICS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise typer.BadParameter(f"{', '.join(bad)}: expected one of {', '.join(allowed)}", param_hint=hint)
    hook = None
    if webhook:
        try:
            hook = Webhook(webhook, retries=webhook_retries, backoff_s=webhook_backoff, timeout_s=webhook_timeout)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--webhook") from None
    if not any(isinstance(h, _ConsoleHandler) for h in log.handlers):  # webhook retries and failures
        log.addHandler(_ConsoleHandler(console))

    s = _settings(broker=broker)
    bootstrap = _bootstrap(s)
    topics = Topics.from_settings(s)
    start = from_beginning if from_beginning is not None else not follow

    out = sys.stdout
    if json_lines:
        def emit(event: dict[str, Any]) -> None:
            out.write(orjson.dumps(event).decode() + "\n")
            out.flush()
    elif out.isatty():
        from rich.console import Console
        from rich.text import Text
        tty = Console(highlight=False)
        styles = {"critical": "bold red", "warning": "yellow"}

        def emit(event: dict[str, Any]) -> None:
            style = "green" if event["event"] == "resolved" else styles.get(event["severity"], "")
            tty.print(Text(format_event(event), style=style), soft_wrap=True)
    else:
        def emit(event: dict[str, Any]) -> None:
            out.write(format_event(event) + "\n")
            out.flush()

    if json_lines:
        emit_attr = emit
    else:
        def emit_attr(rec: dict[str, Any]) -> None:
            out.write("    " + format_attribution(rec) + "\n")
            out.flush()

    stats = AlertStats()

    async def go() -> None:
        await ensure_topics(bootstrap, topics)
        if hook is not None:
            await hook.start()
        try:
            await run_alerts(bootstrap, topics.anomalies, emit, from_beginning=start, follow=follow, group=group,
                             pairs=pairs, severity=severity, scope=scope, metric=metric, webhook=hook, stats=stats,
                             session_timeout_s=s.session_timeout_s, heartbeat_s=s.heartbeat_s,
                             rebalance_timeout_s=s.rebalance_timeout_s,
                             attributions_topic=topics.attributions if attribution else None,
                             emit_attribution=emit_attr,
                             warn=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}", highlight=False,
                                                          soft_wrap=True))
        finally:
            if hook is not None:
                await hook.close()

    from aiokafka.errors import KafkaError

    code = 0
    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        code = 130
    except (KafkaError, OSError) as exc:
        console.print(f"[red]broker {escape(bootstrap)}:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        code = 2
    if code != 2:
        summary = str(stats)
        if hook is not None:
            summary += f"; webhook: {hook.delivered} delivered, {hook.failed} failed, {hook.retried} retries"
            if hook.failed and code == 0:
                code = 1
        console.print(summary, highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)
