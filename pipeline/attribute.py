"""Attribution: is an anomaly the provider's network (infrastructure) or the user's own endpoint (workload)?

Pure, no Kafka. Fed, per agent interval, the *health* of every instance key the detectors
scored (``detect.Detection`` emits it: one entry per reporter and remote subnet, with
whether its loss metrics and its latency metrics were flagged), it correlates them across
the whole fleet and explains the degraded keys with the fewest, smallest elements.

Elements and the keys (reporter ``r`` in subnet ``Sr`` → remote subnet ``Sd``) that cross them:

====================  ============================================================
``instance`` X        ``r == X`` (its own keys), or ``Sd == subnet(X)`` (X may be the remote end)
``subnet`` N          ``Sr == N`` or ``Sd == N``
``az_pair`` {A, B}    one end in A and the other in B (``{A, A}``: inside zone A)
``az`` A              either end in A
``vpc`` V             either end in V
====================  ============================================================

The method, for each metric family (``retrans``: retransmission rate; ``timeouts``:
timeout rate; ``lat``: RTT mean and p90) and interval, separately:

1. ``D`` = the degraded keys (flagged, or *elevated*: a score of at least 60 % of the
   alert threshold above the baseline; correlation wants the weaker signals too),
   ``S`` = the keys that were scored (a key with no evidence for a family, e.g. too few
   segments sent for ``retrans``, is neither).
2. Every element crossed by a degraded key is a candidate. An *infrastructure* element
   qualifies when at least half the scored keys crossing it are degraded (**purity**
   ≥ 0.5) and at least ``min_reporters`` (3) distinct reporters are among them:
   many independent workloads degrade together, and those avoiding it do not (those
   lower its purity). An *instance* X qualifies when at least 60 % of its own scored keys
   are degraded, and at least ``min_exonerating`` (2) other reporters of its subnet
   are healthy towards every other subnet (the subnet, its zone and paths are
   exonerated; their keys towards X's own subnet may involve X, so they are not used).
3. Greedy cover: take the qualifying element that explains the most still-unexplained
   degraded keys; on a tie, the purest (to 0.1: the element whose *other* keys are
   healthy), then the smallest (instance < subnet < az_pair < az < vpc). Its keys get its verdict (instance → ``workload``, else
   ``infrastructure``); repeat until nothing qualifies. What is left is
   ``undetermined`` (e.g. one reporter on a path: the path and the host cannot be told
   apart).

Confidence = purity × (1 − 1/(1 + n)) with n the degraded reporters (infrastructure)
or the exonerating reporters (workload).

Examples
--------
Three reporters in az1 lose packets towards s2 (az2); their keys inside az1 are fine, so
are three others' towards az3, and so are the keys of four az3 reporters towards s2:
the path az1-az2 is at fault, not subnet s2.

>>> a = Attributor()
>>> def key(r, sr, ar, sd, ad, loss):
...     return {"r": r, "src": [sr, ar, "v"], "dst": [sd, ad, "v"], "retrans": loss, "timeouts": 0, "lat": 0}
>>> health = [key(f"s1/{i}", "s1", "az1", "s2", "az2", 1) for i in range(3)]
>>> health += [key(f"s1/{i}", "s1", "az1", "s1", "az1", 0) for i in range(3)]
>>> health += [key(f"s1/{i}", "s1", "az1", "s3", "az3", 0) for i in range(3, 6)]
>>> health += [key(f"s3/{i}", "s3", "az3", "s2", "az2", 0) for i in range(4)]
>>> v = a.attribute(0, health)
>>> sorted({(x.cause, x.element) for x in v.values()})
[('infrastructure', ('az_pair', 'az1|az2'))]
>>> x = v[("retrans", "s1/0", "s2")]
>>> x.evidence["reporters_degraded"], x.evidence["reporters_crossing"], round(x.confidence, 2)
(3, 3, 0.75)

Were s2 itself slow, the az3 reporters would suffer too and ``subnet s2`` would win.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Attributor", "AttributionStage", "Verdict", "FAMILIES", "ELEMENT_RANK", "family_of"]

FAMILIES = ("retrans", "timeouts", "lat")
_FAMILY_OF = {"retrans_rate": "retrans", "timeout_rate": "timeouts", "rtt_p50": "lat", "rtt_mean": "lat", "rtt_p90": "lat"}
ELEMENT_RANK = {"instance": 0, "subnet": 1, "az_pair": 2, "az": 3, "vpc": 4}


def family_of(metric: str) -> str:
    """``loss`` or ``lat`` (latency) for a detection metric.

    >>> family_of("timeout_rate"), family_of("rtt_p90")
    ('timeouts', 'lat')
    """
    return _FAMILY_OF[metric]


@dataclass(slots=True)
class Verdict:
    cause: str  # infrastructure | workload | undetermined
    element: tuple[str, str] | None  # (kind, id); az_pair ids are 'A|B' sorted
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "element_kind": self.element[0] if self.element else None,
                "element": self.element[1] if self.element else None, "confidence": round(self.confidence, 4),
                **self.evidence}


Key = tuple[str, str]  # (reporter, remote subnet)


def _elements(k: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Infrastructure elements a key crosses."""
    (ss, sa, sv), (ds, da, dv) = k["src"], k["dst"]
    out = [("subnet", ss), ("az", sa), ("vpc", sv), ("az_pair", "|".join(sorted((sa, da))))]
    if ds != ss:
        out.append(("subnet", ds))
    if da != sa:
        out.append(("az", da))
    if dv != sv:
        out.append(("vpc", dv))
    return out


