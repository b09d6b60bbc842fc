"""Attribution: is an anomaly the provider's network (infrastructure) or the user's own endpoint (workload)?

Pure, no Kafka. Fed, per agent interval, the *health* of every instance key the detectors
scored (``detect.Detection`` emits it: one entry per reporter and remote subnet, with
whether its loss metrics and its latency metrics were degraded), it correlates them across
the whole fleet and explains the degraded keys with the fewest, smallest elements.

A health entry (``wire.events.KeyHealth``, or its wire dict): ``{"t", "r", "src": [subnet,
az, vpc], "dst": [...], "retrans", "timeouts", "lat"}`` with per family 1 (degraded), 0
(scored, healthy) or None (no evidence), and
optionally ``"weak": [families]`` (degraded only by being *elevated*, no metric flagged;
absent: every degraded family counts as flagged), ``"top": {family: IP or None}`` (the
remote endpoint that contributed most to the key's degradation) and ``"ip"`` (the
reporter's own address). Absent optional fields mean "unknown" and the method falls back
to what the rest tells.

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

1. ``D`` = the degraded keys: *flagged* (strong) or *elevated* (weak: a score of at least
   60 % of the alert threshold above the baseline; correlation wants the weaker signals
   too); ``S`` = the keys that were scored (a key with no evidence for a family, e.g. too
   few segments sent for ``retrans``, is neither). ``E`` = the keys already explained by
   the elements chosen so far (empty at first): every rule below looks only at keys not in
   ``E`` — an explained key neither accuses nor exonerates any more.
2. Every element crossed by a degraded key is a candidate, and every instance that reports
   a degraded key or is named as the ``top`` remote of one (by its instance id when some
   entry's ``"ip"`` is that address, else by the address). An *infrastructure* element
   qualifies when at least half its scored keys are degraded (**purity** ≥ 0.5), at least
   ``min_reporters`` (3) distinct reporters are among them, at least ``min_flagged`` (2)
   of those are *flagged* on a key crossing it (elevated keys alone never blame the
   network), and no single instance is an endpoint of every one of its degraded keys (its
   reporter's ``ip`` or the key's ``top``: one remote instance is not infrastructure) unless
   that instance is *cleared*: at least ``min_exonerating`` other reporters name it on healthy
   keys (any family's ``top``, e.g. the highest-RTT remote), i.e. talk to it unharmed.
   An *instance* X qualifies

   * by its **own** keys: at least ``min_own`` (60 %) of them degraded, and at least
     ``min_exonerating`` (2) other reporters of its subnet *clear* — none of their keys
     towards other subnets flagged, at least one healthy (an elevated key does not stop a
     neighbour from exonerating; their keys towards X's own subnet may involve X, so they
     are not used); or
   * as a **remote**: at least ``min_pointing`` (2) reporters name its IP as ``top`` of a
     degraded key, and at least ``min_exonerating`` other reporters talk to its subnet
     without degradation (healthy keys, or elevated ones naming another remote), and it is
     not cleared (others talking to *it* unharmed: its clients' loss is their path's).

   It explains its own degraded keys, the keys naming it, and (by its own keys) the
   degraded keys towards its subnet that do not name another remote.
3. Greedy cover: take the qualifying element with the highest **explained keys × purity**
   (a large element hit in part — a VPC with one faulty subnet — loses to the pure one
   inside it); on a tie the smallest (instance < subnet < az_pair < az < vpc). Its keys
   get its verdict (instance → ``workload``, else ``infrastructure``) and join ``E``;
   the candidates they touch are evaluated again (**explaining away**: a host whose
   neighbours were degraded only towards a subnet now blamed is exonerated by them), and
   so on until nothing qualifies. What is left is ``undetermined`` (e.g. one reporter on a
   path: the path and the host cannot be told apart).

Confidence = purity × (1 − 1/(1 + n)) with n the degraded reporters (infrastructure)
or the exonerating reporters (workload). A :class:`Finding`'s ``detail`` (in-process, not in the
record) says which rule, how many reporters were flagged, which elements were chosen
before it, and the remote IP. ``AttributionStage`` lets an infrastructure verdict move NHI
only when at least ``nhi_min_flagged`` (default ``min_reporters``) of its reporters were
flagged on keys it explains.

Examples
--------
Three reporters in az1 lose packets towards s2 (az2); their keys inside az1 are fine, so
are three others' towards az3, and so are the keys of four az3 reporters towards s2:
the path az1-az2 is at fault, not subnet s2.

>>> a = Attributor()
>>> def key(r, sr, ar, sd, ad, loss):
...     return {"t": 0, "r": r, "src": [sr, ar, "v"], "dst": [sd, ad, "v"], "retrans": loss, "timeouts": 0, "lat": 0}
>>> health = [key(f"s1/{i}", "s1", "az1", "s2", "az2", 1) for i in range(3)]
>>> health += [key(f"s1/{i}", "s1", "az1", "s1", "az1", 0) for i in range(3)]
>>> health += [key(f"s1/{i}", "s1", "az1", "s3", "az3", 0) for i in range(3, 6)]
>>> health += [key(f"s3/{i}", "s3", "az3", "s2", "az2", 0) for i in range(4)]
>>> v = a.attribute(0, health)
>>> sorted({(x.cause, x.element) for x in v.values()})
[('infrastructure', ('az_pair', 'az1|az2'))]
>>> x = v[("retrans", "s1/0", "s2")]
>>> x.evidence.reporters_degraded, x.evidence.reporters_crossing, round(x.confidence, 2)
(3, 3, 0.75)

Were s2 itself slow, the az3 reporters would suffer too and ``subnet s2`` would win.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.attribute.nhi import NetworkHealth
from pipeline.wire.events import (FAMILIES, AnomalyEvent, Attribution, Evidence, HealthBatch, KeyHealth, NhiPeriod,
                                  Place, family_of, new_key_health, pair_key)

__all__ = ["Attributor", "AttributionStage", "Finding", "FAMILIES", "ELEMENT_RANK", "family_of"]

ELEMENT_RANK = {"instance": 0, "subnet": 1, "az_pair": 2, "az": 3, "vpc": 4}

Element = tuple[str, str]  # (kind, id); az_pair ids are 'A|B' sorted
Key = tuple[str, str]  # (reporter, remote subnet)


@dataclass(frozen=True, slots=True)
class Finding:
    """What correlation concluded about one degraded key (or, by majority, about an alert)."""

    cause: str  # infrastructure | workload | undetermined
    element: Element | None
    confidence: float
    evidence: Evidence = Evidence()  # the record's fields (flow_attribution.v1)
    #: in-process only (not in the record): ``rule`` (infrastructure | own | remote | own+remote),
    #: ``reporters_flagged``, ``keys_explained_away``, ``after`` (elements chosen before), ``remote_ip``,
    #: ``keys_pointing``
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def element_kind(self) -> str | None:
        return self.element[0] if self.element else None

    @property
    def element_id(self) -> str | None:
        return self.element[1] if self.element else None


def _as_health(h: KeyHealth | Mapping[str, Any]) -> KeyHealth:
    return h if isinstance(h, KeyHealth) else KeyHealth.from_wire(h)


def _elements(src: tuple[str, str, str], dst: tuple[str, str, str]) -> list[Element]:
    """Infrastructure elements a key crosses."""
    (ss, sa, sv), (ds, da, dv) = src, dst
    out = [("subnet", ss), ("az", sa), ("vpc", sv), ("az_pair", "|".join(sorted((sa, da))))]
    if ds != ss:
        out.append(("subnet", ds))
    if da != sa:
        out.append(("az", da))
    if dv != sv:
        out.append(("vpc", dv))
    return out


@dataclass(slots=True, eq=False)
class _K:
    """One scored key of one family."""

    id: Key
    r: str  # reporter
    sr: str  # reporter's subnet
    sd: str  # remote subnet
    bad: bool  # degraded (flagged or elevated)
    strong: bool  # flagged (not merely elevated)
    top: str | None  # remote IP that contributed most to the degradation (None: unknown, or healthy)
    me: str | None  # the reporter's own IP (None: unknown)
    els: list[Element]  # infrastructure elements crossed
    talks: tuple[str, ...] = ()  # a healthy key: the remotes it names (any family's top), talked to unharmed


@dataclass(slots=True)
class _Cand:
    el: Element
    keys: set[Key]  # the not yet explained degraded keys it would explain
    purity: float
    conf: float
    ev: Evidence
    detail: dict[str, Any]

    def rank(self) -> tuple:
        # explained keys weighted by purity (= gain^2 / scored for an infrastructure element): a
        # large element hit partly (a VPC with one faulty subnet in it) loses to the pure one
        return (len(self.keys) * self.purity, -ELEMENT_RANK[self.el[0]], self.conf, self.el)


def _one_remote(bad: list[_K]) -> str | None:
    """The IP that is an endpoint of every key in ``bad`` (its reporter, or its top remote), if any."""
    common: set[str] | None = None
    for k in bad:
        ends = {x for x in (k.top, k.me) if x}
        common = ends if common is None else common & ends
        if not common:
            return None
    return min(common) if common else None


class Attributor:
    """Fleet-wide attribution of one interval's degraded keys. Stateless between intervals.

    Parameters
    ----------
    min_reporters
        Distinct degraded reporters an infrastructure verdict needs.
    min_flagged
        How many of them must be *flagged* (not merely elevated) on some key crossing it
        (``attribute_pairs``: at least one flagged pair key).
    min_exonerating
        Healthy other reporters a workload verdict needs (subnet-mates, or reporters talking
        to the instance's subnet).
    min_pointing
        Distinct reporters whose keys name an instance as their top remote before it is a
        workload candidate as a remote end.
    min_purity
        Fraction of an infrastructure element's scored keys that must be degraded.
    min_own
        Fraction of an instance's own scored keys that must be degraded (a workload verdict).
    max_listed
        Reporters listed by name in the evidence (the counts are always complete).
    """

    def __init__(self, min_reporters: int = 3, min_exonerating: int = 2, min_purity: float = 0.5,
                 min_own: float = 0.6, max_listed: int = 10, min_flagged: int = 2, min_pointing: int = 2) -> None:
        self.min_own = min_own
        self.min_reporters = min_reporters
        self.min_flagged = min_flagged
        self.min_exonerating = min_exonerating
        self.min_pointing = min_pointing
        self.min_purity = min_purity
        self.max_listed = max_listed

    def attribute(self, t: int, health: Iterable[KeyHealth | Mapping[str, Any]],
                  blame: int | None = None) -> dict[tuple[str, str, str], Finding]:
        """Findings for the degraded keys of interval ``t``: ``{(family, reporter, remote subnet): Finding}``.

        ``blame``: only infrastructure findings that at least ``blame`` flagged reporters support are wanted
        (what moves NHI, when no alert opened in the interval): a family whose degraded keys cannot make one
        (fewer than ``min_reporters`` degraded reporters, or fewer flagged ones than ``blame`` and
        ``min_flagged``) is not attributed, and none of its keys is in the result. In a healthy fleet most
        intervals have a few merely degraded keys and no alert: the method's cover is skipped for them.
        """
        return self._all(health, pairs=False, blame=blame)

    def attribute_pairs(self, t: int,
                        health: Iterable[KeyHealth | Mapping[str, Any]]) -> dict[tuple[str, str, str], Finding]:
        """The same method on the *pair* keys only (``{(family, "src>dst", dst): Finding}``), infrastructure
        elements only: the fallback for a pair alert none of whose reporters' keys could be attributed
        (each reporter's signal too weak on its own, e.g. a slow degradation). A pair key stands for
        all its reporters, so ``min_reporters`` pair keys are asked for, one of them flagged."""
        return self._all(health, pairs=True)

    def _all(self, health: Iterable[KeyHealth | Mapping[str, Any]],
             pairs: bool, blame: int | None = None) -> dict[tuple[str, str, str], Finding]:
        health = list(map(_as_health, health))
        families = FAMILIES
        if blame is not None:
            families = tuple(fam for fam in FAMILIES if self._can_blame(health, fam, max(blame, self.min_flagged)))
            if not families:
                return {}
        entries = [(e, e.key) for e in health if (e.reporter is None) == pairs]
        inst_of_ip = {} if pairs else {e.ip: r for e, r in entries if e.ip}
        out: dict[tuple[str, str, str], Finding] = {}
        crossed: dict[tuple[Place, Place], list[Element]] = {}  # per placement pair (a fleet has few), for every family
        for fam in families:
            if not any(getattr(e, fam) for e, _ in entries):  # KeyHealth's fields are named by family
                continue
            keys: dict[Key, _K] = {}
            for e, r in entries:
                v = getattr(e, fam)
                if v is None:
                    continue
                bad = bool(v)
                top = e.top_of(fam) if bad else None
                els = crossed.get(pl := (e.src, e.dst))
                if els is None:
                    els = crossed[pl] = _elements(e.src, e.dst)
                talks = () if bad or e.top is None else tuple(x for x in e.top if x)
                k = _K((r, e.dst[0]), r, e.src[0], e.dst[0], bad, bad and fam not in e.weak, top or None,
                       e.ip or None, els, talks)
                keys[k.id] = k
            for (r, sd), v in _Cover(self, list(keys.values()), inst_of_ip, instances=not pairs).run().items():
                out[(fam, r, sd)] = v
        return out

    def _can_blame(self, health: list[KeyHealth], fam: str, flagged: int) -> bool:
        """Whether the reporters' keys of ``fam`` could make an infrastructure finding with ``flagged`` flagged
        reporters: :meth:`_Cover.infra` counts the degraded and the flagged reporters of the keys crossing
        one element, a subset of these."""
        bad: set[str] = set()
        strong: set[str] = set()
        for e in health:
            r = e.reporter
            if r is not None and getattr(e, fam):
                bad.add(r)
                if fam not in e.weak:
                    strong.add(r)
        return len(bad) >= self.min_reporters and len(strong) >= flagged


class _Cover:
    """The method on one family's scored keys: candidates, rules, greedy cover with explaining away."""

    def __init__(self, a: Attributor, scored: list[_K], inst_of_ip: Mapping[str, str], instances: bool) -> None:
        self.a = a
        self.instances = instances
        self.inst_of_ip = inst_of_ip
        self.subnet_of = {k.r: k.sr for k in scored}
        self.ip_of = {r: ip for ip, r in inst_of_ip.items()}
        self.cross: dict[Element, list[_K]] = defaultdict(list)
        self.own: dict[str, list[_K]] = defaultdict(list)
        self.towards: dict[str, list[_K]] = defaultdict(list)
        self.outward: dict[str, list[_K]] = defaultdict(list)  # keys towards *other* subnets
        self.members: dict[str, set[str]] = defaultdict(set)
        self.pointing: dict[str, list[_K]] = defaultdict(list)  # degraded keys naming an IP as their top remote
        self.unharmed: dict[str, set[str]] = defaultdict(set)  # an IP -> reporters of healthy keys naming it
        for k in scored:
            for el in k.els:
                self.cross[el].append(k)
            self.own[k.r].append(k)
            self.towards[k.sd].append(k)
            self.members[k.sr].add(k.r)
            if k.sd != k.sr:
                self.outward[k.r].append(k)
            if k.top:
                self.pointing[k.top].append(k)
            for ip in k.talks:
                if ip != k.me:
                    self.unharmed[ip].add(k.r)
        # an instance known only by its IP (no health entry of its own): its subnet is where it is pointed at
        self.ip_subnet: dict[str, str] = {}
        for ip, ks in self.pointing.items():
            by: dict[str, int] = defaultdict(int)
            for k in ks:
                by[k.sd] += 1
            self.ip_subnet[ip] = min(by, key=lambda s: (-by[s], s))
        self.degraded = [k for k in scored if k.bad]
        self.explained: set[Key] = set()
        self.min_flagged = 1 if not instances else a.min_flagged
        self.clear_memo: dict[str, bool] = {}
        self.clear_subnet: dict[str, list[str]] = {}

    # --- the rules ---------------------------------------------------------------------------
    def infra(self, el: Element) -> _Cand | None:
        """An infrastructure element: pure enough, enough reporters (flagged ones), not one remote instance."""
        a = self.a
        ks = [k for k in self.cross[el] if k.id not in self.explained]
        bad = [k for k in ks if k.bad]
        if not bad:
            return None
        purity = len(bad) / len(ks)
        rep_bad = sorted({k.r for k in bad})
        flagged = {k.r for k in bad if k.strong}
        if purity < a.min_purity or len(rep_bad) < a.min_reporters or len(flagged) < self.min_flagged:
            return None
        one = _one_remote(bad)
        if one is not None and not self.cleared(one, rep_bad):
            return None  # one instance is an endpoint of every degraded key, and nobody talks to it unharmed
        rep_all = {k.r for k in ks}
        conf = purity * (1 - 1 / (1 + len(rep_bad)))
        ev = Evidence(purity, len(rep_all), len(rep_bad), tuple(rep_bad[: a.max_listed]), len(ks), len(bad),
                      len(rep_all) - len(rep_bad), ())
        detail = {"rule": "infrastructure", "reporters_flagged": len(flagged),
                  "keys_explained_away": len(self.cross[el]) - len(ks)}
        return _Cand(el, {k.id for k in bad}, purity, conf, ev, detail)

    def cleared(self, ip: str, besides: Iterable[str]) -> bool:
        """At least ``min_exonerating`` reporters other than ``besides`` (and than the instance itself)
        name ``ip`` on a healthy key: they talk to that instance unharmed, so it is not what loses."""
        return len(self.unharmed.get(ip, set()) - set(besides) - {self.inst_of_ip.get(ip)}) >= self.a.min_exonerating

    def clear(self, r: str) -> bool:
        """Reporter ``r`` is healthy towards every other subnet: none of its keys there still unexplained
        is flagged (merely elevated ones do not count against it), and at least one is healthy."""
        c = self.clear_memo.get(r)
        if c is None:
            ks = [k for k in self.outward.get(r, ()) if k.id not in self.explained]
            c = self.clear_memo[r] = any(not k.bad for k in ks) and not any(k.strong for k in ks)
        return c

    def clear_in(self, sx: str) -> list[str]:
        c = self.clear_subnet.get(sx)
        if c is None:
            c = self.clear_subnet[sx] = sorted(r for r in self.members[sx] if self.clear(r))
        return c

    def instance(self, el: Element) -> _Cand | None:
        """An instance: by its own keys (subnet-mates exonerate its paths), or as a remote many name."""
        a, x = self.a, el[1]
        reporter = x in self.subnet_of  # it has keys of this family (else: known by its address, or silent here)
        ip = self.ip_of.get(x) if reporter or x in self.ip_of else x
        sx = self.subnet_of.get(x) or (self.ip_subnet.get(ip) if ip else None)
        if sx is None:
            return None
        mine = [k for k in self.own.get(x, ()) if k.id not in self.explained]
        bad = [k for k in mine if k.bad]
        own_p = len(bad) / len(mine) if mine else 0.0
        own_ok = bool(bad) and own_p >= a.min_own
        pts = [k for k in self.pointing.get(ip, ()) if k.id not in self.explained and k.r != x] if ip else []
        pt_reps = {k.r for k in pts}
        if not own_ok and len(pt_reps) < a.min_pointing:
            return None
        # rule 1 (own): its own keys degraded, and subnet-mates healthy towards every other subnet
        mates = [r for r in self.clear_in(sx) if r != x] if reporter else []
        by_own = own_ok and len(mates) >= a.min_exonerating
        # rule 2 (remote): reporters name it as their top remote, while others talk to its subnet unharmed
        others: list[str] = []
        if len(pt_reps) >= a.min_pointing:
            others = sorted({k.r for k in self.towards[sx] if k.id not in self.explained and k.r != x
                             and k.r not in pt_reps and (not k.bad or (not k.strong and k.top and k.top != ip))})
        # ... unless others talk to it, not just to its subnet, unharmed: then the path to it is what loses
        by_remote = (len(pt_reps) >= a.min_pointing and len(others) >= a.min_exonerating
                     and not self.cleared(ip, pt_reps))
        if not (by_own or by_remote):
            return None
        keys = {k.id for k in bad} if own_ok or by_remote else set()
        keys |= {k.id for k in pts}
        if by_own:  # keys towards its subnet may be about it, unless they name another remote
            keys |= {k.id for k in self.towards[sx] if k.bad and k.r != x and k.id not in self.explained
                     and (k.top is None or ip is None or k.top == ip)}
        if not keys:
            return None
        if not ({k.r for k in bad if k.strong} | {k.r for k in pts if k.strong}):
            return None  # weak (elevated) keys alone blame nobody: no more a workload than an infrastructure
        known = [k for k in self.towards[sx] if k.bad and k.top and k.id not in self.explained]
        concentration = len(pts) / len(known) if known else 0.0
        purity = max(own_p if by_own else 0.0, concentration if by_remote else 0.0)
        exon = sorted(set(mates if by_own else []) | set(others if by_remote else []))
        conf = purity * (1 - 1 / (1 + len(exon)))
        if by_own or mine:
            n_rep, listed, ks, kb = 1, [x], len(mine), len(bad)
        else:
            n_rep, listed, ks, kb = len(pt_reps), sorted(pt_reps), len(known), len(pts)
        ev = Evidence(purity, n_rep, n_rep, tuple(listed[: a.max_listed]), ks, kb, len(exon),
                      tuple(exon[: a.max_listed]))
        detail = {"rule": "+".join(r for r, on in (("own", by_own), ("remote", by_remote)) if on),
                  "remote_ip": ip, "keys_pointing": len(pts), "reporters_pointing": len(pt_reps),
                  "reporters_flagged": len({k.r for k in bad if k.strong} | {k.r for k in pts if k.strong}),
                  "keys_explained_away": len(self.own.get(x, ())) - len(mine)}
        return _Cand(el, keys, purity, conf, ev, detail)

    def evaluate(self, el: Element) -> _Cand | None:
        return self.instance(el) if el[0] == "instance" else self.infra(el)

    # --- the cover ---------------------------------------------------------------------------
    def candidates(self) -> set[Element]:
        """Every element a degraded key crosses; instances: its reporter, and its top remote (by instance
        id when some entry carries that IP, else by the IP)."""
        cands: set[Element] = set()
        for k in self.degraded:
            cands.update(k.els)
            if self.instances:
                cands.add(("instance", k.r))
                if k.top:
                    cands.add(("instance", self.inst_of_ip.get(k.top, k.top)))
        return cands

    def run(self) -> dict[Key, Finding]:
        """Greedy cover: the best qualifying candidate explains its keys; what they touched is evaluated
        again (explaining away); what no candidate explains is undetermined."""
        cands = self.candidates()
        subnet_of_cand = {el: self.subnet_of.get(el[1]) or self.ip_subnet.get(self.ip_of.get(el[1], el[1]))
                          for el in cands if el[0] == "instance"}
        current = {el: self.evaluate(el) for el in cands}
        findings: dict[Key, Finding] = {}
        chosen: list[Element] = []
        while True:
            live = [c for c in current.values() if c is not None and c.keys]
            if not live:
                break
            best = max(live, key=_Cand.rank)
            cause = "workload" if best.el[0] == "instance" else "infrastructure"
            f = Finding(cause, best.el, best.conf, best.ev, {**best.detail, "after": [f"{a}:{b}" for a, b in chosen]})
            for kid in best.keys:
                findings[kid] = f
            self.explained |= best.keys
            chosen.append(best.el)
            del current[best.el]
            # explaining away: re-evaluate what the newly explained keys touched
            gone = [k for k in self.degraded if k.id in best.keys]
            dirty_els = {el for k in gone for el in k.els}
            dirty_subnets = {s for k in gone for s in (k.sr, k.sd)}
            for r in {k.r for k in gone}:
                self.clear_memo.pop(r, None)
                self.clear_subnet.pop(self.subnet_of[r], None)
            for el in current:
                if el in dirty_els or (el[0] == "instance" and subnet_of_cand.get(el) in dirty_subnets):
                    current[el] = self.evaluate(el)
        for k in self.degraded:
            if k.id not in self.explained:
                findings[k.id] = Finding("undetermined", None, 0.0, Evidence(
                    0.0, len({q.r for q in self.towards[k.sd]}), 1, (k.r,), 0, 1, 0, ()))
        return findings


# ------------------------------------------------------------------------------------
# the stage: health of every partition in, verdicts per alert and NHI changes out
# ------------------------------------------------------------------------------------
_intern = sys.intern
_SHARED_MAX = 100_000
_NO_LAST = (None, None, None, None, None)


def _interned(xs: tuple) -> tuple:
    """``xs`` with its strings interned (None kept)."""
    return tuple([x if x is None else _intern(x) for x in xs])


class AttributionStage:
    """Collects the per-interval health from every pairs partition; attributes an interval once
    every partition has passed it.

    Input messages (topic ``flow-health-v1``; one per pairs partition and batch;
    ``wire.events.HealthBatch``, as its wire dict or as the record)::

        {"p": partition, "upto": t_max, "health": [...], "opened": [alert events]}

    ``upto``: the partition has handed over every interval starting at or before it. The
    health entries and the ``opened`` alert events of interval ``t`` wait until every one
    of the ``partitions`` has ``upto >= t``; then ``Attributor`` decides them all at once
    (fleet-wide), each opened alert gets an attribution, and ``nhi.NetworkHealth`` is
    updated. No interval waits for more than the slowest partition's next batch.

    :meth:`apply` and :meth:`finish` return wire dicts (``Attribution.to_wire()``,
    ``NhiPeriod.to_wire()``), which the runtime encodes as they are; :meth:`apply_batch` and
    :meth:`finish_records` are their typed forms.
    """

    def __init__(self, partitions: int, interval_s: int = 30, attributor: Attributor | None = None,
                 recover_after: int = 4, nhi_min_flagged: int | None = None) -> None:
        self.partitions = partitions
        self.attributor = attributor or Attributor()
        #: distinct reporters with *flagged* keys an infrastructure verdict needs to touch NHI
        self.nhi_min_flagged = self.attributor.min_reporters if nhi_min_flagged is None else nhi_min_flagged
        self.nhi = NetworkHealth(interval_s, recover_after)
        self.upto: dict[int, int] = {}
        # by interval; keyed so that a replayed message (at-least-once) counts once
        self.pending: dict[int, dict[tuple[str, str, bool], KeyHealth]] = defaultdict(dict)
        self.opened: dict[int, dict[str, AnomalyEvent]] = defaultdict(dict)
        self.first_offset: dict[int, int] = {}  # interval -> earliest input offset holding it
        self.done_upto = -1  # every interval up to here is attributed
        #: one object per distinct interval, placement, ``weak`` and ``top`` among the pending entries (see _compact)
        self._shared: dict[Any, Any] = {}
        self._last: tuple = _NO_LAST  # the previous entry's src and dst as decoded, its shared interval, src and dst

    def apply(self, msg: HealthBatch | Mapping[str, Any], now: float = 0.0, offset: int | None = None,
              limit: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One message in; (attribution records, NHI records) out, as wire dicts. ``offset``: its position
        in the input topic (for :meth:`replay_from`). ``limit``: attribute at most this many of the intervals
        it makes ready; :meth:`more` the rest (a backlog's message may ready dozens: seconds of work)."""
        recs, nhi = self.apply_batch(msg if isinstance(msg, HealthBatch) else HealthBatch.from_wire(msg), now, offset,
                                     limit)
        return [r.to_wire() for r in recs], [n.to_wire() for n in nhi]

    def ready(self) -> bool:
        """Some interval every partition has passed still waits (a limited :meth:`apply` left it)."""
        if len(self.upto) < self.partitions:
            return False
        upto = min(self.upto.values())
        return any(t <= upto for t in self.pending) or any(t <= upto for t in self.opened)

    def more(self, now: float = 0.0, limit: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Attribute (up to ``limit`` of) the intervals :meth:`ready` says wait; wire dicts.

        >>> st = AttributionStage(2)
        >>> for t in (0, 30, 60):
        ...     _ = st.apply({"p": 0, "upto": t, "health": [], "opened": []})
        >>> st.pending[0], st.pending[30] = {}, {}     # two intervals with nothing to attribute
        >>> st.apply({"p": 1, "upto": 60, "health": [], "opened": []}, limit=1), st.done_upto, st.ready()
        (([], []), 0, True)
        >>> st.more(limit=1), st.done_upto, st.ready()
        (([], []), 30, False)
        """
        if len(self.upto) < self.partitions:
            return [], []
        recs, nhi = self._flush(min(self.upto.values()), now, limit)
        return [r.to_wire() for r in recs], [n.to_wire() for n in nhi]

    def apply_batch(self, msg: HealthBatch, now: float = 0.0, offset: int | None = None,
                    limit: int | None = None) -> tuple[list[Attribution], list[NhiPeriod]]:
        """:meth:`apply`, typed."""
        compact, pending, done, last = self._compact, self.pending, self.done_upto, None
        for h in msg.health:
            t = h[0]
            if t > done:
                h = compact(h)
                if t != last:
                    into, last = pending[t], t
                    if offset is not None:
                        self.first_offset.setdefault(t, offset)
                into[(h.key, h.dst[0], h.reporter is None)] = h
        for e in msg.opened:
            if e.at > self.done_upto:
                self.opened[e.at][e.alert_id] = e
                if offset is not None:
                    self.first_offset.setdefault(e.at, offset)
        p, up = msg.partition, msg.upto
        if up is not None and up > self.upto.get(p, -1):
            self.upto[p] = up
        if len(self.upto) < self.partitions:
            return [], []
        return self._flush(min(self.upto.values()), now, limit)

    def _compact(self, h: KeyHealth) -> KeyHealth:
        """``h`` holding shared objects: every decoded entry has its own interval number, placements,
        names and addresses (967 B per pending entry in process, 180,000 entries; ~250 B shared), and
        an interval waits here until the slowest partition has passed it: with a fleet's 60,000 keys an
        interval, that was most of the worker's memory on a backlog (``benchmarks/README.md``)."""
        shared = self._shared
        if len(shared) > _SHARED_MAX:  # placements are few; ``top`` combinations are not bounded
            shared.clear()
            self._last = _NO_LAST
        t, src, dst, r, retrans, timeouts, lat, weak, top, ip = h
        last = self._last  # a pair's keys come together: most entries repeat the previous one's placements
        if src == last[0] and dst == last[1] and t == last[2]:
            t, s, d = last[2], last[3], last[4]
        else:
            t = shared.setdefault(t, t)
            s = shared.get(src)
            if s is None:
                s = shared[src] = _interned(src)
            d = shared.get(dst)
            if d is None:
                d = shared[dst] = _interned(dst)
            self._last = (src, dst, t, s, d)
        if weak:
            weak = shared.setdefault(weak, weak)
        if top is not None:
            tp = shared.get(top)
            if tp is None:
                tp = shared[top] = _interned(top)
            top = tp
        return new_key_health((t, s, d, r if r is None else _intern(r), retrans, timeouts, lat, weak, top,
                               ip if ip is None else _intern(ip)))

    def finish(self, now: float = 0.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Attribute everything pending (end of a finite run) and close the NHI periods; wire dicts."""
        recs, nhi = self.finish_records(now)
        return [r.to_wire() for r in recs], [n.to_wire() for n in nhi]

    def finish_records(self, now: float = 0.0) -> tuple[list[Attribution], list[NhiPeriod]]:
        """:meth:`finish`, typed."""
        ts = list(self.pending) + list(self.opened)
        recs, nhi = self._flush(max(ts) if ts else -1, now)
        return recs, nhi + self.nhi.close_all(now)

    def _flush(self, ready: int, now: float, limit: int | None = None) -> tuple[list[Attribution], list[NhiPeriod]]:
        recs: list[Attribution] = []
        nhi: list[NhiPeriod] = []
        for n, t in enumerate(sorted(set(self.pending) | set(self.opened))):
            if t > ready or (limit is not None and n >= limit):
                break
            health = list(self.pending.pop(t, {}).values())
            self.first_offset.pop(t, None)
            # no alert opened here: only what may move NHI is needed (most intervals of a healthy fleet)
            findings = self.attributor.attribute(t, health, None if self.opened.get(t) else self.nhi_min_flagged)
            recs += self._attribute_opened(t, health, findings, now)
            # NHI moves on strong evidence only: flagged keys (not merely elevated) from enough reporters
            blamed = {f.element for f in findings.values() if f.cause == "infrastructure" and f.element
                      and f.detail.get("reporters_flagged", self.nhi_min_flagged) >= self.nhi_min_flagged}
            subnet_az = {h.src[0]: h.src[1] for h in health}
            subnet_az.update({h.dst[0]: h.dst[1] for h in health})
            nhi += self.nhi.update(t, blamed, subnet_az, now)
            self.done_upto = t
        return recs, nhi

    def _attribute_opened(self, t: int, health: list[KeyHealth], findings: Mapping[tuple[str, str, str], Finding],
                          now: float) -> list[Attribution]:
        """An attribution per alert opened in interval ``t``; a pair alert none of whose reporters' keys
        could be attributed falls back on the pair keys (infrastructure only)."""
        out = []
        pair_findings: dict[tuple[str, str, str], Finding] | None = None
        src_of = {h.key: h.src[0] for h in health}
        for e in self.opened.pop(t, {}).values():
            rec = self._record(e, findings, src_of, now)
            if rec.cause == "undetermined" and e.scope == "pair":
                if pair_findings is None:
                    pair_findings = self.attributor.attribute_pairs(t, health)
                f = pair_findings.get((rec.family, pair_key(e.src[0], e.dst[0]), e.dst[0]))
                if f is not None and f.cause == "infrastructure":
                    rec = dataclasses.replace(rec, cause=f.cause, element_kind=f.element_kind,
                                              element=f.element_id, confidence=round(f.confidence, 4),
                                              evidence=f.evidence, evidence_level="pair")
            out.append(rec)
        return out

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
    def _record(e: AnomalyEvent, findings: Mapping[tuple[str, str, str], Finding], src_of: Mapping[str, str],
                now: float) -> Attribution:
        fam = family_of(e.metric)
        dst = e.dst[0]
        if e.scope == "instance":
            fs = [findings[k]] if (k := (fam, e.instance, dst)) in findings else []
        else:  # a pair alert: what its reporters' keys were attributed to
            fs = [f for (fm, r, d), f in sorted(findings.items())
                  if fm == fam and d == dst and src_of.get(r) == e.src[0]]
        f = _majority(fs)
        return Attribution(e.alert_id, e.at, e.scope, e.instance, e.src[0], dst, e.metric, fam, f.cause,
                           f.element_kind, f.element_id, round(f.confidence, 4), f.evidence, len(fs), "instance", now)


def _majority(fs: list[Finding]) -> Finding:
    """The finding most keys got (ties: infrastructure, then workload); undetermined if none."""
    if not fs:
        return Finding("undetermined", None, 0.0, Evidence())
    by: dict[tuple[str, Any], list[Finding]] = defaultdict(list)
    for f in fs:
        by[(f.cause, f.element)].append(f)
    order = {"infrastructure": 0, "workload": 1, "undetermined": 2}
    (cause, el), group = min(by.items(), key=lambda kv: (-len(kv[1]), order[kv[0][0]], str(kv[0][1])))
    return group[0]
