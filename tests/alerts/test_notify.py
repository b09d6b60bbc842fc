"""pipeline.alerts.notify without a broker: filter, formatting, dedup, decoding, and the webhook
against a real local aiohttp server."""

from __future__ import annotations

import asyncio
import logging
import time

import jsonschema
import orjson
import pytest
from aiohttp import web

from pipeline.runtime.brokers import free_port
from pipeline.alerts.notify import (
    METRICS,
    Dedup,
    MalformedEvent,
    Webhook,
    decode_event,
    example_event,
    format_event,
    matches,
)
from pipeline.wire.contract import schema

SCHEMA = jsonschema.Draft202012Validator(schema("flow_anomaly"))


def ev(**overrides) -> dict:
    """A valid event (checked against the schema, so test data cannot drift from it)."""
    e = example_event(**overrides)
    SCHEMA.validate(e)
    return e


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


# --- formatting ---------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, observed, expected, text", [
    ("retrans_rate", 0.0523, 0.0011, "retrans_rate 5.23% (expected 0.110%)"),
    ("retrans_rate", 0.25, 0.0, "retrans_rate 25.0% (expected 0%)"),
    ("timeout_rate", 0.5, 0.02, "timeout_rate 0.500 per flow (expected 0.0200 per flow)"),
    ("timeout_rate", 3.0, 0.125, "timeout_rate 3.00 per flow (expected 0.125 per flow)"),
    ("rtt_mean", 1834.0, 412.0, "rtt_mean 1.83 ms (expected 0.412 ms)"),
    ("rtt_p90", 250_000.0, 48_000.0, "rtt_p90 250 ms (expected 48.0 ms)"),
])
def test_format_each_metric_with_units(metric, observed, expected, text):
    line = format_event(ev(metric=metric, observed=observed, expected=expected))
    assert line == (f"2023-11-14T22:13:20Z opened   critical subnet-a → subnet-b  {text}  score 9.1  "
                    "alert 00c0ffee00c0ffee")


def test_format_instance_resolved_and_time_in_utc():
    e = ev(event="resolved", seq=7, scope="instance", instance="db-3", src_subnet="s-db", dst_subnet="s-web",
           severity="warning", metric="rtt_p90", observed=900.0, expected=1000.0, score=12.345, reason="silent",
           at=0, alert_id="abcdef0123456789")
    assert format_event(e) == ("1970-01-01T00:00:00Z resolved warning  s-db → s-web [db-3]  rtt_p90 0.900 ms "
                               "(expected 1.00 ms)  score 12.3  silent  alert abcdef0123456789")


# --- dedup --------------------------------------------------------------------------------------
def test_dedup_drops_repeats_of_alert_and_seq_only():
    d = Dedup()
    a0, a1 = ev(seq=0), ev(event="updated", seq=1)
    b0 = ev(alert_id="0123456789abcdef", seq=0)
    assert [d.is_duplicate(e) for e in (a0, a1, b0)] == [False, False, False]
    replay = dict(a1, emitted_at=a1["emitted_at"] + 100)  # a replayed copy differs in emitted_at only
    assert d.is_duplicate(replay) is True
    assert d.is_duplicate(a0) is True
    assert d.dropped == 2 and len(d) == 3


def test_dedup_memory_is_bounded_lru():
    d = Dedup(maxlen=1000)
    events = [ev(alert_id=f"{i:016x}", seq=i % 3) for i in range(1500)]
    assert not any(d.is_duplicate(e) for e in events)
    assert len(d) == 1000
    assert d.is_duplicate(events[-1]) and d.is_duplicate(events[500])  # the last 1000 are remembered
    assert not d.is_duplicate(events[0])  # the oldest were forgotten: it passes again
    assert len(d) == 1000
    with pytest.raises(ValueError):
        Dedup(maxlen=0)


# --- decoding -----------------------------------------------------------------------------------
def test_decode_checks_the_schema():
    good = ev()
    assert decode_event(orjson.dumps(good)) == good
    for bad in (b"", b"not json", b"[1, 2]", b'"text"', orjson.dumps(dict(good, version=2)),
                orjson.dumps(dict(good, alert_id="XYZ")), orjson.dumps({k: v for k, v in good.items() if k != "seq"}),
                orjson.dumps(dict(good, extra=1)), None):
        with pytest.raises(MalformedEvent):
            decode_event(bad)


# --- webhook ------------------------------------------------------------------------------------
class Receiver:
    """A real HTTP server on 127.0.0.1: answers ``statuses`` in turn (then 200), may stall first."""

    def __init__(self, statuses: tuple[int, ...] = (), stall_first_s: float = 0.0,
                 headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.stall_first_s = stall_first_s
        self.headers = headers or {}
        self.requests: list[tuple[dict, bytes]] = []  # every request that reached the handler
        self.accepted: list[dict] = []  # bodies answered with 200

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if len(self.requests) == 1 and self.stall_first_s:
            await asyncio.sleep(self.stall_first_s)
            return web.Response(status=200)  # too late: the client gave up
        if self.statuses:
            return web.Response(status=self.statuses.pop(0), text="not now", headers=self.headers)
        self.accepted.append(orjson.loads(body))
        return web.Response(status=200, text="ok")

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}/hook"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