class Attributor:
    """Fleet-wide attribution of one interval's degraded keys. Stateless between intervals.

    Parameters
    ----------
    min_reporters
        Distinct degraded reporters an infrastructure verdict needs.
    min_exonerating
        Healthy other reporters of its subnet a workload verdict needs.
    min_purity
        Fraction of an infrastructure element's scored keys that must be degraded.
    min_own
        Fraction of an instance's own scored keys that must be degraded (a workload verdict).
    max_listed
        Reporters listed by name in the evidence (the counts are always complete).
    """

    def __init__(self, min_reporters: int = 3, min_exonerating: int = 2, min_purity: float = 0.5,
                 min_own: float = 0.6, max_listed: int = 10) -> None:
        self.min_own = min_own
        self.min_reporters = min_reporters
        self.min_exonerating = min_exonerating
        self.min_purity = min_purity
        self.max_listed = max_listed

    def attribute(self, t: int, health: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Verdict]:
        """Verdicts for the degraded keys of interval ``t``: ``{(family, reporter, remote subnet): Verdict}``."""
        return self._all(health, pairs=False)

    def attribute_pairs(self, t: int, health: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Verdict]:
        """The same method on the *pair* keys only (``{(family, "src>dst", dst): Verdict}``), infrastructure
        elements only: the fallback for a pair alert none of whose reporters' keys could be attributed
        (each reporter's signal too weak on its own, e.g. a slow degradation). A pair key stands for
        all its reporters, so ``min_reporters`` pair keys are asked for."""
        return self._all(health, pairs=True)

    def _all(self, health: Iterable[Mapping[str, Any]], pairs: bool) -> dict[tuple[str, str, str], Verdict]:
        entries = [e for e in health if bool(e.get("pair")) == pairs]
        out: dict[tuple[str, str, str], Verdict] = {}
        for fam in FAMILIES:
            scored = [e for e in entries if e.get(fam) is not None]
            degraded = [e for e in scored if e[fam]]
            if degraded:
                for (r, sd), v in self._family(fam, scored, degraded, instances=not pairs).items():
                    out[(fam, r, sd)] = v
        return out

    def _family(self, fam: str, scored: list[Mapping[str, Any]], degraded: list[Mapping[str, Any]],
                instances: bool = True) -> dict[Key, Verdict]:
        subnet_of = {e["r"]: e["src"][0] for e in scored}
        # infrastructure elements: scored / degraded keys and reporters crossing them
        cross: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for e in scored:
            for el in _elements(e):
                cross[el].append(e)
        # instances: own keys, and keys towards their subnet
        own: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        towards: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for e in scored:
            own[e["r"]].append(e)
            towards[e["dst"][0]].append(e)
        # exonerating a subnet: reporters in it whose keys towards *other* subnets are all healthy
        # (a fault of the subnet itself would show there; keys towards the subnet may cross the
        # suspect instance, so they do not count either way)
        outward: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for e in scored:
            if e["dst"][0] != e["src"][0]:
                outward[e["r"]].append(e)
        healthy_reporters_in: dict[str, set[str]] = defaultdict(set)
        for r, ks in outward.items():
            if not any(k[fam] for k in ks):
                healthy_reporters_in[subnet_of[r]].add(r)

        candidates: list[tuple[tuple[str, str], set[Key], float, dict[str, Any]]] = []
        seen: set[tuple[str, str]] = set()
        for e in degraded:
            for el in _elements(e) + ([("instance", e["r"])] if instances else []):
                if el in seen:
                    continue
                seen.add(el)
                if el[0] == "instance":
                    x = el[1]
                    mine = own[x]
                    bad = [k for k in mine if k[fam]]
                    purity = len(bad) / len(mine)
                    exon = sorted(healthy_reporters_in[subnet_of[x]] - {x})
                    if not bad or purity < self.min_own or len(exon) < self.min_exonerating:
                        continue
                    keys = {(k["r"], k["dst"][0]) for k in bad}
                    keys |= {(k["r"], k["dst"][0]) for k in towards[subnet_of[x]] if k[fam]}
                    conf = purity * (1 - 1 / (1 + len(exon)))
                    ev = {"purity": purity, "reporters_crossing": 1, "reporters_degraded": 1, "degraded": [x],
                          "keys_scored": len(mine), "keys_degraded": len(bad),
                          "exonerating": len(exon), "exonerating_reporters": exon[: self.max_listed]}
                    candidates.append((el, keys, conf, ev))
                else:
                    ks = cross[el]
                    bad = [k for k in ks if k[fam]]
                    purity = len(bad) / len(ks)
                    rep_bad = sorted({k["r"] for k in bad})
                    if purity < self.min_purity or len(rep_bad) < self.min_reporters:
                        continue
                    rep_all = {k["r"] for k in ks}
                    conf = purity * (1 - 1 / (1 + len(rep_bad)))
                    ev = {"purity": purity, "reporters_crossing": len(rep_all), "reporters_degraded": len(rep_bad),
                          "degraded": rep_bad[: self.max_listed], "keys_scored": len(ks), "keys_degraded": len(bad),
                          "exonerating": len(rep_all) - len(rep_bad), "exonerating_reporters": []}
                    candidates.append((el, {(k["r"], k["dst"][0]) for k in bad}, conf, ev))

        verdicts: dict[Key, Verdict] = {}
        left = {(e["r"], e["dst"][0]) for e in degraded}
        while left and candidates:
            best = max(candidates, key=lambda c: (len(c[1] & left), round(c[3]["purity"], 1), -ELEMENT_RANK[c[0][0]],
                                                  c[2], c[0]))
            gain = best[1] & left
            if not gain:
                break
            el, _, conf, ev = best
            cause = "workload" if el[0] == "instance" else "infrastructure"
            for k in gain:
                verdicts[k] = Verdict(cause, el, conf, ev)
            left -= gain
            candidates.remove(best)
        for k in left:
            reporters = {k[0]}
            verdicts[k] = Verdict("undetermined", None, 0.0, {
                "purity": 0.0, "reporters_crossing": len({e["r"] for e in scored if e["dst"][0] == k[1]}),
                "reporters_degraded": len(reporters), "degraded": sorted(reporters), "keys_scored": 0,
                "keys_degraded": 1, "exonerating": 0, "exonerating_reporters": []})
        return verdicts


