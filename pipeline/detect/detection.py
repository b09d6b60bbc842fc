"""Online anomaly detection per key and agent interval, with river.

Pure, no Kafka. ``windows.PartitionWindows`` hands over every complete agent interval
of a pair (``Outcome.intervals``: per-host counters); :class:`Detection` turns each into
one observation per *key* (``detect.observe``) and scores it against what the key has
learned so far (a model of :data:`MODELS`, by default ``detect.baseline.Baseline``):

* a ``pair`` key: all reporters of ``src_subnet`` towards ``dst_subnet``;
* an ``instance`` key: one reporter towards ``dst_subnet`` (attribution needs these).

Alerts (``lifecycle.AlertBook``) turn flags into ``opened`` / ``updated`` / ``resolved``
events (``wire.events.AnomalyEvent``, ``schemas/wire/flow_anomaly.v1.json``); the health of
every scored key (``wire.events.KeyHealth``) is kept for attribution.

What the runtime gets: :meth:`Detection.interval` returns the anomaly events' ``to_wire()``
dicts, the wire form, which it encodes as they are (the worker sets their ``emitted_at``);
:meth:`Detection.score_interval` is the typed form of ``interval``. :meth:`Detection.take_health`
returns the health entries as records (``wire.records.encode_health`` puts them on the health topic).

Examples
--------
Two hosts of ``s1`` talk to ``s2``; both start losing packets on all their connections. The
pair key sees it at once (no single reporter or remote explains it); each instance key, one
host's evidence spread over its connections, once it has lasted ``confirm_wide_after`` (2)
intervals, dated from the first (one connection's evidence would need ``confirm_after``, 3):

>>> d = Detection(interval_s=30, window_s=600)
>>> def iv(t, rtt_us, retrans=0):
...     c = [15_000_000, 150_000, retrans, 0, 3, 3, 3, 3 * rtt_us]   # wire.records.PARTIAL_COUNTERS
...     x = [retrans // 3, 0]                                           # the largest one-sample counts
...     host = lambda i: [c, {}, x, [f"10.0.1.{i}", None, None], f"10.0.0.{i}", {}]
...     return GridInterval(t, ["s1", "a1", "v"], ["s2", "a2", "v"], {"s1/0": host(4), "s1/1": host(5)})
>>> events = [e for k in range(40) for e in d.interval(iv(30 * k, 800 + 10 * (k % 3)))]
>>> events
[]
>>> [(e["event"], e["scope"], e["metric"]) for e in d.interval(iv(1200, 800, retrans=400))]
[('opened', 'pair', 'retrans_rate')]
>>> [(e["event"], e["scope"], e["instance"], e["first_seen"], e["severity"])
...  for e in d.interval(iv(1230, 800, retrans=400))]
[('updated', 'pair', None, 1200, 'critical'), ('opened', 'instance', 's1/0', 1200, 'critical'), ('opened', 'instance', 's1/1', 1200, 'critical')]
>>> [(w["r"], w["retrans"], w.get("pair"), w.get("top")) for w in (h.to_wire() for h in d.take_health()[-3:])]
[('s1>s2', 1, True, None), ('s1/0', 1, None, {'retrans': None, 'timeouts': None, 'lat': None}), ('s1/1', 1, None, {'retrans': None, 'timeouts': None, 'lat': None})]

Each host's health names no remote for its retransmissions although its report names
``10.0.1.4`` / ``10.0.1.5`` as the one that lost most: its loss stays hot with that remote's
part set aside, so no one remote explains it (a path's loss, which every remote suffers).
"""

from __future__ import annotations

import base64
import hashlib
import io
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.detect.baseline import DEFAULTS, PLAIN_FORMS, STATE_FORM, Baseline, BaselineParams
from pipeline.detect.candidates import GaussianCandidate, HalfSpaceCandidate, PageHinkleyCandidate
from pipeline.detect.contract import FAMILY_METRICS, METRICS, Detector, Verdict, params_dict, params_from
from pipeline.detect.lifecycle import AlertBook, AlertChange
from pipeline.detect.observe import MSS, Observation, observe
from pipeline.wire.events import AnomalyEvent, KeyHealth, Place, new_key_health
from pipeline.wire.records import (
    HOST_COUNTERS,
    HOST_IP,
    HOST_MAXIMA,
    HOST_MEDIANS,
    HOST_RTT_HIST,
    HOST_TOP,
    MAX_RETRANSMISSIONS,
    MAX_TIMEOUTS,
    RETRANSMISSIONS,
    TIMEOUTS,
    TOP_RETRANSMISSIONS,
    TOP_TIMEOUTS,
    GridInterval,
    zero_counters,
)
from pipeline.wire.rtt import merge_into, quantile

