"""Kafka clients, set up in one place: every aiokafka consumer, producer and admin client flowmon builds
outside Faust (the sink's lander, changelog restore, ``flowmon alerts``, ``flowmon produce``, topic setup),
and the security options the Faust app gets too (``runtime.app``).

Where the brokers are and how to talk to them is one value, a :class:`Connection`: the bootstrap
servers and the security options of :class:`~pipeline.config.Settings` (``FLOWMON_KAFKA_*``: TLS
with a CA and an optional client certificate, SASL PLAIN or SCRAM-SHA-256/512) as aiokafka keyword
arguments (:func:`security_options`). Every factory here takes a ``Connection`` (a bare bootstrap
string means PLAINTEXT, as the embedded broker and the tests' brokers speak).

What every consumer shares, :func:`consumer_options` sets: the bootstrap servers, the group
(``None``: no group), offsets committed only when asked (``auto_commit``; aiokafka's default
would commit), and the group timings, given in seconds as :class:`~pipeline.config.Settings`
has them (:func:`group_timings`) and passed to aiokafka in milliseconds. Everything else is
the caller's own choice (offset reset, fetch sizes and waits, client id), passed through as
``AIOKafkaConsumer`` keyword arguments.

A client that cannot bootstrap says only "Unable to bootstrap" (the broker's reason goes to
aiokafka's log); :func:`explain` turns a failure into one line with that reason (a wrong password,
an unknown CA, a missing ACL).

Examples
--------
>>> consumer_options("127.0.0.1:9092", group="flow-sink", session_timeout_s=4, heartbeat_s=1,
...                  rebalance_timeout_s=4.5, auto_offset_reset="earliest")
{'bootstrap_servers': '127.0.0.1:9092', 'security_protocol': 'PLAINTEXT', 'group_id': 'flow-sink', 'enable_auto_commit': False, 'session_timeout_ms': 4000, 'heartbeat_interval_ms': 1000, 'rebalance_timeout_ms': 4500, 'auto_offset_reset': 'earliest'}
>>> consumer_options("b:9092", auto_commit=True)
{'bootstrap_servers': 'b:9092', 'security_protocol': 'PLAINTEXT', 'group_id': None, 'enable_auto_commit': True}
>>> sasl = Settings(broker="b:9093", kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
...                 kafka_sasl_username="agent", kafka_sasl_password="s3cret")
>>> consumer_options(connection(sasl))["sasl_plain_username"]
'agent'
>>> connection(sasl)
<Connection b:9093 SASL_PLAINTEXT PLAIN user='agent'>
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as kerr
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from pipeline.config import Settings

__all__ = ["Connection", "connection", "security_options", "ssl_context", "group_timings", "consumer_options",
           "consumer", "reader", "read_to_end", "producer", "admin", "probe", "explain", "reason", "quiet_bootstrap_log",
           "supports_idempotence", "grants_producer_ids"]


@dataclass(frozen=True, repr=False)
class Connection:
    """The brokers and how to talk to them: ``security`` holds aiokafka keyword arguments
    (``security_protocol``, ``ssl_context``, ``sasl_*``), as :func:`security_options` makes them.
    Its ``repr`` shows the protocol, mechanism and user, never the password."""

    bootstrap: str
    security: Mapping[str, Any] = field(default_factory=lambda: {"security_protocol": "PLAINTEXT"})

    @property
    def protocol(self) -> str:
        return str(self.security.get("security_protocol", "PLAINTEXT"))

    def __repr__(self) -> str:
        sec = self.security
        parts = [self.bootstrap, self.protocol]
        if self.protocol.startswith("SASL_"):
            parts += [str(sec.get("sasl_mechanism")), f"user={sec.get('sasl_plain_username')!r}"]
        return f"<Connection {' '.join(parts)}>"

    def __str__(self) -> str:
        return self.bootstrap


def ssl_context(s: Settings) -> ssl.SSLContext:
    """The TLS context of ``s``: the CA file (else the system's CAs), the client certificate and key
    if given; broker host names are checked (aiokafka's ``create_ssl_context`` always does)."""
    password = s.kafka_ssl_key_password.get_secret_value() if s.kafka_ssl_key_password else None
    return create_ssl_context(cafile=s.kafka_ssl_cafile, certfile=s.kafka_ssl_certfile,
                              keyfile=s.kafka_ssl_keyfile, password=password)


def security_options(s: Settings) -> dict[str, Any]:
    """The aiokafka keyword arguments of the ``FLOWMON_KAFKA_*`` settings; every client gets the same.

    >>> security_options(Settings())
    {'security_protocol': 'PLAINTEXT'}
    >>> opts = security_options(Settings(broker="b:9093", kafka_security_protocol="SASL_SSL",
    ...     kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="flowmon", kafka_sasl_password="pw"))
    >>> sorted(opts), opts["sasl_mechanism"], type(opts["ssl_context"]).__name__
    (['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol', 'ssl_context'], 'SCRAM-SHA-256', 'SSLContext')
    """
    proto = s.kafka_security_protocol
    kw: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = ssl_context(s)
    if proto.startswith("SASL_"):
        assert s.kafka_sasl_password is not None  # Settings refuses SASL without one
        kw.update(sasl_mechanism=s.kafka_sasl_mechanism, sasl_plain_username=s.kafka_sasl_username,
                  sasl_plain_password=s.kafka_sasl_password.get_secret_value())
    return kw


def connection(s: Settings, bootstrap: str | None = None) -> Connection:
    """The :class:`Connection` of ``s``: ``bootstrap`` (the resolved one, e.g. an embedded broker's
    address) or ``s.broker``, with the security options of ``s``."""
    return Connection(bootstrap or s.broker, security_options(s))


def _conn(c: Connection | str) -> Connection:
    return c if isinstance(c, Connection) else Connection(c)

_TIMINGS_MS = (("session_timeout_s", "session_timeout_ms"), ("heartbeat_s", "heartbeat_interval_ms"),
               ("rebalance_timeout_s", "rebalance_timeout_ms"))


def group_timings(s: Settings) -> dict[str, float]:
    """The consumer-group timings of the configuration, as :func:`consumer` takes them.

    >>> group_timings(Settings(session_timeout_s=6, heartbeat_s=1, rebalance_timeout_s=8))
    {'session_timeout_s': 6.0, 'heartbeat_s': 1.0, 'rebalance_timeout_s': 8.0}
    """
    return {"session_timeout_s": s.session_timeout_s, "heartbeat_s": s.heartbeat_s,
            "rebalance_timeout_s": s.rebalance_timeout_s}


def consumer_options(conn: Connection | str, *, group: str | None = None, auto_commit: bool = False,
                     session_timeout_s: float | None = None, heartbeat_s: float | None = None,
                     rebalance_timeout_s: float | None = None, **options: Any) -> dict[str, Any]:
    """``AIOKafkaConsumer`` keyword arguments: the shared ones (see the module docstring), then ``options``.
    A timing left ``None`` is not passed (aiokafka's default applies)."""
    c = _conn(conn)
    kw: dict[str, Any] = {"bootstrap_servers": c.bootstrap, **c.security, "group_id": group,
                          "enable_auto_commit": auto_commit}
    seconds = {"session_timeout_s": session_timeout_s, "heartbeat_s": heartbeat_s,
               "rebalance_timeout_s": rebalance_timeout_s}
    for name, ms in _TIMINGS_MS:
        if seconds[name] is not None:
            kw[ms] = int(seconds[name] * 1000)
    kw.update(options)
    return kw


def consumer(conn: Connection | str, *topics: str, **kw: Any) -> AIOKafkaConsumer:
    """A consumer (not started) of ``topics`` (none: the caller assigns partitions); ``kw`` as
    :func:`consumer_options` takes them. Needs a running event loop."""
    return AIOKafkaConsumer(*topics, **consumer_options(conn, **kw))


def reader(conn: Connection | str, max_bytes: int = 8 << 20, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group that the caller ``assign()``\\s and ``seek()``\\s to read partitions
    to a known end (changelog restore): up to ``max_bytes`` per partition and fetch, and fetches
    that wait at most 50 ms, so reaching the end is not slowed by an idle poll."""
    return consumer(conn, max_partition_fetch_bytes=max_bytes, fetch_max_wait_ms=50, **options)


async def read_to_end(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition],
                      on_message: Callable[[TopicPartition, ConsumerRecord], None], *,
                      timeout_s: float | None = None, poll_ms: int = 500) -> None:
    """Assign ``tps`` to a started :func:`reader` and read each from its beginning to the end that
    ListOffsets gives when the call starts, calling ``on_message(tp, record)`` in offset order (a
    compacted topic's current state, a changelog). The consumer stays assigned there, so the caller
    may go on reading what comes next. ``TimeoutError`` after ``timeout_s`` (None: no limit).

    On Tansu that end is the last record batch's base offset + 1 (found by the benchmarks), not the
    log end, but a fetch returns whole batches, so reaching it means the last batch was read too
    (tests/integration/test_state.py writes batches)."""
    tps = list(tps)
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    begins = await consumer.beginning_offsets(tps)
    for tp in tps:
        # an explicit offset: seek_to_beginning() is lazy, and on Apache Kafka position() then
        # answered the log end (seen in tests), which silently read nothing
        consumer.seek(tp, begins[tp])
    pending = {tp for tp in tps if begins[tp] < ends[tp]}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        for tp, records in (await consumer.getmany(*pending, timeout_ms=poll_ms)).items():
            for record in records:
                on_message(tp, record)
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        if pending and deadline is not None and time.monotonic() > deadline:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            raise TimeoutError(f"reading {where}: not at its end after {timeout_s:g} s")


def producer(conn: Connection | str, **options: Any) -> AIOKafkaProducer:
    """A producer (not started); ``options`` are ``AIOKafkaProducer`` keyword arguments."""
    c = _conn(conn)
    return AIOKafkaProducer(bootstrap_servers=c.bootstrap, **c.security, **options)


def admin(conn: Connection | str, timeout_s: float = 30.0) -> AIOKafkaAdminClient:
    """An admin client (not started) whose requests time out after ``timeout_s``."""
    c = _conn(conn)
    return AIOKafkaAdminClient(bootstrap_servers=c.bootstrap, **c.security, request_timeout_ms=int(timeout_s * 1000))


# --- failures, in one line ----------------------------------------------------------------------

_AUTHN = (kerr.SaslAuthenticationFailed, kerr.AuthenticationFailedError, kerr.AuthenticationMethodNotSupported,
          kerr.UnsupportedSaslMechanismError, kerr.IllegalSaslStateError)
_AUTHZ = (kerr.TopicAuthorizationFailedError, kerr.GroupAuthorizationFailedError,
          kerr.ClusterAuthorizationFailedError, kerr.TransactionalIdAuthorizationFailed)


async def probe(conn: Connection | str, timeout_s: float = 10.0) -> BaseException | None:
    """Connect to each bootstrap server as the clients do (TCP, TLS handshake, SASL); ``None`` once one
    accepts us, else the first server's error (what aiokafka only logs when it cannot bootstrap)."""
    from aiokafka.conn import create_conn

    c = _conn(conn)
    first: BaseException | None = None
    for hostport in (h.strip() for h in c.bootstrap.split(",") if h.strip()):
        host, _, port = hostport.rpartition(":")
        try:
            link = await asyncio.wait_for(create_conn(host, int(port), client_id="flowmon-probe",
                                                      request_timeout_ms=int(timeout_s * 1000), **c.security),
                                          timeout_s)
        except (OSError, ValueError, kerr.KafkaError, asyncio.TimeoutError) as exc:
            first = first or exc
            continue
        link.close()
        return None
    return first


def reason(exc: BaseException, conn: Connection | str | None = None) -> str:
    """One line for a Kafka failure: authentication, authorization, TLS, or the error itself.

    >>> reason(kerr.TopicAuthorizationFailedError())
    'not authorized (an ACL is missing): [Error 29] TopicAuthorizationFailedError'
    >>> reason(ConnectionRefusedError(111, "Connect call failed"))
    'ConnectionRefusedError: [Errno 111] Connect call failed'
    """
    name = type(exc).__name__
    text = str(exc) if name in str(exc) else f"{name}: {exc}"
    if isinstance(exc, _AUTHN):
        who = ""
        if conn is not None and _conn(conn).protocol.startswith("SASL_"):
            sec = _conn(conn).security
            who = f" as {sec.get('sasl_plain_username')!r} ({sec.get('sasl_mechanism')})"
        return f"authentication failed{who}: {text}"
    if isinstance(exc, _AUTHZ):
        return f"not authorized (an ACL is missing): {text}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {text}"
    return text


async def explain(conn: Connection | str, exc: BaseException) -> str:
    """:func:`reason` of ``exc``; for a client that could not bootstrap, of the broker's own answer
    (found by :func:`probe`): a wrong password reads as such, not as "Unable to bootstrap"."""
    if isinstance(exc, kerr.KafkaConnectionError) and "bootstrap" in str(exc):
        cause = await probe(conn)
        if cause is not None:
            exc = cause
    return reason(exc, conn)


class _DropBootstrapErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to")


def quiet_bootstrap_log() -> None:
    """Drop aiokafka's per-server "Unable connect to" lines: one-shot commands report the failure
    themselves, once (:func:`explain`). Workers keep them (they retry and log)."""
    log = logging.getLogger("aiokafka")  # aiokafka.client logs there
    if not any(isinstance(f, _DropBootstrapErrors) for f in log.filters):
        log.addFilter(_DropBootstrapErrors())


async def grants_producer_ids(conn: Connection | str, timeout_s: float = 10.0) -> bool:
    """Whether the broker grants producer ids (InitProducerId), which the idempotent producer needs.

    Apache Kafka does; the embedded Tansu answers an error (so its producers run with
    ``acks=all`` and retries, without idempotence). A retriable error (a broker that has just
    started answers COORDINATOR_LOAD_IN_PROGRESS to its first request) is asked again, within
    ``timeout_s``. Raises when the broker could not be asked, or gave no final answer (unreachable,
    silent for ``timeout_s``, a refused login): that says nothing of what it grants (``flowmon
    agent`` asks again later).
    """
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.transaction import InitProducerIdRequest

    c = _conn(conn)
    deadline = time.monotonic() + timeout_s
    client = AIOKafkaClient(bootstrap_servers=c.bootstrap, request_timeout_ms=int(timeout_s * 1000), **c.security)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        while True:
            resp = await asyncio.wait_for(
                client.send(node, InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)),
                max(0.1, deadline - time.monotonic()))
            error = kerr.for_code(resp.error_code) if resp.error_code else None
            if error is None or not error.retriable:
                return error is None
            if time.monotonic() + 0.2 >= deadline:
                raise error(f"no final answer to InitProducerId within {timeout_s:g} s")
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def supports_idempotence(conn: Connection | str, timeout_s: float = 10.0) -> bool:
    """:func:`grants_producer_ids`, False when the broker could not be asked (a one-shot producer then
    runs without idempotence: ``acks=all`` and retries)."""
    try:
        return await grants_producer_ids(conn, timeout_s)
    except Exception:  # noqa: BLE001 - any refusal means: do not rely on it
        return False
