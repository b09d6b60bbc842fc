"""What leaves detection and attribution: typed records and their JSON (wire) form.

Detection (``detect.Detection``) emits *anomaly events* (topic ``flow-anomalies-v1``,
``schemas/wire/flow_anomaly.v1.json``) and the *health* of every key it scored, which
travels in *health batches* (topic ``flow-health-v1``) to the attribution stage; the
stage (``attribute.AttributionStage``) emits *attributions*
(``flow_attribution.v1.json``) and *NHI periods* (``flow_nhi.v1.json``).

Each is a frozen record here with ``to_wire()`` (the JSON-ready dict, keys in the order
the topics have always carried them, so the bytes are unchanged) and ``from_wire()``.
Inside ``detect`` and ``attribute`` the records are used; the stages' public methods
hand the wire dicts to the runtime (which encodes them with ``orjson``).

The vocabulary the schemas enumerate is defined here once: the scored :data:`METRICS`,
the metric :data:`FAMILIES` attribution correlates, and which metric is in which family.

Examples
--------
>>> h = KeyHealth(600, ("s1", "az1", "v"), ("s2", "az2", "v"), "s1/0", retrans=1, timeouts=0, lat=None,
...               weak=("retrans",), top=("10.0.1.9", None, None), ip="10.0.0.4")
>>> h.to_wire()
{'t': 600, 'r': 's1/0', 'src': ['s1', 'az1', 'v'], 'dst': ['s2', 'az2', 'v'], 'retrans': 1, 'timeouts': 0, 'lat': None, 'weak': ['retrans'], 'top': {'retrans': '10.0.1.9', 'timeouts': None, 'lat': None}, 'ip': '10.0.0.4'}
>>> KeyHealth.from_wire(h.to_wire()) == h
True
>>> p = KeyHealth(600, ("s1", "az1", "v"), ("s2", "az2", "v"), None, retrans=0, timeouts=0, lat=0)
>>> p.pair, p.key, p.to_wire()["r"], p.to_wire()["pair"]
(True, 's1>s2', 's1>s2', True)
>>> family_of("rtt_p90"), FAMILY_METRICS["lat"]
('lat', ('rtt_p50', 'rtt_p90'))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import msgspec
import orjson

__all__ = [
    "METRICS",
    "FAMILIES",
    "FAMILY_METRICS",
    "FAMILY_OF",
    "family_of",
    "pair_key",
    "Place",
    "AnomalyEvent",
    "KeyHealth",
    "HealthBatch",
    "Evidence",
    "Attribution",
    "NhiPeriod",
]

#: Metric families attribution correlates, and the scored metrics in each (in this order).
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "retrans": ("retrans_rate",),
    "timeouts": ("timeout_rate",),
    "lat": ("rtt_p50", "rtt_p90"),
}
#: The metrics detection scores, in the order every model keeps them.
METRICS: tuple[str, ...] = tuple(m for ms in FAMILY_METRICS.values() for m in ms)
#: ``retrans`` (retransmission rate), ``timeouts`` (timeout rate), ``lat`` (RTT).
FAMILIES: tuple[str, ...] = tuple(FAMILY_METRICS)
#: The family of every metric an event may carry (``rtt_mean``: what workers before the median scored).
FAMILY_OF: dict[str, str] = {**{m: f for f, ms in FAMILY_METRICS.items() for m in ms}, "rtt_mean": "lat"}

#: A subnet's place: ``(subnet, az, vpc)`` (a JSON array on the wire).
Place = tuple[str, str, str]


def family_of(metric: str) -> str:
    """The family of a detection metric.

    >>> family_of("timeout_rate"), family_of("rtt_mean")
    ('timeouts', 'lat')
    """
    return FAMILY_OF[metric]


def pair_key(src_subnet: str, dst_subnet: str) -> str:
    """The reporter id a *pair* key's health carries on the wire (``r``): ``"src>dst"``.

    >>> pair_key("s1", "s2")
    's1>s2'
    """
    return f"{src_subnet}>{dst_subnet}"


# ------------------------------------------------------------------------------------
# detection out
# ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """One step in the life of an alert (``flow_anomaly.v1``; the schema documents every field)."""

    VERSION: ClassVar[int] = 1

    alert_id: str
    event: str  # opened | updated | resolved
    seq: int
    scope: str  # pair | instance
    instance: str | None
    src: Place
    dst: Place
    metric: str
    observed: float
    expected: float
    score: float
    severity: str  # warning | critical
    first_seen: int
    last_seen: int
    at: int
    interval_s: int
    window_start: int
    reason: str | None = None  # for 'resolved': normal | silent
    emitted_at: float = 0.0  # set by the worker when it sends the event

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict, keys in schema order."""
        (ss, sa, sv), (ds, da, dv) = self.src, self.dst
        return {"version": self.VERSION, "alert_id": self.alert_id, "event": self.event, "seq": self.seq,
                "scope": self.scope, "instance": self.instance, "src_subnet": ss, "src_az": sa, "src_vpc": sv,
                "dst_subnet": ds, "dst_az": da, "dst_vpc": dv, "metric": self.metric, "observed": self.observed,
                "expected": self.expected, "score": self.score, "severity": self.severity,
                "first_seen": self.first_seen, "last_seen": self.last_seen, "at": self.at,
                "interval_s": self.interval_s, "window_start": self.window_start, "reason": self.reason,
                "emitted_at": self.emitted_at}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> AnomalyEvent:
        if d.get("version", cls.VERSION) != cls.VERSION:
            raise ValueError(f"anomaly event version {d['version']!r}; this reads {cls.VERSION}")
        return cls(d["alert_id"], d["event"], d["seq"], d["scope"], d["instance"],
                   (d["src_subnet"], d["src_az"], d["src_vpc"]), (d["dst_subnet"], d["dst_az"], d["dst_vpc"]),
                   d["metric"], d["observed"], d["expected"], d["score"], d["severity"], d["first_seen"],
                   d["last_seen"], d["at"], d["interval_s"], d["window_start"], d["reason"], d["emitted_at"])


