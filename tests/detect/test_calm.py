"""``Baseline.calm`` (score and learn in one pass when nothing is hot) is ``score`` then ``learn``: the same
statistics bit for bit (``==``), the same health levels as ``detection._health`` reads from the verdicts,
and nothing changed when it declines. And a ``Detection`` that takes it gives the same events, health and
states as one that never does."""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as hs

from pipeline.detect.baseline import Baseline, BaselineParams
from pipeline.detect.detection import ELEVATED_FRACTION, Detection, _health
from pipeline.detect.observe import observe
from pipeline.wire.records import GridInterval

_PARAMS = [
    BaselineParams(),
    BaselineParams(warmup=3, fading=0.3),  # settles after 4 intervals: the EW branch early
    BaselineParams(warmup=0, z=2.0, min_retrans=1, min_timeouts=1, min_rtt_excess_us=10.0),  # hot often
    BaselineParams(warmup=2, fading=0.5, rtt_clip=0.5, rtt_count_cap=2, rtt_sd_floor=0.001),  # clipping
    BaselineParams(learn_dispersion=1),  # not calm's: it declines every interval
    BaselineParams(score_p90=1),
]

_obs = hs.builds(
    lambda bytes_sent, retrans, timeouts, flows, rtts, spread, med: observe(
        [bytes_sent, 1000, retrans, timeouts, flows, len(rtts), len(rtts), sum(rtts)],
        {150 + i % 40: 1 for i in rtts} if rtts else {}, [retrans // 2, timeouts],
        {150 + med + spread: max(1, len(rtts) // 2)} if rtts and med >= 0 else {}, False),
    hs.one_of(hs.just(0), hs.integers(0, 800_000), hs.integers(700_000, 50_000_000)),
    hs.one_of(hs.just(0), hs.integers(0, 5), hs.integers(0, 20_000)),
    hs.one_of(hs.just(0), hs.integers(0, 3), hs.integers(0, 50)),
    hs.one_of(hs.just(0), hs.integers(1, 4), hs.integers(0, 400)),
    hs.lists(hs.integers(50, 2_000_000), max_size=6),
    hs.integers(0, 6),
    hs.integers(-1, 40),
)


def _levels(model: Baseline, verdicts: dict, warmup: float, z: float) -> tuple:
    h = _health(0, ("s", "a", "v"), ("d", "a", "v"), None, verdicts, model.learned, warmup, z)
    return h.retrans, h.timeouts, h.lat


def _state(m: Baseline) -> tuple:
    return list(m.s), dict(m.seen), dict(m.streak)


@settings(max_examples=400, deadline=None)
@given(hs.sampled_from(_PARAMS), hs.lists(_obs, min_size=1, max_size=120), hs.sampled_from([0, 3, 20]),
       hs.randoms(use_true_random=False))
def test_calm_is_score_then_learn(params, sequence, warmup, rnd):
    ref, fast = Baseline(params), Baseline(params)
    z = params.z
    elevated = ELEVATED_FRACTION * z
    for _ in range(rnd.randint(0, 60)):  # a key with some history (calm intervals are the common case)
        o = sequence[0]
        for m in (ref, fast):
            m.learn(o, m.score(o))
    for o in sequence:
        before = _state(fast)
        levels = fast.calm(o, warmup, elevated)
        verdicts = ref.score(o)
        expected = _levels(ref, verdicts, warmup, z)
        ref.learn(o, verdicts)
        if levels is None:  # declined: untouched, and the verdicts path does it
            assert _state(fast) == before
            # (a count that passes the hot test before its warmup is not hot, but its streak counts)
            assert any(v.hot or v.streak for v in verdicts.values()) or params.learn_dispersion or params.score_p90
            fast.learn(o, fast.score(o))
        else:
            assert not any(v.hot for v in verdicts.values())
            assert levels == expected
        assert _state(fast) == _state(ref)


def test_calm_takes_most_intervals_of_a_quiet_key():
    """Not a path that never runs: a key that learned a quiet baseline is calm nearly every interval."""
    rng = random.Random(3)
    m = Baseline(BaselineParams())
    taken = 0
    for k in range(200):
        o = observe([10_000_000 + rng.randint(0, 10**6), 1000, rng.randint(0, 3), 0, 4, 5, 5, 5 * rng.randint(400, 600)],
                    {150 + rng.randint(0, 3): 5}, [1, 0], {150 + rng.randint(0, 3): 4}, False)
        if m.calm(o, 20, 3.0) is not None:
            taken += 1
        else:
            m.learn(o, m.score(o))
    assert taken >= 190


def _intervals(seed: int, n: int) -> list[GridInterval]:
    """Two subnets' hosts towards a third, with bursts, a lasting loss on one host, a path's delay and
    hosts that come and go."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        t = 30 * k
        for src in ("s1", "s2"):
            hosts = {}
            for i in range(4):
                if rng.random() < 0.1:
                    continue  # a host that did not report this interval
                host = f"{src}/{i}"
                loss = (src == "s1" and i == 0 and 60 <= k < 70) or rng.random() < 0.02
                delay = 3.0 if src == "s2" and 90 <= k < 96 else 1.0
                rtts = [int(rng.randint(400, 700) * delay) for _ in range(rng.randint(0, 6))]
                retrans = rng.randint(200, 2000) if loss else rng.randint(0, 3)
                c = [rng.randint(2_000_000, 30_000_000), 100_000, retrans, 1 if loss and rng.random() < 0.5 else 0,
                     rng.randint(1, 6), len(rtts), len(rtts), sum(rtts)]
                hist: dict[int, int] = {}
                for r in rtts:
                    b = 150 + r // 100
                    hist[b] = hist.get(b, 0) + 1
                top = [f"10.0.9.{rng.randint(1, 9)}" if retrans else None, None, "10.0.9.1" if rtts else None]
                hosts[host] = [c, hist, [retrans // 3, 0], top, f"10.0.{src[1]}.{i}", dict(hist)]
            out.append(GridInterval(t, [src, "a1", "v"], ["s3", "a2", "v"], hosts))
    return out


def test_a_detection_that_takes_the_calm_path_gives_what_one_that_never_does_gives():
    ivs = _intervals(11, 160)
    fast, ref = Detection(interval_s=30, window_s=600), Detection(interval_s=30, window_s=600, calm=False)
    # a key restored with parameters of its own (other warmup): still the same on both
    other = Baseline(BaselineParams(warmup=5))
    for d in (fast, ref):
        d._key(("instance", "s1/1", "s3"), "instance", "s1/1", ["s1", "a1", "v"], ["s3", "a2", "v"]).model = \
            copy.deepcopy(other)
    events = {True: [], False: []}
    for iv in ivs:
        events[True] += [e.to_wire() for e in fast.score_interval(iv)]
        events[False] += [e.to_wire() for e in ref.score_interval(iv)]
    assert events[True] == events[False]
    assert {e["event"] for e in events[True]} >= {"opened", "resolved"}  # the faults were found
    assert fast.take_health() == ref.take_health()
    assert fast.take_dirty() == ref.take_dirty()
