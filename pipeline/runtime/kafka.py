"""Kafka clients, set up in one place: every aiokafka consumer, producer and admin client flowmon builds
outside Faust (the sink's lander, changelog restore, ``flowmon alerts``, ``flowmon produce``, topic setup).

What every consumer shares, :func:`consumer_options` sets: the bootstrap servers, the group
(``None``: no group), offsets committed only when asked (``auto_commit``; aiokafka's default
would commit), and the group timings, given in seconds as :class:`~pipeline.config.Settings`
has them (:func:`group_timings`) and passed to aiokafka in milliseconds. Everything else is
the caller's own choice (offset reset, fetch sizes and waits, client id), passed through as
``AIOKafkaConsumer`` keyword arguments.

Examples
--------
>>> consumer_options("127.0.0.1:9092", group="flow-sink", session_timeout_s=4, heartbeat_s=1,
...                  rebalance_timeout_s=4.5, auto_offset_reset="earliest")
{'bootstrap_servers': '127.0.0.1:9092', 'group_id': 'flow-sink', 'enable_auto_commit': False, 'session_timeout_ms': 4000, 'heartbeat_interval_ms': 1000, 'rebalance_timeout_ms': 4500, 'auto_offset_reset': 'earliest'}
>>> consumer_options("b:9092", auto_commit=True)
{'bootstrap_servers': 'b:9092', 'group_id': None, 'enable_auto_commit': True}
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import Settings

__all__ = ["group_timings", "consumer_options", "consumer", "reader", "producer", "admin", "supports_idempotence"]

_TIMINGS_MS = (("session_timeout_s", "session_timeout_ms"), ("heartbeat_s", "heartbeat_interval_ms"),
               ("rebalance_timeout_s", "rebalance_timeout_ms"))


def group_timings(s: Settings) -> dict[str, float]:
    """The consumer-group timings of the configuration, as :func:`consumer` takes them.

    >>> group_timings(Settings(session_timeout_s=6, heartbeat_s=1, rebalance_timeout_s=8))
    {'session_timeout_s': 6.0, 'heartbeat_s': 1.0, 'rebalance_timeout_s': 8.0}
    """
    return {"session_timeout_s": s.session_timeout_s, "heartbeat_s": s.heartbeat_s,
            "rebalance_timeout_s": s.rebalance_timeout_s}


def consumer_options(bootstrap: str, *, group: str | None = None, auto_commit: bool = False,
                     session_timeout_s: float | None = None, heartbeat_s: float | None = None,
                     rebalance_timeout_s: float | None = None, **options: Any) -> dict[str, Any]:
    """``AIOKafkaConsumer`` keyword arguments: the shared ones (see the module docstring), then ``options``.
    A timing left ``None`` is not passed (aiokafka's default applies)."""
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap, "group_id": group, "enable_auto_commit": auto_commit}
    seconds = {"session_timeout_s": session_timeout_s, "heartbeat_s": heartbeat_s,
               "rebalance_timeout_s": rebalance_timeout_s}
    for name, ms in _TIMINGS_MS:
        if seconds[name] is not None:
            kw[ms] = int(seconds[name] * 1000)
    kw.update(options)
    return kw


def consumer(bootstrap: str, *topics: str, **kw: Any) -> AIOKafkaConsumer:
    """A consumer (not started) of ``topics`` (none: the caller assigns partitions); ``kw`` as
    :func:`consumer_options` takes them. Needs a running event loop."""
    return AIOKafkaConsumer(*topics, **consumer_options(bootstrap, **kw))


def reader(bootstrap: str, max_bytes: int = 8 << 20, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that the caller ``assign()``\\s and ``seek()``\\s to read partitions
    to a known end (changelog restore): up to ``max_bytes`` per partition and fetch, and fetches
    that wait at most 50 ms, so reaching the end is not slowed by an idle poll."""
    return consumer(bootstrap, max_partition_fetch_bytes=max_bytes, fetch_max_wait_ms=50, **options)


def producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    """A producer (not started); ``options`` are ``AIOKafkaProducer`` keyword arguments."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options)


def admin(bootstrap: str, timeout_s: float = 30.0) -> AIOKafkaAdminClient:
    """An admin client (not started) whose requests time out after ``timeout_s``."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))


async def supports_idempotence(bootstrap: str, timeout_s: float = 10.0) -> bool:
    """Whether the broker grants producer ids (InitProducerId), which the idempotent producer needs.

    Apache Kafka does; the embedded Tansu answers an error (so its producers run with
    ``acks=all`` and retries, without idempotence). One request on a short-lived client.
    """
    import asyncio

    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.transaction import InitProducerIdRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await client.bootstrap()
        node = client.get_random_node()
        resp = await asyncio.wait_for(
            client.send(node, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)), timeout_s)
        return resp.error_code == 0
    except Exception:  # noqa: BLE001 - any refusal means: do not rely on it
        return False
    finally:
        await client.close()