class KeyHealth(NamedTuple):  # immutable like the frozen records, ~4x cheaper to build: one per key and interval, built on one side and read on the other
    """One scored key's interval, for attribution.

    Per family: 1 (degraded: flagged or elevated), 0 (scored, normal) or None (no evidence,
    or the key is still learning). ``weak``: the degraded families none of whose metrics is
    strong (merely elevated). ``reporter`` None: the *pair* key (every reporter of
    ``src`` towards ``dst``), which carries neither ``top`` nor ``ip``. ``top``: per
    family, the remote IP that contributed most (None: unknown); ``ip``: the reporter's own.

    On the wire (``flow-health-v1``, ``wire.records.encode_health``) a key is the array of these
    fields in this order (``src``, ``dst``, ``weak`` and ``top`` as arrays). :meth:`to_wire` is the
    object form earlier versions sent (a pair key's ``r`` is ``"src>dst"`` with ``"pair": true``;
    ``weak`` present only when not empty): :meth:`from_wire` reads both, so health replayed from
    before an upgrade still counts.
    """

    t: int
    src: Place
    dst: Place
    reporter: str | None
    retrans: int | None = None
    timeouts: int | None = None
    lat: int | None = None
    weak: tuple[str, ...] = ()
    top: tuple[str | None, str | None, str | None] | None = None
    ip: str | None = None

    @property
    def pair(self) -> bool:
        return self.reporter is None

    @property
    def key(self) -> str:
        """The reporter id correlation uses: the instance, or ``"src>dst"`` for a pair key."""
        return self.reporter if self.reporter is not None else pair_key(self.src[0], self.dst[0])

    def level(self, family: str) -> int | None:
        """1, 0 or None for a family (see the class): the field of that name."""
        return getattr(self, family)  # type: ignore[no-any-return]

    def top_of(self, family: str) -> str | None:
        return self.top[FAMILIES.index(family)] if self.top is not None else None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "r": self.key, "src": list(self.src), "dst": list(self.dst),
                               "retrans": self.retrans, "timeouts": self.timeouts, "lat": self.lat}
        if self.weak:
            out["weak"] = list(self.weak)
        if self.pair:
            out["pair"] = True
        else:
            out["top"] = None if self.top is None else dict(zip(FAMILIES, self.top))
            out["ip"] = self.ip
        return out

    @classmethod
    def from_wire(cls, d: Mapping[str, Any] | list[Any]) -> KeyHealth:
        """The array form, or the object form (absent optional fields: ``weak``, ``top``, ``ip``, a family,
        read as unknown).

        >>> import orjson
        >>> h = KeyHealth(600, ("s1", "az1", "v"), ("s2", "az2", "v"), "s1/0", 1, 0, None, ("retrans",), ("10.0.1.9", None, None))
        >>> KeyHealth.from_wire(orjson.loads(orjson.dumps(tuple(h)))) == h == KeyHealth.from_wire(h.to_wire())
        True
        """
        if type(d) is list:  # (one per scored key and interval: kept cheap, no Python-level __new__)
            t, src, dst, r, retrans, timeouts, lat, weak, top, ip = d
            return tuple.__new__(cls, (t, tuple(src), tuple(dst), r, retrans, timeouts, lat, tuple(weak) if weak else (),
                                       None if top is None else tuple(top), ip))  # type: ignore[arg-type]
        get = d.get  # type: ignore[union-attr]
        top, weak = get("top"), get("weak")
        return cls(d["t"], tuple(d["src"]), tuple(d["dst"]), None if get("pair") else d["r"],  # type: ignore[arg-type]
                   get("retrans"), get("timeouts"), get("lat"), tuple(weak) if weak else (),
                   None if top is None else (top.get("retrans"), top.get("timeouts"), top.get("lat")), get("ip"))


