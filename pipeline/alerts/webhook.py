"""Forward anomaly events (and attributions) to an HTTP receiver: JSON POSTs with retries and backoff.

Examples
--------
>>> h = Webhook("https://hooks.example.net/flowmon", retries=2)
>>> h.retries, h.delivered, h.failed
(2, 0, 0)
>>> Webhook("ftp://example.net/x")
Traceback (most recent call last):
...
ValueError: webhook URL must be http(s)://host/...: 'ftp://example.net/x'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["Webhook"]

log = logging.getLogger(__name__)


class Webhook:
    """POST each event as JSON to ``url`` (aiohttp), with retries and exponential backoff.

    One event is tried at most ``1 + retries`` times. Retried: connection errors, a timeout
    (``timeout_s`` per attempt), HTTP 5xx and 429. Not retried: any other status outside
    2xx (a 4xx says the request itself is wrong). Before retry *k* (1, 2, ...) it waits
    ``backoff_s * 2 ** (k - 1)`` seconds, at most ``max_backoff_s``, or longer if the 429/5xx
    answer says ``Retry-After: <seconds>`` (still at most ``max_backoff_s``). An event that
    cannot be delivered is logged as an error and counted in ``failed``; :meth:`send` never
    raises (except cancellation). Counters: ``delivered``, ``failed`` (events) and
    ``retried`` (attempts after the first).

    Each request carries ``Idempotency-Key: <alert_id>-<seq>``: an attempt that timed out
    may still have arrived, and a replay of the topic repeats events, so the receiver sees
    an event at least once and can drop repeats by that key.

    Use as ``async with Webhook(url) as hook: await hook.send(event)``.
    """

    def __init__(self, url: str, *, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 10.0,
                 max_backoff_s: float = 30.0, headers: Mapping[str, str] | None = None) -> None:
        import yarl
        u = yarl.URL(url)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"webhook URL must be http(s)://host/...: {url!r}")
        if retries < 0 or backoff_s < 0 or timeout_s <= 0 or max_backoff_s < 0:
            raise ValueError("retries and backoff_s must be >= 0, timeout_s > 0")
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.headers = dict(headers or {})
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self._session = None

    async def __aenter__(self) -> Webhook:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        import aiohttp
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"Content-Type": "application/json", "User-Agent": "flowmon-alerts", **self.headers})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based).

        >>> h = Webhook("http://127.0.0.1:9/hook", backoff_s=0.5, max_backoff_s=3)
        >>> [h.delay(k) for k in (1, 2, 3, 4, 5)], h.delay(1, retry_after=2.0)
        ([0.5, 1.0, 2.0, 3, 3], 2.0)
        """
        d = self.backoff_s * 2 ** (retry - 1)
        if retry_after is not None:
            d = max(d, retry_after)
        return min(d, self.max_backoff_s)

    async def send(self, event: Mapping[str, Any]) -> bool:
        """Deliver one event; True if a receiver answered 2xx. Never raises (but cancellation)."""
        import aiohttp
        ident = f"{event.get('alert_id')}-{event.get('seq', 'attribution')}"
        try:
            body = orjson.dumps(event)
        except TypeError as exc:
            self.failed += 1
            log.error("webhook %s: event %s not delivered: cannot encode it: %s", self.url, ident, exc)
            return False
        if self._session is None:
            await self.start()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        attempt = 0
        while True:
            retry_after = None
            try:
                async with self._session.post(self.url, data=body, timeout=timeout,
                                              headers={"Idempotency-Key": ident}) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        self.delivered += 1
                        return True
                    text = (await resp.text(errors="replace"))[:200]
                    problem = f"HTTP {status} {resp.reason or ''}".rstrip() + (f": {text}" if text else "")
                    retryable = status >= 500 or status == 429
                    if retryable:
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.InvalidURL as exc:
                problem, retryable = f"invalid URL: {exc}", False
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, True
            except Exception as exc:  # never let one event stop the stream
                problem, retryable = f"{type(exc).__name__}: {exc}", False
            if not retryable or attempt >= self.retries:
                self.failed += 1
                tries = f"after {attempt + 1} attempts" if attempt else "(not retried)"
                log.error("webhook %s: event %s not delivered %s: %s", self.url, ident, tries, problem)
                return False
            attempt += 1
            self.retried += 1
            wait = self.delay(attempt, retry_after)
            log.warning("webhook %s: event %s: %s; retry %d/%d in %.3g s", self.url, ident, problem, attempt,
                        self.retries, wait)
            await asyncio.sleep(wait)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (HTTP dates are ignored).

    >>> _retry_after("3"), _retry_after(None), _retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (3.0, None, None)
    """
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