__all__ = ["METRICS", "MSS", "Observation", "observe", "Baseline", "BaselineParams", "MODELS", "Detection", "DEFAULTS",
           "KeyState", "ELEVATED_FRACTION", "dump_model", "load_model"]

#: Models ``flowmon eval --detector`` can compare; ``baseline`` is the one the pipeline runs.
MODELS: dict[str, type[Detector]] = {"baseline": Baseline, "gaussian": GaussianCandidate, "hst": HalfSpaceCandidate,
                                     "page_hinkley": PageHinkleyCandidate}

#: Retransmissions and timeouts: their positions in the counters, the one-sample maxima and the top remotes.
_COUNTS = ((RETRANSMISSIONS, MAX_RETRANSMISSIONS, TOP_RETRANSMISSIONS), (TIMEOUTS, MAX_TIMEOUTS, TOP_TIMEOUTS))


# ------------------------------------------------------------------------------------
# state of a key: its model and its alerts, serialisable
# ------------------------------------------------------------------------------------
#: Where a model class may be named in a state: the package (its pickled name, see ``detect/__init__``),
#: or this module (states written between the move into ``detect/`` and that name).
_STATE_MODULES = ("pipeline.detect", __name__)


class _RiverUnpickler(pickle.Unpickler):
    """Loads only flowmon models and river statistics (the state topic is not trusted with code)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _STATE_MODULES and name in {c.__name__ for c in MODELS.values()}:
            return super().find_class(module, name)
        if module.startswith(("river.stats", "river._river_rust.stats", "river.anomaly", "river.drift",
                              "river.preprocessing", "river.utils", "collections", "river.compose", "river.proba", "river.tree")):
            return super().find_class(module, name)
        if module == "functools" and name == "partial":  # HalfSpaceTrees keeps a partial of its own code
            return super().find_class(module, name)
        if (module, name) == ("random", "Random"):
            return super().find_class(module, name)
        if module == "builtins" and name in ("dict", "list", "set", "tuple", "float", "int"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"state may not load {module}.{name}")


def dump_model(model: Any) -> str | dict[str, Any]:
    """A model as the state topic carries it: the ``Baseline``'s plain form (a dict of numbers, JSON as it
    is), any other model pickled (base64; ``flowmon eval`` models, and the ``Baseline`` before that form)."""
    if type(model) is Baseline and (state := model.__getstate__()).get("form") == STATE_FORM:
        return state
    return base64.b64encode(pickle.dumps(model, protocol=5)).decode()


def load_model(blob: str | Mapping[str, Any]) -> Any:
    """The model :func:`dump_model` wrote (or an earlier version's pickled one)."""
    if isinstance(blob, Mapping):
        if blob.get("form") not in PLAIN_FORMS:
            raise ValueError(f"unknown model state form {blob.get('form')!r}")
        model = Baseline.__new__(Baseline)
        model.__setstate__(blob)
        return model
    return _RiverUnpickler(io.BytesIO(base64.b64decode(blob))).load()


@dataclass(slots=True)
class KeyState:
    """Everything one key carries between intervals."""

    scope: str  # 'pair' | 'instance'
    instance: str | None
    src: list[str]
    dst: list[str]
    model: Any
    last_t: int = 0
    alerts: AlertBook = field(default_factory=AlertBook)
    hot_since: dict[str, int] = field(default_factory=dict)  # metric -> first interval of its current hot streak

    def state(self) -> dict[str, Any]:
        return {"scope": self.scope, "instance": self.instance, "src": self.src, "dst": self.dst,
                "model": dump_model(self.model), "last_t": self.last_t, "alerts": self.alerts.state(),
                "hot_since": self.hot_since}

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> KeyState:
        return cls(s["scope"], s["instance"], list(s["src"]), list(s["dst"]), load_model(s["model"]), s["last_t"],
                   AlertBook.from_state(s["alerts"]), dict(s.get("hot_since", {})))


_FAMILIES = tuple(FAMILY_METRICS)
_FAMILY_OF = {m: i for i, metrics in enumerate(FAMILY_METRICS.values()) for m in metrics}

#: Attribution counts a key as degraded from this fraction of the alert threshold on (and above its
#: baseline): correlation across the fleet wants the weaker signals too, alerting does not.
ELEVATED_FRACTION = 0.6


def _health(t: int, src: Place, dst: Place, instance: str | None, verdicts: Mapping[str, Verdict],
            learned: Callable[[str], int | None], warmup: float, z: float, top: list | None = None,
            ip: str | None = None) -> KeyHealth:
    """One key's interval for attribution: per family 1 (flagged or elevated), 0 (scored, normal)
    or None (no evidence, or the key is still learning); ``weak``: the degraded families none of
    whose metrics is strong (merely elevated: weaker evidence). Strong: flagged, or hot and spread
    over the key's connections — a host's own evidence is confirmed for *alerting* only once it
    lasts, but across the fleet, several hosts hot at once on many connections each are what
    correlation is for. ``instance`` None: the pair key (no ``top``, no ``ip``). ``top`` names, per
    family, the remote that contributed most, except for a count (retransmissions, timeouts) that
    stays hot with that remote set aside (*wide*): one remote does not explain it, and naming it would
    let a path's loss, which every remote of a host suffers, pass for one remote's fault. A pair key's
    deviation that one reporter or one remote explains (``Verdict.single``) is weak evidence, however
    confirmed: its alert stands, but pair keys alone must not blame a path for one host's trouble."""
    elevated = ELEVATED_FRACTION * z
    # a family's level is the highest of its metrics' (1: strong or elevated, 0: scored), whatever their order
    levels: list[int | None] = [None, None, None]
    strong = [False, False, False]
    for m, v in verdicts.items():  # one per scored key and interval: plain loops, no generators
        if (n := learned(m)) is not None and n < warmup:
            continue  # still learning
        i = _FAMILY_OF[m]
        if v.hot and v.wide and i < 2 and top is not None:  # a count hot with its largest remote set aside:
            if top[i] is not None:  # that remote does not explain it, and must not be named as if it did
                top = list(top)
                top[i] = None
        if (v.flagged or (v.hot and v.wide)) and not (instance is None and v.single):
            levels[i], strong[i] = 1, True  # (a pair key's deviation that one reporter or remote explains: weak)
        elif levels[i] != 1:
            levels[i] = 1 if v.score >= elevated and v.observed > v.expected else 0
    weak: tuple[str, ...] = ()
    for i in (0, 1, 2):
        if levels[i] and not strong[i]:
            weak += (_FAMILIES[i],)
    retrans, timeouts, lat = levels
    if instance is None:
        return new_key_health((t, src, dst, None, retrans, timeouts, lat, weak, None, None))
    a, b, c = top or (None, None, None)  # which remote contributed most, per family
    return new_key_health((t, src, dst, instance, retrans, timeouts, lat, weak, (a, b, c), ip))


def _calm_health(t: int, src: Place, dst: Place, instance: str | None,
                 levels: tuple[int | None, int | None, int | None], top: list | None, ip: str | None) -> KeyHealth:
    """:func:`_health` of an interval none of whose metrics was hot (``Baseline.calm`` gave its levels):
    nothing is strong, so the elevated families are the weak ones, and no ``top`` is set aside."""
    retrans, timeouts, lat = levels
    weak: tuple[str, ...] = ()
    if retrans or timeouts or lat:
        weak = tuple(fam for level, fam in zip(levels, _FAMILIES) if level)
    if instance is None:
        return new_key_health((t, src, dst, None, retrans, timeouts, lat, weak, None, None))
    a, b, c = top or (None, None, None)
    return new_key_health((t, src, dst, instance, retrans, timeouts, lat, weak, (a, b, c), ip))


def _pair_observation(hosts: Mapping[str, list], p90: bool = True) -> Observation:
    """The pair key's observation: every host's counters summed, and what one reporter, one remote
    endpoint or the worst reporter's RTT can explain."""
    entries = list(hosts.values())
    counters = [e[HOST_COUNTERS] for e in entries]
    total = [sum(col) for col in zip(*counters)] if counters else zero_counters()  # integers: exact in any order
    hist: dict[int, int] = {}
    meds: dict[int, int] = {}
    by_remote: list[dict[str, int]] = [{}, {}]  # retransmissions / timeouts of each host's top remote, summed
    by_host = [max([0] + [c[k] for c in counters]) for k in (RETRANSMISSIONS, TIMEOUTS)]  # the largest reporter's
    worst_med, worst = -1.0, None
    for e in entries:
        m = e[HOST_MEDIANS]
        merge_into(hist, e[HOST_RTT_HIST])
        merge_into(meds, m)
        x, top = e[HOST_MAXIMA], e[HOST_TOP]
        for j, (_counter, most, remote) in enumerate(_COUNTS):
            if (r := top[remote]) is not None:
                br = by_remote[j]
                br[r] = br.get(r, 0) + x[most]
        if m and (q := quantile(m, 0.5)) > worst_med:
            worst_med, worst = q, m
    remote_max = [max(by_remote[j].values(), default=0) for j in range(2)]
    rest = 0.0
    if worst is not None:
        others = {b: n - worst.get(b, 0) for b, n in meds.items() if n > worst.get(b, 0)}
        rest = quantile(others, 0.5) if others else 0.0
    return observe(total, hist, [max(by_host[j], remote_max[j]) for j in range(2)], meds, p90, remote=remote_max,
                   one_reporter=len(hosts) < 2, rest=rest)


class Detection:
    """Per-key models and alert lifecycles of one pairs partition (or of a whole in-process run).

    Parameters
    ----------
    interval_s
        The agents' sample interval (for 'silent' resolution and the events' ``interval_s``).
    window_s
        Reporting window: ``updated`` events are sent at most once per window.
    model
        A :data:`MODELS` name.
    params
        Overrides of the model's parameters by name (``BaselineParams`` for ``baseline``;
        :data:`DEFAULTS`): unknown names are refused.
    instances
        Also keep ``instance`` keys (one per reporter and remote subnet), which attribution needs.
    key_ttl_s
        A key that has scored nothing for this long (a host gone, a subnet pair no longer
        talking) is forgotten: its model and state go (a tombstone in the state topic), so
        a fleet whose hosts come and go holds the keys of the recent ones only. A key that
        comes back learns again. Checked once per window of event time; ``0`` keeps keys for ever.
    calm
        A ``Baseline`` key with no alert open and nothing hot is scored and learned in one pass
        (``Baseline.calm``: the same numbers, about a quarter of the work); ``False``: always through
        the verdicts (what ``tests/detect/test_calm.py`` compares it with).
    """

    def __init__(self, interval_s: int = 30, window_s: int = 600, model: str = "baseline",
                 params: Mapping[str, float] | None = None, instances: bool = True,
                 key_ttl_s: int = 86_400, calm: bool = True) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown detector model {model!r}; one of {sorted(MODELS)}")
        self.interval_s = interval_s
        self.window_s = window_s
        self.model_name = model
        self.params = params_from(MODELS[model].Params, params)
        # the pipeline's model, as configured by default, reads no RTT p90: the observations skip it
        self._p90 = not (model == "baseline" and not getattr(self.params, "score_p90", 1))
        self.instances = instances
        self.keys: dict[tuple[str, str, str], KeyState] = {}
        self.dirty: set[tuple[str, str, str]] = set()
        self.open_keys: set[tuple[str, str, str]] = set()
        self.health: list[KeyHealth] = []  # per scored key and interval, for attribution
        self.key_ttl_s = key_ttl_s
        self.expired: set[tuple[str, str, str]] = set()  # forgotten since the last take_dirty (tombstones)
        self.expired_total = 0
        self._next_expiry = 0
        self.calm = calm
        self._elevated = ELEVATED_FRACTION * self.params.z  # (_health's threshold of an elevated score)
        #: one list per placement for every key's ``src``/``dst`` (a pair key and its reporters' keys name the
        #: same two; a copy each was ~160 B of a key's ~1.5 KB). Never changed in place.
        self._places: dict[tuple[str, ...], list[str]] = {}

    def _place(self, p: Iterable[str]) -> list[str]:
        t = tuple(p)
        got = self._places.get(t)
        if got is None:
            got = self._places[t] = list(t)
        return got

    def _key(self, key: tuple[str, str, str], scope: str, instance: str | None, src: list[str],
             dst: list[str]) -> KeyState:
        ks = self.keys.get(key)
        if ks is None:
            ks = self.keys[key] = KeyState(scope, instance, self._place(src), self._place(dst),
                                           MODELS[self.model_name](self.params))
        return ks

    def interval(self, iv: GridInterval) -> list[dict[str, Any]]:
        """Score one complete interval of one pair (``windows.Outcome.intervals`` item); alert events out,
        as wire dicts (``flow_anomaly.v1``)."""
        return [e.to_wire() for e in self.score_interval(iv)]

    def score_interval(self, iv: GridInterval) -> list[AnomalyEvent]:
        """:meth:`interval`, the events as records."""
        t, src, dst, hosts = iv.t, iv.src, iv.dst, iv.hosts
        places = ((src[0], src[1], src[2]), (dst[0], dst[1], dst[2]))
        p90 = self._p90
        events = self._score(("pair", src[0], dst[0]), "pair", None, src, dst, t, _pair_observation(hosts, p90),
                             places=places)
        if self.instances:
            d0, score = dst[0], self._score
            for host in sorted(hosts):
                e = hosts[host]
                ev = score(("instance", host, d0), "instance", host, src, dst, t,
                           observe(e[HOST_COUNTERS], e[HOST_RTT_HIST], e[HOST_MAXIMA], e[HOST_MEDIANS], p90),
                           e[HOST_TOP], e[HOST_IP], places)
                if ev:
                    events += ev
        events += self.sweep(t)
        if self.key_ttl_s and t >= self._next_expiry:
            self.expire(t)
        return events

    def expire(self, t: int) -> int:
        """Forget the keys that scored nothing in the ``key_ttl_s`` before ``t`` (and have no open alert:
        a silent key's alert resolves first); returns how many.

        >>> d = Detection(interval_s=30, window_s=600, key_ttl_s=3600)
        >>> d.keys[("instance", "gone", "s")] = KeyState("instance", "gone", ["a"] * 3, ["s"] * 3, None, last_t=0)
        >>> d.keys[("instance", "here", "s")] = KeyState("instance", "here", ["a"] * 3, ["s"] * 3, None, last_t=3000)
        >>> d.expire(4000), sorted(d.keys), d.take_dirty()
        (1, [('instance', 'here', 's')], {('instance', 'gone', 's'): None})
        """
        self._next_expiry = t + self.window_s
        limit = t - self.key_ttl_s
        old = [k for k, ks in self.keys.items() if ks.last_t < limit and k not in self.open_keys]
        for k in old:
            del self.keys[k]
            self.dirty.discard(k)
            self.expired.add(k)
        self.expired_total += len(old)
        return len(old)

    def _score(self, key: tuple[str, str, str], scope: str, instance: str | None, src: list[str],
               dst: list[str], t: int, o: Observation, top: list | None = None, ip: str | None = None,
               places: tuple[Place, Place] | None = None) -> list[AnomalyEvent]:
        """Score ``o`` for ``key`` (``places``: ``src`` and ``dst`` as tuples, when the caller has them)."""
        ks = self.keys.get(key)
        if ks is None:
            ks = self._key(key, scope, instance, src, dst)
        elif ks.last_t and t <= ks.last_t:
            return []  # scored before a restart, whose window state was not written yet: once only
        model = ks.model
        if places is None:
            places = ((src[0], src[1], src[2]), (dst[0], dst[1], dst[2]))
        if self.calm and type(model) is Baseline and not ks.alerts.open and not ks.hot_since:
            levels = model.calm(o, self.params.warmup, self._elevated)
            if levels is not None:  # scored and learned in one pass: nothing hot, nothing open, nothing to step
                self.health.append(_calm_health(t, places[0], places[1], instance, levels, top, ip))
                if t > ks.last_t:
                    ks.last_t = t
                self.dirty.add(key)
                self.open_keys.discard(key)
                return []
        verdicts = model.score(o)
        # the health of every scored key goes to attribution (pair keys: its fallback when reporters are too weak)
        self.health.append(_health(t, places[0], places[1], instance, verdicts, model.learned, self.params.warmup,
                                   self.params.z, top, ip))
        model.learn(o, verdicts)
        if t > ks.last_t:
            ks.last_t = t
        self.dirty.add(key)
        since = ks.hot_since
        flagged = False
        for m, v in verdicts.items():
            if v.flagged:
                flagged = True
                since.setdefault(m, t)
            elif v.hot:
                since.setdefault(m, t)
            elif since:
                since.pop(m, None)
        if not flagged and not ks.alerts.open:
            self.open_keys.discard(key)
            return []  # nothing open, nothing flagged: no alert changes (most keys, most intervals)
        changes = ks.alerts.step(t, verdicts, since, self.params.z, int(self.params.resolve_after), self.window_s)
        if ks.alerts.open:
            self.open_keys.add(key)
        else:
            self.open_keys.discard(key)
        return [self._event(ks, c) for c in changes]

    def take_health(self) -> list[KeyHealth]:
        """Health of the keys scored since the last call (``attribute.AttributionStage`` input; on the
        health topic as arrays of their fields, ``wire.records.encode_health``)."""
        out, self.health = self.health, []
        return out

    def sweep(self, t: int) -> list[AnomalyEvent]:
        """Resolve the open alerts of keys silent for ``silent_after`` intervals before ``t``."""
        out = []
        limit = t - int(self.params.silent_after) * self.interval_s
        for key in [k for k in self.open_keys if self.keys[k].last_t < limit]:
            ks = self.keys[key]
            out += [self._event(ks, c) for c in ks.alerts.silence(t)]
            self.open_keys.discard(key)
            self.dirty.add(key)
        return out

    def _event(self, ks: KeyState, c: AlertChange) -> AnomalyEvent:
        ident = f"{ks.scope}|{ks.instance}|{ks.src[0]}|{ks.dst[0]}|{c.metric}|{c.first_seen}"
        alert_id = hashlib.blake2b(ident.encode(), digest_size=8).hexdigest()
        (ss, sa, sv), (ds, da, dv) = ks.src, ks.dst
        return AnomalyEvent(alert_id, c.event, c.seq, ks.scope, ks.instance, (ss, sa, sv), (ds, da, dv), c.metric,
                            c.observed, c.expected, c.score, c.severity, c.first_seen, c.last_seen, c.at,
                            self.interval_s, c.at // self.window_s * self.window_s, c.reason)

    # --- persistence -------------------------------------------------------------------
    def take_dirty(self) -> dict[tuple[str, str, str], dict[str, Any] | None]:
        """The state of every key changed since the last call; ``None`` for a key forgotten (:meth:`expire`)."""
        return dict(self.iter_dirty())

    def iter_dirty(self) -> Iterator[tuple[tuple[str, str, str], dict[str, Any] | None]]:
        """:meth:`take_dirty` one key at a time: the keys are taken when the iteration starts, each state is
        built when it is reached (a batch that scored tens of thousands of keys does not hold all their
        states at once)."""
        dirty, expired = self.dirty, self.expired
        self.dirty, self.expired = set(), set()
        keys = self.keys
        for k in dirty:
            yield k, keys[k].state()
        for k in expired:
            if k not in keys:  # a key forgotten and back in the same batch: its new state is what counts
                yield k, None

    def load(self, key: Iterable[str], val: Mapping[str, Any]) -> None:
        k = tuple(key)
        ks = self.keys[k] = KeyState.from_state(val)  # type: ignore[index]
        ks.src, ks.dst = self._place(ks.src), self._place(ks.dst)
        if isinstance(ks.model, Baseline) and set(getattr(ks.model, "streak", ())) != set(METRICS):
            # learned by an older flowmon, on other metrics: learn again
            p = self.params
            ks.model = Baseline(p if isinstance(p, BaselineParams) else params_from(BaselineParams, params_dict(p)))
        if ks.alerts.open:
            self.open_keys.add(k)  # type: ignore[arg-type]
        if getattr(getattr(ks.model, "params", None), "score_p90", 0):
            self._p90 = True  # a model restored with parameters of its own that read the RTT p90

    def state_bytes(self) -> dict[str, float]:
        """Serialised state per key: mean and max bytes (the memory bound the README reports)."""
        import orjson
        sizes = [len(orjson.dumps(ks.state())) for ks in self.keys.values()]
        return {"keys": len(sizes), "mean": sum(sizes) / len(sizes) if sizes else 0.0, "max": max(sizes, default=0)}