#: ``new_key_health((...every field...))``: a ``KeyHealth`` without the Python-level ``__new__`` of a NamedTuple
#: (detection builds one per scored key and interval, attribution one per pending entry).
new_key_health = functools.partial(tuple.__new__, KeyHealth)


@dataclass(frozen=True, slots=True)
class HealthBatch:
    """One pairs partition's message to the attribution stage (topic ``flow-health-v1``).

    ``upto``: the partition has handed over every interval starting at or before it (None:
    not yet known, or more chunks of this batch follow). ``opened``: the alerts opened.
    """

    partition: int
    upto: int | None
    health: tuple[KeyHealth, ...] = ()
    opened: tuple[AnomalyEvent, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"p": self.partition, "upto": self.upto, "health": [tuple(h) for h in self.health],
                "opened": [e.to_wire() for e in self.opened]}

    @classmethod
    def decode(cls, value: bytes) -> HealthBatch:
        """A health-topic value. msgspec builds the entries (arrays, ``KeyHealth``'s fields in order) in C, at
        about the cost of ``orjson.loads`` alone (0.58 of the general path); a value of other types goes the
        general way (``orjson``, :meth:`from_wire`), and entries written as objects are read by
        :meth:`KeyHealth.from_wire`.

        >>> b = HealthBatch(3, 60, (KeyHealth(30, ("s1", "a1", "v"), ("s2", "a2", "v"), "h", 1, 0, None, ("lat",)),))
        >>> HealthBatch.decode(orjson.dumps(b.to_wire())) == b == HealthBatch.decode(orjson.dumps(b.to_wire() | {"upto": 60.0}))
        True
        """
        try:
            w = _HEALTH_DECODER.decode(value)
        except msgspec.ValidationError:
            return cls.from_wire(orjson.loads(value))
        health = w.health
        for h in health:
            if type(h) is not KeyHealth:
                health = [h if type(h) is KeyHealth else KeyHealth.from_wire(h) for h in health]
                break
        return cls(w.p, w.upto, tuple(health), tuple([AnomalyEvent.from_wire(e) for e in w.opened]))

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> HealthBatch:
        """Health entries and events may already be records (an in-process run hands them over as they are)."""
        decode = KeyHealth.from_wire
        return cls(int(d["p"]), d.get("upto"),
                   tuple([h if type(h) is KeyHealth else decode(h) for h in d.get("health", ())]),
                   tuple([e if isinstance(e, AnomalyEvent) else AnomalyEvent.from_wire(e) for e in d.get("opened", ())]))



