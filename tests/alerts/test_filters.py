"""pipeline.alerts.filters: subnet pairs, minimum severity, scope, metric."""

from __future__ import annotations

import pytest

from pipeline.alerts.filters import check_filters, matches
from tests.support.events import valid_event as ev


# --- filter -------------------------------------------------------------------------------------
WEB_DB = ev(src_subnet="web", dst_subnet="db", severity="warning", scope="pair", metric="rtt_mean")
CACHE_WEB = ev(alert_id="1111111111111111", src_subnet="cache", dst_subnet="web", severity="critical",
               scope="instance", instance="cache-7", metric="retrans_rate")


@pytest.mark.parametrize("pairs, web_db, cache_web", [
    (None, True, True),
    ([], True, True),
    (["web->db"], True, False),
    (["db->web"], False, False),               # direction matters
    (["web"], True, True),                     # a bare subnet: either side
    (["db"], True, False),
    (["cache"], False, True),
    ([" cache -> web "], False, True),         # spaces are ignored
    (["*->web"], False, True),
    (["web->*"], True, False),
    (["*->*"], True, True),
    (["nowhere"], False, False),
    (["nowhere", "cache->web"], False, True),  # any of them
])
def test_pair_filter(pairs, web_db, cache_web):
    assert matches(WEB_DB, pairs=pairs) is web_db
    assert matches(CACHE_WEB, pairs=pairs) is cache_web


def test_severity_is_a_minimum_on_the_events_own_severity():
    assert matches(WEB_DB, severity="warning") and matches(CACHE_WEB, severity="warning")
    assert not matches(WEB_DB, severity="critical")
    assert matches(CACHE_WEB, severity="critical")
    resolved = ev(event="resolved", seq=4, severity="critical", reason="normal")
    assert matches(resolved, severity="critical")  # the resolution of a critical alert passes too
    assert not matches(dict(resolved, severity="warning"), severity="critical")


def test_scope_metric_and_combined_filters():
    assert matches(CACHE_WEB, scope="instance") and not matches(WEB_DB, scope="instance")
    assert matches(WEB_DB, scope="pair") and not matches(CACHE_WEB, scope="pair")
    assert matches(WEB_DB, metric="rtt_mean") and not matches(WEB_DB, metric="rtt_p90")
    assert matches(WEB_DB, metric=["rtt_p90", "rtt_mean"])
    assert matches(WEB_DB, metric=[])  # empty = no filter
    # all filters must pass
    assert matches(CACHE_WEB, pairs=["web"], severity="critical", scope="instance", metric="retrans_rate")
    assert not matches(CACHE_WEB, pairs=["web"], severity="critical", scope="instance", metric="rtt_mean")
    assert not matches(CACHE_WEB, pairs=["db"], severity="critical", scope="instance", metric="retrans_rate")


@pytest.mark.parametrize("kwargs, message", [
    ({"severity": "info"}, "unknown severity info"),
    ({"scope": "host"}, "unknown scope host"),
    ({"metric": ["rtt_mean", "jitter"]}, "unknown metric jitter"),
    ({"pairs": ["a->b->c"]}, "bad pair"),
    ({"pairs": ["->b"]}, "bad pair"),
    ({"pairs": [""]}, "bad pair"),
])
def test_bad_filters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        matches(WEB_DB, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"severity": "info"}, "unknown severity info"),
    ({"scope": "host"}, "unknown scope host"),
    ({"scope": ["pair", "host"]}, "unknown scope host"),
    ({"metric": ["rtt_mean", "jitter"]}, "unknown metric jitter"),
    ({"pairs": ["nowhere", "a->b->c"]}, "bad pair"),
    ({"pairs": ["->b"]}, "bad pair"),
])
def test_check_filters_refuses_what_matches_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_filters(**kwargs)
    with pytest.raises(ValueError, match=message):
        matches(CACHE_WEB, **kwargs)


def test_check_filters_checks_every_pair():
    assert matches(CACHE_WEB, pairs=["web", "a->b->c"])  # matches stops at the first pair that matches
    with pytest.raises(ValueError, match="bad pair 'a->b->c'"):
        check_filters(pairs=["web", "a->b->c"])  # the check before connecting does not


def test_check_filters_accepts_every_value_of_the_schema():
    from pipeline.alerts.events import METRICS, SCOPES, SEVERITIES
    for severity in SEVERITIES:
        check_filters(severity=severity, scope=list(SCOPES), metric=list(METRICS), pairs=["a->b", "*->c", "d"])
    check_filters()