# ------------------------------------------------------------------------------------
# the stage: health of every partition in, verdicts per alert and NHI changes out
# ------------------------------------------------------------------------------------
class AttributionStage:
    """Collects the per-interval health from every pairs partition; attributes an interval once
    every partition has passed it.

    Input messages (topic ``flow-health-v1``; one per pairs partition and batch)::

        {"p": partition, "upto": t_max, "health": [...], "opened": [alert events]}

    ``upto``: the partition has handed over every interval starting at or before it. The
    health entries and the ``opened`` alert events of interval ``t`` wait until every one
    of the ``partitions`` has ``upto >= t``; then ``Attributor`` decides them all at once
    (fleet-wide), each opened alert gets a verdict record, and ``nhi.NetworkHealth`` is
    updated. No interval waits for more than the slowest partition's next batch.
    """

    def __init__(self, partitions: int, interval_s: int = 30, attributor: Attributor | None = None,
                 recover_after: int = 4) -> None:
        from .nhi import NetworkHealth

        self.partitions = partitions
        self.attributor = attributor or Attributor()
        self.nhi = NetworkHealth(interval_s, recover_after)
        self.upto: dict[int, int] = {}
        # by interval; keyed so that a replayed message (at-least-once) counts once
        self.pending: dict[int, dict[tuple, dict[str, Any]]] = defaultdict(dict)
        self.opened: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.first_offset: dict[int, int] = {}  # interval -> earliest input offset holding it
        self.done_upto = -1  # every interval up to here is attributed

    def apply(self, msg: Mapping[str, Any], now: float = 0.0,
              offset: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One message in; (attribution records, NHI records) out. ``offset``: its position in the
        input topic (for :meth:`replay_from`)."""
        for h in msg.get("health", ()):
            t = h["t"]
            if t > self.done_upto:
                self.pending[t][(h["r"], h["dst"][0], bool(h.get("pair")))] = h
                if offset is not None:
                    self.first_offset.setdefault(t, offset)
        for e in msg.get("opened", ()):
            t = e["at"]
            if t > self.done_upto:
                self.opened[t][e["alert_id"]] = e
                if offset is not None:
                    self.first_offset.setdefault(t, offset)
        p, up = int(msg["p"]), msg.get("upto")
        if up is not None and up > self.upto.get(p, -1):
            self.upto[p] = up
        if len(self.upto) < self.partitions:
            return [], []
        ready = min(self.upto.values())
        return self._flush(ready, now)

    def finish(self, now: float = 0.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Attribute everything pending (end of a finite run) and close the NHI periods."""
        ts = list(self.pending) + list(self.opened)
        recs, nhi = self._flush(max(ts) if ts else -1, now)
        return recs, nhi + self.nhi.close_all(now)

    def _flush(self, ready: int, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        recs: list[dict[str, Any]] = []
        nhi: list[dict[str, Any]] = []
        for t in sorted(set(self.pending) | set(self.opened)):
            if t > ready:
                break
            health = list(self.pending.pop(t, {}).values())
            self.first_offset.pop(t, None)
            verdicts = self.attributor.attribute(t, health)
            pair_verdicts: dict[tuple[str, str, str], Verdict] | None = None
            subnet_az = {h["src"][0]: h["src"][1] for h in health}
            subnet_az.update({h["dst"][0]: h["dst"][1] for h in health})
            src_of = {h["r"]: h["src"][0] for h in health}
            for e in self.opened.pop(t, {}).values():
                rec = self._record(e, verdicts, src_of, now)
                if rec["cause"] == "undetermined" and e["scope"] == "pair":
                    if pair_verdicts is None:
                        pair_verdicts = self.attributor.attribute_pairs(t, health)
                    v = pair_verdicts.get((rec["family"], f"{e['src_subnet']}>{e['dst_subnet']}", e["dst_subnet"]))
                    if v is not None and v.cause == "infrastructure":
                        rec.update(v.as_dict(), evidence_level="pair")
                recs.append(rec)
            blamed = {v.element for v in verdicts.values() if v.cause == "infrastructure" and v.element}
            nhi += self.nhi.update(t, blamed, subnet_az, now)
            self.done_upto = t
        return recs, nhi

    # --- restart ------------------------------------------------------------------------
    def replay_from(self) -> int | None:
        """The earliest input offset still needed (intervals pending): a restart reads from there."""
        return min(self.first_offset.values(), default=None)

    def state(self) -> dict[str, Any]:
        return {"done_upto": self.done_upto, "upto": self.upto, "nhi": self.nhi.state()}

    def load(self, s: Mapping[str, Any]) -> None:
        self.done_upto = s["done_upto"]
        self.upto = {int(k): v for k, v in s["upto"].items()}
        self.nhi.load(s["nhi"])

    @staticmethod
    def _record(e: Mapping[str, Any], verdicts: Mapping[tuple[str, str, str], Verdict], src_of: Mapping[str, str],
                now: float) -> dict[str, Any]:
        fam = family_of(e["metric"])
        if e["scope"] == "instance":
            vs = [verdicts[k]] if (k := (fam, e["instance"], e["dst_subnet"])) in verdicts else []
        else:  # a pair alert: what its reporters' keys were attributed to
            vs = [v for (f, r, d), v in sorted(verdicts.items())
                  if f == fam and d == e["dst_subnet"] and src_of.get(r) == e["src_subnet"]]
        v = _majority(vs)
        return {"version": 1, "alert_id": e["alert_id"], "at": e["at"], "scope": e["scope"],
                "instance": e["instance"], "src_subnet": e["src_subnet"], "dst_subnet": e["dst_subnet"],
                "metric": e["metric"], "family": fam, **v.as_dict(), "keys_attributed": len(vs),
                "evidence_level": "instance", "attributed_at": now}


def _majority(vs: list[Verdict]) -> Verdict:
    """The verdict most keys got (ties: infrastructure, then workload); undetermined if none."""
    if not vs:
        return Verdict("undetermined", None, 0.0, {"purity": 0.0, "reporters_crossing": 0, "reporters_degraded": 0,
                                                   "degraded": [], "keys_scored": 0, "keys_degraded": 0,
                                                   "exonerating": 0, "exonerating_reporters": []})
    by: dict[tuple[str, Any], list[Verdict]] = defaultdict(list)
    for v in vs:
        by[(v.cause, v.element)].append(v)
    order = {"infrastructure": 0, "workload": 1, "undetermined": 2}
    (cause, el), group = min(by.items(), key=lambda kv: (-len(kv[1]), order[kv[0][0]], str(kv[0][1])))
    return group[0]
