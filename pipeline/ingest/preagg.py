"""Pre-aggregation: the accepted samples of one report -> one partial per subnet pair.

A report comes from one host over one interval, so every sample in it shares the
source subnet and the window; grouping by destination placement gives the partials.
Done with numpy (sort + ``reduceat``), never a Python loop per sample. Sums stay in
int64, so totals are exact.

A partial is a ``wire.records.Partial`` (its JSON form, on the pairs topic, is in that
module): source and destination places, window start, the reporting host, the counters
(``PARTIAL_COUNTERS``), the RTT histogram ``{rtt_bucket: count}``, the one-sample maxima,
the top remotes, the reporter's address, the report's identity and the median histogram.

``maxima`` holds the largest retransmission and timeout counts of any *one* sample (one remote
endpoint) in the partial, so detection can tell a burst on one connection from a
degradation spread over many (``detect.detection``); ``top`` names the remote IP of the sample
with the most retransmissions, the most timeouts and the highest RTT observation (``None``
when there were none), which attribution uses to tell one sick remote instance from a
shared element. ``medians`` is the histogram of the samples' own median RTTs (one entry per
sample with RTT observations): a median over it counts every remote endpoint once, however
many observations one flow contributed, so one flow's spike does not move it. A sample
that moved no bytes in the interval is left out of ``medians``: the kernel's smoothed RTT is only
updated by ACKs, so an idle connection reports a stale value (its last spike, say).

Examples
--------
>>> import numpy as np
>>> from pipeline.ingest.validate import Batch, Report
>>> rep = Report("h1", ("s1", "a1", "v1"), 1764000030, 30, dst=np.array([0, 1, 0]),
...     counters=np.array([[5, 1, 7], [0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 2]]),
...     rtt=np.array([1000, 1000, 2000]), rtt_owner=np.array([0, 2, 1]), index=np.arange(3),
...     ips=["10.0.1.4", "10.0.2.4", "10.0.1.5"])
>>> places = [("s2", "a2", "v1"), ("s3", "a3", "v1")]
>>> parts = partials(rep, places, window_s=600)
>>> [(p.dst[0], p.window_start, p.counters, p.rtt_hist) for p in parts]
[('s2', 1764000000, [12, 0, 1, 0, 3, 2, 2, 2000], {159: 2}), ('s3', 1764000000, [1, 0, 0, 0, 1, 1, 1, 2000], {175: 1})]
>>> [(p.maxima, p.top, p.medians) for p in parts]
[([1, 0], ['10.0.1.4', None, '10.0.1.4'], {159: 2}), ([0, 0], [None, None, '10.0.2.4'], {175: 1})]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.ingest.validate import Batch, Report
from pipeline.wire.records import (
    BYTES_RECEIVED,
    BYTES_SENT,
    MAX_RETRANSMISSIONS,
    MAX_TIMEOUTS,
    PARTIAL_COUNTERS,
    RETRANSMISSIONS,
    RTT_COUNT,
    RTT_SUM_US,
    SAMPLES,
    TIMEOUTS,
    TOP_RETRANSMISSIONS,
    TOP_RTT,
    TOP_TIMEOUTS,
    Partial,
    new_partial,
    zero_counters,
)
from pipeline.wire.rtt import bucket

__all__ = ["partials", "partials_many", "PARTIAL_COUNTERS"]


#: Below this many samples a plain loop beats numpy's per-call overhead (same result, tested).
SMALL = 16


def partials(report: Report, places: Sequence[tuple[str, str, str]], window_s: int) -> list[Partial]:
    """Per-destination partial sums of one report (see module doc for the shape)."""
    n = report.n
    if n == 0:
        return []
    if n <= SMALL:
        return _partials_small(report, places, report.start - report.start % window_s)
    ips = report.ips or [None] * n  # (a Report built by hand may leave them out: no tops then)
    one = Batch([0], [(report.instance, report.src, report.start, report.interval_s, report.local_ip)], [report.rid],
                np.array([0, n], dtype=np.int64), report.dst, report.counters, report.rtt, report.rtt_owner, ips)
    return partials_many(one, places, window_s)[0]


def _partials_small(report: Report, places: Sequence[tuple[str, str, str]], ws: int) -> list[Partial]:
    """The same as the numpy path, for a handful of samples (agents with few peers)."""
    dst = report.dst.tolist()
    cols = report.counters.tolist()
    ips = report.ips
    groups: dict[int, list[int]] = {}
    hists: dict[int, dict[int, int]] = {}
    xs: dict[int, list[int]] = {}
    tops: dict[int, list[str | None]] = {}
    lat: dict[int, int] = {}
    for i, d in enumerate(dst):
        g = groups.get(d)
        if g is None:
            g = groups[d] = zero_counters()
            hists[d] = {}
            xs[d] = [-1, -1]
            tops[d] = [None, None, None]
        for k, col in enumerate(cols):
            g[k] += col[i]
        g[SAMPLES] += 1
        x, top = xs[d], tops[d]
        if cols[RETRANSMISSIONS][i] > x[MAX_RETRANSMISSIONS]:
            x[MAX_RETRANSMISSIONS] = cols[RETRANSMISSIONS][i]
            top[TOP_RETRANSMISSIONS] = ips[i] if ips and x[MAX_RETRANSMISSIONS] > 0 else None
        if cols[TIMEOUTS][i] > x[MAX_TIMEOUTS]:
            x[MAX_TIMEOUTS] = cols[TIMEOUTS][i]
            top[TOP_TIMEOUTS] = ips[i] if ips and x[MAX_TIMEOUTS] > 0 else None
    meds: dict[int, dict[int, int]] = {d: {} for d in groups}
    if report.rtt.size:
        per_sample: dict[int, list[int]] = {}
        for o, v in zip(report.rtt_owner.tolist(), report.rtt.tolist()):
            per_sample.setdefault(o, []).append(v)
        owners = [o for o in sorted(per_sample) if cols[BYTES_SENT][o] + cols[BYTES_RECEIVED][o] > 0]  # an idle sample's RTT is stale
        med_b = bucket(np.array([sorted(per_sample[o])[(len(per_sample[o]) - 1) // 2] for o in owners])).tolist()
        for o, b in zip(owners, med_b):
            mh = meds[dst[o]]
            mh[b] = mh.get(b, 0) + 1
        for o, v, b in zip(report.rtt_owner.tolist(), report.rtt.tolist(), bucket(report.rtt).tolist()):
            d = dst[o]
            g = groups[d]
            g[RTT_COUNT] += 1
            g[RTT_SUM_US] += v
            h = hists[d]
            h[b] = h.get(b, 0) + 1
            if v > lat.get(d, -1):
                lat[d] = v
                tops[d][TOP_RTT] = ips[o] if ips else None
    src = list(report.src)
    return [new_partial((src, list(places[d]), ws, report.instance, groups[d], hists[d], xs[d], tops[d],
                         report.local_ip, report.rid, meds[d])) for d in sorted(groups)]


def _group_hists(group: np.ndarray, rtt: np.ndarray, g: int) -> list[dict[int, int]]:
    """Per group: the sparse log histogram (``rtt.bucket`` -> count) of its RTT values.

    >>> _group_hists(np.array([0, 1, 0]), np.array([1000, 2000, 1000]), 3)
    [{159: 2}, {175: 1}, {}]
    """
    hists: list[dict[int, int]] = [{} for _ in range(g)]
    codes, counts = np.unique(group * 4096 + bucket(rtt), return_counts=True)
    for code, cnt in zip(codes.tolist(), counts.tolist()):
        hists[code >> 12][code & 4095] = cnt
    return hists


def _group_max(values: np.ndarray, group: np.ndarray, g: int, idx: np.ndarray) -> tuple[list[int], list[int]]:
    """Per group: the largest value and the first row holding it.

    >>> _group_max(np.array([3, 9, 9, 1]), np.array([0, 0, 0, 1]), 2, np.arange(4))
    ([9, 1], [1, 3])
    """
    order = np.lexsort((idx, -values, group))
    first = order[np.searchsorted(group[order], np.arange(g))]
    return values[first].tolist(), first.tolist()


def _sample_medians(rtt: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(samples with RTT observations, the lower median of each one's observations, and the largest).

    >>> _sample_medians(np.array([5, 1, 9, 7, 3]), np.array([0, 0, 0, 2, 2]), 3)
    (array([0, 2]), array([5, 3]), array([9, 7]))
    """
    order = np.lexsort((rtt, owner))
    v = rtt[order]
    counts = np.bincount(owner, minlength=n)
    present = np.flatnonzero(counts)
    first = (np.cumsum(counts) - counts)[present]
    per = counts[present]
    return present, v[first + (per - 1) // 2], v[first + per - 1]


def partials_many(batch: Batch, places: Sequence[tuple[str, str, str]], window_s: int) -> list[list[Partial]]:
    """``partials`` of every report of a batch (``validate.Batch``), computed together.

    One numpy group-by over all samples of all reports (group = report and destination
    placement), so the per-sample work is numpy's and Python builds only the partials.
    Report ``k``'s list equals ``partials`` of that report alone: same sums, maxima, tops,
    histograms and medians, in the same order (by placement code).
    """
    n = batch.n
    nrep = len(batch.heads)
    if n == 0:
        return [[] for _ in range(nrep)]
    counters, rtt, owner, ips = batch.counters, batch.rtt, batch.rtt_owner, batch.ips
    rep = np.repeat(np.arange(nrep, dtype=np.int64), np.diff(batch.bounds))
    key = rep * (int(batch.dst.max()) + 1) + batch.dst
    order = np.argsort(key, kind="stable")
    sk = key[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    g = starts.shape[0]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    g_rep = rep[order[starts]].tolist()
    g_dst = batch.dst[order[starts]].tolist()
    sums = np.add.reduceat(counters[:, order], starts, axis=1).T.tolist()
    nsamples = np.diff(starts, append=n).tolist()
    idx = np.arange(n)
    best_r, arg_r = _group_max(counters[RETRANSMISSIONS], inverse, g, idx)
    best_t, arg_t = _group_max(counters[TIMEOUTS], inverse, g, idx)
    if rtt.size:
        grp = inverse[owner]
        rtt_count = np.bincount(grp, minlength=g)
        rtt_sum = np.zeros(g, dtype=np.int64)
        o2 = np.argsort(grp, kind="stable")
        present = np.flatnonzero(rtt_count)
        rtt_sum[present] = np.add.reduceat(rtt[o2], np.searchsorted(grp[o2], present))
        hists = _group_hists(grp, rtt, g)
        has, med, top = _sample_medians(rtt, owner, n)
        moved = (counters[BYTES_SENT] + counters[BYTES_RECEIVED])[has] > 0  # an idle sample's RTT is stale
        med_hists = _group_hists(inverse[has[moved]], med[moved], g)
        rtt_max = np.full(n, -1, dtype=np.int64)
        rtt_max[has] = top
        best_l, arg_l = _group_max(rtt_max, inverse, g, idx)
        top_lat = [ips[i] if x >= 0 else None for x, i in zip(best_l, arg_l)]
        rtt_count, rtt_sum = rtt_count.tolist(), rtt_sum.tolist()
    else:
        rtt_count = rtt_sum = [0] * g
        hists = [{} for _ in range(g)]
        med_hists = [{} for _ in range(g)]
        top_lat = [None] * g
    out: list[list[Partial]] = [[] for _ in range(nrep)]
    heads, rids = batch.heads, batch.rids
    srcs = [list(h[1]) for h in heads]
    wss = [h[2] - h[2] % window_s for h in heads]
    for k in range(g):
        r = g_rep[k]
        head = heads[r]
        c = sums[k]
        c.extend((nsamples[k], rtt_count[k], rtt_sum[k]))
        br, bt = best_r[k], best_t[k]
        out[r].append(new_partial((srcs[r], list(places[g_dst[k]]), wss[r], head[0], c, hists[k], [br, bt],
                                   [ips[arg_r[k]] if br > 0 else None, ips[arg_t[k]] if bt > 0 else None, top_lat[k]],
                                   head[4], rids[r], med_hists[k])))
    return out
