"""Shell: the Faust app and its topics. Agents are wired in ``runtime.agents``.

Window state is not a Faust ``Table``: Faust's assignor placed the table's changelog
partitions independently of the pairs partitions once a worker was replaced (seen in
the SIGKILL test: a worker owning pairs partitions 1 and 3 restored changelog partition
0 only), so a restarted worker lost state. The state lives instead in its own compacted
topic, partition p holding pairs partition p's windows, written through the same
producer (flushed before every offset commit) and read back by ``runtime.restore`` whenever a
partition is (re)assigned.

Every worker runs the same Faust topology (aggregate, attribute, monitors) in one consumer
group, ``<app_id>``; the reports are read below Faust, in the group ``<app_id>-ingest``
(``runtime.agents.ingest``); the ClickHouse sink is a separate consumer group (``runtime.land``),
run by the processes whose ``roles`` include ``sink``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faust
from faust.tables import TableManager

from pipeline.config import Settings
from pipeline.runtime.kafka import Connection
from pipeline.runtime.metrics import Metrics
from pipeline.runtime.topics import Topics

__all__ = ["App", "NoTables", "Flow", "create_app", "faust_credentials"]


class NoTables(TableManager):
    """Faust's table manager for an app that declares no tables (window state has a topic of its own, see
    above). Faust's own waits a second at every start for tables declared late before it lets the app's
    consumer subscribe: that second delayed every worker's group join, and there is nothing to wait for."""

    async def on_start(self) -> None:  # Faust's own, without its ``await self.sleep(1.0)`` first
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class App(faust.App):
    """A ``faust.App`` whose :meth:`early_task` coroutines start as soon as its services are up.

    Faust starts ``app.task`` coroutines only once its own consumer group has its first assignment. The
    reports reader and the ClickHouse sink run consumer groups of their own (``runtime.agents.ingest``,
    ``runtime.land``), so as app tasks they joined theirs only after Faust's had been joined: on a broker
    that holds a group's first join back (Tansu: half the session timeout), one join after the other. As
    early tasks all three groups join at once; neither reader needs anything of Faust's group (they send
    through the app's producer, which is up by then).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._early_tasks: list = []

    def early_task(self, fun):
        """Decorator: run ``fun()`` (no arguments) as soon as the app's services have started."""
        self._early_tasks.append(fun)
        return fun

    async def on_started(self) -> None:
        for fun in self._early_tasks:
            self.add_future(fun())
        await super().on_started()


@dataclass
class Flow:
    """Everything the agents need: settings, app and topics."""

    settings: Settings
    conn: Connection
    app: App
    topics: Topics
    reports: faust.TopicT
    pairs: faust.TopicT
    windows: faust.TopicT
    deadletter: faust.TopicT
    health: faust.TopicT
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def bootstrap(self) -> str:
        return self.conn.bootstrap


def faust_credentials(conn: Connection) -> faust.types.auth.CredentialsT | None:
    """The Faust ``broker_credentials`` of ``conn``: Faust hands its consumer and producer the same
    aiokafka options as :mod:`pipeline.runtime.kafka` gives every other client (a test checks it
    through Faust's own mapping, ``credentials_to_aiokafka_auth``)."""
    sec = conn.security
    proto = conn.protocol
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(sec["ssl_context"])
    # SASL_PLAINTEXT, or SASL_SSL when a TLS context is given (Faust picks the protocol from it)
    return faust.SASLCredentials(username=sec["sasl_plain_username"], password=sec["sasl_plain_password"],
                                 mechanism=sec["sasl_mechanism"], ssl_context=sec.get("ssl_context"))


def create_app(settings: Settings, conn: Connection | str) -> Flow:
    """Build the Faust app for ``conn`` (its bootstrap 'host:port[,host:port]' and security; a string:
    PLAINTEXT). Agents not yet installed."""
    if isinstance(conn, str):
        conn = Connection(conn)
    topics = Topics.from_settings(settings)
    brokers = [f"kafka://{b.strip()}" for b in conn.bootstrap.split(",") if b.strip()]
    app = App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(conn),
        store="memory://",
        TableManager=NoTables,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_linger=0.005,
        # the largest state record (a big pair-window's) is what the producer must take: the other topics' messages
        # are cut or bounded below their own limits (pairs and health chunks, windows by max_message_bytes)
        producer_max_request_size=max(settings.max_message_bytes * 2, 1_048_576, settings.state_message_bytes),
        consumer_max_fetch_size=max(settings.max_message_bytes * 2, 4 * 1_048_576),
    )

    def topic(name: str, **kw):
        return app.topic(name, partitions=topics.partitions_of(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw", **kw)

    return Flow(settings, conn, app, topics, topic(topics.reports), topic(topics.pairs),
                topic(topics.windows), topic(topics.deadletter), topic(topics.health))
