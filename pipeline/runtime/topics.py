"""Topic names and their creation. Names carry the wire version (``<prefix>-<name>-v1``).

Examples
--------
>>> from pipeline.config import Settings
>>> t = Topics.from_settings(Settings())
>>> t.reports, t.pairs, t.windows, t.deadletter, t.state, t.anomalies
('flow-reports-v1', 'flow-pairs-v1', 'flow-windows-v1', 'flow-deadletter-v1', 'flow-window-state-v1', 'flow-anomalies-v1')
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.wire.contract import topic_name

__all__ = ["Topics", "ensure_topics", "setup_topics", "STATE_FRAMING"]

#: What a state topic takes above the largest state record: the record batch's header, the key and headers.
STATE_FRAMING = 64 << 10


@dataclass(frozen=True)
class Topics:
    reports: str  # agents -> pipeline (users produce here)
    pairs: str  # ingest -> aggregate, partitioned by subnet pair (internal)
    windows: str  # closed 10-minute windows (users may subscribe)
    deadletter: str  # refused input, with reasons
    state: str  # window state of each pairs partition (compacted; partition p holds pairs partition p's state)
    anomalies: str  # alert lifecycle events (users subscribe: flowmon alerts)
    health: str  # per-interval health of every key + alert openings, from every pairs partition (1 partition)
    attributions: str  # one verdict per opened alert (infrastructure / workload / undetermined)
    nhi: str  # Network Health Indicator: degraded periods per AZ, AZ pair, subnet
    attribution_state: str  # the attribution stage's restart point and NHI state (compacted, 1 partition)
    monitors: str  # monitor definitions (compacted, 1 partition; key = name, no value = deleted)
    monitor_windows: str  # per (monitor, subnet pair, window): the pair window's counters
    monitor_nhi: str  # per (monitor, NHI period): the periods of the scopes that touch a monitor
    partitions: int
    replication: int
    #: largest state record (``Settings.state_message_bytes``): the state topics take it, with room for a batch's framing
    state_bytes: int = 16 << 20

    @classmethod
    def from_settings(cls, s: Settings) -> Topics:
        def n(x: str) -> str:
            return topic_name(s.topic_prefix, x)
        return cls(n("reports"), n("pairs"), n("windows"), n("deadletter"), n("window-state"), n("anomalies"), n("health"), n("attributions"), n("nhi"),
                   n("attribution-state"), n("monitors"), n("monitor-windows"), n("monitor-nhi"), s.partitions,
                   s.replication_factor, s.state_message_bytes)

    def all(self) -> list[str]:
        return [self.reports, self.pairs, self.windows, self.deadletter, self.state, self.anomalies, self.health,
                self.attributions, self.nhi, self.attribution_state, self.monitors, self.monitor_windows,
                self.monitor_nhi]

    def configs_of(self, topic: str) -> dict[str, str]:
        """The configuration a topic is created with: the state topics are compacted and take a state record
        of up to ``state_bytes`` (a big pair-window's is over Kafka's default 1 MiB); the monitor definitions
        are compacted.

        >>> t = Topics(*"abcdefghijklm", partitions=4, replication=1, state_bytes=2 << 20)
        >>> t.configs_of(t.state), t.configs_of(t.monitors), t.configs_of(t.reports)
        ({'cleanup.policy': 'compact', 'max.message.bytes': '2162688'}, {'cleanup.policy': 'compact'}, {})
        """
        if topic in (self.state, self.attribution_state):
            return {"cleanup.policy": "compact", "max.message.bytes": str(self.state_bytes + STATE_FRAMING)}
        return {"cleanup.policy": "compact"} if topic == self.monitors else {}

    @property
    def state_fetch_bytes(self) -> int:
        """What a restore asks per partition and fetch: at least the largest state record a state topic takes."""
        return max(8 << 20, self.state_bytes + STATE_FRAMING)

    def partitions_of(self, topic: str) -> int:
        """The fleet-wide stages read one partition: every pairs partition's health meets in one place; the
        monitor definitions are one ordered log."""
        return 1 if topic in (self.health, self.attribution_state, self.monitors) else self.partitions


async def ensure_topics(conn: kafka.Connection | str, topics: Topics, timeout_s: float = 30.0,
                        names: list[str] | None = None) -> None:
    """Create flowmon's topics (or only ``names`` of them) with the configured partitions if they do not
    exist yet. Topics that exist need no more than DESCRIBE (implied by READ or WRITE): a client
    allowed to write the reports topic only can ensure that topic."""
    wanted = list(names) if names is not None else topics.all()
    admin = kafka.admin(conn, timeout_s)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, topics.partitions_of(t), topics.replication, topic_configs=topics.configs_of(t))
                   for t in wanted if t not in existing]
        if missing:
            try:
                resp = await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                resp = None
            # per-topic errors come back in the response, not raised: a missing CREATE ACL says so here
            # instead of a timeout below (36 = the topic exists: created meanwhile, or not DESCRIBE-able)
            for topic, code, *msg in getattr(resp, "topic_errors", ()):
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise for_code(code)(f"cannot create topic {topic}: {msg[0] if msg and msg[0] else ''}".rstrip(": "))
        # wait until the metadata shows them
        for _ in range(100):
            if set(wanted) <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topics {wanted} not visible after creation")
    finally:
        await admin.close()


def setup_topics(s: Settings, conn: kafka.Connection | str, only: tuple[str, ...] | None = None) -> Topics:
    """Create the topics of ``s`` through ``conn`` if they do not exist yet (blocking: runs its own
    event loop, for commands outside one); return their names. ``only``: just these of them, by
    field name (``("reports",)``: what a producer needs)."""
    topics = Topics.from_settings(s)
    names = None if only is None else [getattr(topics, f) for f in only]
    asyncio.run(ensure_topics(conn, topics, names=names))
    return topics
