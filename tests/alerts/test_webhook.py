"""pipeline.alerts.webhook against a real local aiohttp server: retries, backoff, failures."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from aiohttp import web

from pipeline.alerts.webhook import Webhook
from pipeline.runtime.brokers import free_port
from tests.support.events import valid_event as ev


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

    with caplog.at_level(logging.ERROR, logger="pipeline.alerts.webhook"):
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

    with caplog.at_level(logging.ERROR, logger="pipeline.alerts.webhook"):
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