def test_webhook_retries_5xx_then_delivers_once():
    event = ev()

    async def go():
        rx = Receiver(statuses=(503, 502, 500))
        async with rx as url, Webhook(url, retries=5, backoff_s=0.01, timeout_s=5) as hook:
            ok = await hook.send(event)
        return ok, rx, hook

    ok, rx, hook = asyncio.run(go())
    assert ok is True
    assert rx.accepted == [event]  # exactly once, the whole event
    assert len(rx.requests) == 4
    assert {h["Idempotency-Key"] for h, _ in rx.requests} == {"00c0ffee00c0ffee-0"}
    assert all(h["Content-Type"] == "application/json" for h, _ in rx.requests)
    assert (hook.delivered, hook.failed, hook.retried) == (1, 0, 3)


def test_webhook_backoff_doubles():
    async def go():
        rx = Receiver(statuses=(503, 503, 503))
        async with rx as url, Webhook(url, retries=3, backoff_s=0.1, timeout_s=5) as hook:
            t0 = time.monotonic()
            ok = await hook.send(ev())
            return ok, time.monotonic() - t0, hook

    ok, elapsed, hook = asyncio.run(go())
    assert ok and hook.retried == 3
    assert 0.7 <= elapsed < 3.0  # 0.1 + 0.2 + 0.4 s of backoff


def test_webhook_429_is_retried_and_honours_retry_after():
    async def go():
        rx = Receiver(statuses=(429,), headers={"Retry-After": "0.3"})
        async with rx as url, Webhook(url, retries=2, backoff_s=0.01) as hook:
            t0 = time.monotonic()
            ok = await hook.send(ev())
            return ok, time.monotonic() - t0, rx, hook

    ok, elapsed, rx, hook = asyncio.run(go())
    assert ok and len(rx.accepted) == 1 and hook.retried == 1
    assert elapsed >= 0.3


def test_webhook_4xx_is_not_retried(caplog):
    async def go():
        rx = Receiver(statuses=(400, 400, 400))
        async with rx as url, Webhook(url, retries=3, backoff_s=0.01) as hook:
            ok = await hook.send(ev())
        return ok, rx, hook

    with caplog.at_level(logging.ERROR, logger="pipeline.alerts.notify"):
        ok, rx, hook = asyncio.run(go())
    assert ok is False
    assert len(rx.requests) == 1 and rx.accepted == []
    assert (hook.delivered, hook.failed, hook.retried) == (0, 1, 0)
    assert "HTTP 400" in caplog.text and "not retried" in caplog.text


def test_webhook_receiver_down_fails_after_retries(caplog):
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there

    async def go():
        async with Webhook(url, retries=3, backoff_s=0.01, timeout_s=2) as hook:
            results = [await hook.send(ev(seq=0)), await hook.send(ev(event="updated", seq=1))]
        return results, hook

    with caplog.at_level(logging.ERROR, logger="pipeline.alerts.notify"):
        results, hook = asyncio.run(go())
    assert results == [False, False]
    assert (hook.delivered, hook.failed, hook.retried) == (0, 2, 6)
    assert caplog.text.count("after 4 attempts") == 2


def test_webhook_timeout_is_retried():
    async def go():
        rx = Receiver(stall_first_s=1.5)
        async with rx as url, Webhook(url, retries=2, backoff_s=0.01, timeout_s=0.3) as hook:
            ok = await hook.send(ev())
        return ok, rx, hook

    ok, rx, hook = asyncio.run(go())
    assert ok and (hook.delivered, hook.failed, hook.retried) == (1, 0, 1)
    assert len(rx.requests) == 2 and len(rx.accepted) == 1
    # both attempts carry the same key: a receiver can drop the copy if the first one did land
    assert rx.requests[0][0]["Idempotency-Key"] == rx.requests[1][0]["Idempotency-Key"]


def test_webhook_refuses_bad_urls_and_parameters():
    for url in ("ftp://example.com/x", "not a url", "http://"):
        with pytest.raises(ValueError):
            Webhook(url)
    with pytest.raises(ValueError):
        Webhook("http://127.0.0.1/x", retries=-1)
    assert Webhook("http://127.0.0.1/x", backoff_s=1, max_backoff_s=5).delay(10) == 5


def test_metrics_cover_the_schema():
    assert set(METRICS) == set(schema("flow_anomaly")["properties"]["metric"]["enum"])
    for m in METRICS:  # every metric formats with a unit
        line = format_event(ev(metric=m, observed=1.0, expected=0.5))
        assert any(u in line for u in ("%", "per flow", " ms"))


# --- the command, without a broker ----------------------------------------------------------------
def _invoke(*args: str):
    import typer
    from typer.testing import CliRunner

    from pipeline.alerts.notify import alerts_command
    app = typer.Typer()
    app.command(name="alerts")(alerts_command)
    app.command(name="noop")(lambda: None)
    return CliRunner().invoke(app, ["alerts", *args])


@pytest.mark.parametrize("args, message", [
    (("--severity", "high"), "--severity"),
    (("--scope", "host"), "--scope"),
    (("--metric", "rtt_mean", "--metric", "jitter"), "--metric"),
    (("--pair", "a->b->c"), "--pair"),
    (("--webhook", "ftp://example.com/hook"), "--webhook"),
    (("--webhook-retries", "-1"), "--webhook-retries"),
])
def test_command_refuses_bad_options(args, message):
    r = _invoke("--broker", "127.0.0.1:1", *args)
    assert r.exit_code == 2
    assert message in r.stderr


def test_command_without_a_broker_exits_2_readably():
    r = _invoke("--broker", f"127.0.0.1:{free_port()}", "--no-follow")
    assert r.exit_code == 2, r.stderr
    assert "Unable to bootstrap" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
