"""``detect.statistics`` is river's arithmetic on plain numbers: every update and read equals river's
own objects bit for bit (``==``, no tolerance), on sequences that start at zero, stay at zero, jump
across magnitudes and change sign: what a key's counts and log-RTT deviations do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs
from river import stats

from pipeline.detect import statistics as st

_values = hs.one_of(hs.just(0.0), hs.integers(0, 10_000).map(float),
                    hs.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), hs.floats(-1e-3, 1e-3))
_fading = hs.sampled_from([0.0, 0.02, 0.05, 0.3, 0.5, 1.0])


@settings(max_examples=300, deadline=None)
@given(hs.lists(_values, max_size=80), _fading)
def test_ew_mean_and_variance_are_rivers(xs, a):
    ref_m, ref_v = stats.EWMean(a), stats.EWVar(a)
    m = vm = vsq = None
    assert st.ew_from_river(ref_m) is None and st.ew_var_from_river(ref_v) == (None, None)
    for x in xs:
        ref_m.update(x)
        ref_v.update(x)
        m = st.ew(m, x, a, 1.0 - a)
        vm, vsq = st.ew(vm, x, a, 1.0 - a), st.ew(vsq, x * x, a, 1.0 - a)
        assert m == ref_m.get() and st.ew_var(vm, vsq) == ref_v.get()
    # and what a state of the earlier form carries (the Rust cores' bytes) decodes to the same numbers
    assert st.ew_from_river(ref_m) == m and st.ew_var_from_river(ref_v) == (vm, vsq)


@settings(max_examples=300, deadline=None)
@given(hs.lists(_values, max_size=80))
def test_plain_mean_and_variance_are_rivers(xs):
    ref_m, ref_v = stats.Mean(), stats.Var()
    n = mu = 0.0
    vn = vmu = vs = 0.0
    for x in xs:
        ref_m.update(x)
        ref_v.update(x)
        n, mu = st.mean(n, mu, x)
        vn, vmu, vs = st.var(vn, vmu, vs, x)
        assert (n, mu) == (ref_m.n, ref_m.get())
        assert (vn, vmu, vs) == (ref_v.mean.n, ref_v.mean.get(), ref_v._S) and st.var_get(vn, vs) == ref_v.get()


def test_a_mean_set_at_zero_is_not_a_mean_never_set():
    """river flags a mean as set: one whose first value was 0 then moves by the fading factor (a key's
    retransmissions are 0 for a while), where one never set takes its next value whole."""
    ref = stats.EWMean(0.02)
    ref.update(0)
    ref.update(5)
    assert st.ew(st.ew(None, 0, 0.02, 0.98), 5, 0.02, 0.98) == ref.get() == 0.1
    assert st.ew(None, 5, 0.02, 0.98) == 5.0