class _HealthWire(msgspec.Struct):
    """A health-topic value as :meth:`HealthBatch.decode` reads it first."""

    p: int
    upto: int | None = None
    health: list[KeyHealth | dict[str, Any]] = []
    opened: list[dict[str, Any]] = []


_HEALTH_DECODER = msgspec.json.Decoder(_HealthWire)

# ------------------------------------------------------------------------------------
# attribution out
# ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evidence:
    """What an attribution rests on (``flow_attribution.v1``: ``purity`` ... ``exonerating_reporters``)."""

    purity: float = 0.0
    reporters_crossing: int = 0
    reporters_degraded: int = 0
    degraded: tuple[str, ...] = ()
    keys_scored: int = 0
    keys_degraded: int = 0
    exonerating: int = 0
    exonerating_reporters: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"purity": self.purity, "reporters_crossing": self.reporters_crossing,
                "reporters_degraded": self.reporters_degraded, "degraded": list(self.degraded),
                "keys_scored": self.keys_scored, "keys_degraded": self.keys_degraded,
                "exonerating": self.exonerating, "exonerating_reporters": list(self.exonerating_reporters)}


@dataclass(frozen=True, slots=True)
class Attribution:
    """Why an alert opened (``flow_attribution.v1``; the schema documents every field).

    >>> a = Attribution("00000000000000aa", 600, "instance", "s1/0", "s1", "s2", "rtt_p50", "lat", "undetermined",
    ...                 None, None, 0.0, Evidence(), 0, "instance", 0.0)
    >>> list(a.to_wire())[:3], a.to_wire()["degraded"], Attribution.from_wire(a.to_wire()) == a
    (['version', 'alert_id', 'at'], [], True)
    """

    VERSION: ClassVar[int] = 1

    alert_id: str
    at: int
    scope: str
    instance: str | None
    src_subnet: str
    dst_subnet: str
    metric: str
    family: str
    cause: str  # infrastructure | workload | undetermined
    element_kind: str | None
    element: str | None
    confidence: float
    evidence: Evidence
    keys_attributed: int
    evidence_level: str  # instance | pair
    attributed_at: float

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.VERSION, "alert_id": self.alert_id, "at": self.at, "scope": self.scope,
                "instance": self.instance, "src_subnet": self.src_subnet, "dst_subnet": self.dst_subnet,
                "metric": self.metric, "family": self.family, "cause": self.cause, "element_kind": self.element_kind,
                "element": self.element, "confidence": self.confidence, **self.evidence.to_wire(),
                "keys_attributed": self.keys_attributed, "evidence_level": self.evidence_level,
                "attributed_at": self.attributed_at}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Attribution:
        ev = Evidence(d["purity"], d["reporters_crossing"], d["reporters_degraded"], tuple(d["degraded"]),
                      d["keys_scored"], d["keys_degraded"], d["exonerating"], tuple(d["exonerating_reporters"]))
        return cls(d["alert_id"], d["at"], d["scope"], d["instance"], d["src_subnet"], d["dst_subnet"], d["metric"],
                   d["family"], d["cause"], d["element_kind"], d["element"], d["confidence"], ev,
                   d["keys_attributed"], d["evidence_level"], d["attributed_at"])


@dataclass(frozen=True, slots=True)
class NhiPeriod:
    """A degraded period of a scope (``flow_nhi.v1``): sent when it starts (``end`` None) and when it ends.

    >>> NhiPeriod("az", "az1", 600, None, "subnet:s1", 0.0).to_wire()
    {'version': 1, 'scope_kind': 'az', 'scope': 'az1', 'status': 'degraded', 'start': 600, 'end': None, 'element': 'subnet:s1', 'updated': 0.0}
    """

    VERSION: ClassVar[int] = 1
    STATUS: ClassVar[str] = "degraded"

    scope_kind: str  # az | az_pair | subnet | vpc
    scope: str
    start: int
    end: int | None
    element: str  # 'kind:id' of the blamed element that started it
    updated: float

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.VERSION, "scope_kind": self.scope_kind, "scope": self.scope, "status": self.STATUS,
                "start": self.start, "end": self.end, "element": self.element, "updated": self.updated}

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> NhiPeriod:
        return cls(d["scope_kind"], d["scope"], d["start"], d["end"], d["element"], d["updated"])
