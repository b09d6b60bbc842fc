"""Configuration: one frozen Settings class, read from ``FLOWMON_*`` environment variables.

Every field has a default and a description; ``flowmon config dump`` prints them,
``flowmon config check`` validates the environment.

Examples
--------
>>> s = Settings()
>>> s.window_s
600
>>> Settings(window_s=60).window_s
60
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "REPO_ROOT", "SCHEMAS_DIR", "settings_table", "unknown_env", "parse_bootstrap"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The wire and ClickHouse schemas: package data (``pipeline/schemas`` is a link to the repository's
#: ``schemas/`` in a checkout, and a copy of it in a wheel), so an installed flowmon never guesses a repo root.
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def parse_bootstrap(value: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a bootstrap list ``'host:port[,host:port]'`` (``[::1]:9092`` for IPv6);
    ``ValueError`` saying what is wrong otherwise.

    >>> parse_bootstrap("127.0.0.1:9092, kafka-2:9093")
    [('127.0.0.1', 9092), ('kafka-2', 9093)]
    >>> parse_bootstrap("[::1]:9092")
    [('::1', 9092)]
    >>> parse_bootstrap("localhost")
    Traceback (most recent call last):
    ...
    ValueError: 'localhost': expected host:port, e.g. 127.0.0.1:9092
    >>> parse_bootstrap("kafka:99999")
    Traceback (most recent call last):
    ...
    ValueError: 'kafka:99999': the port must be a number from 1 to 65535
    """
    out = []
    for item in str(value).split(","):
        item = item.strip()
        host, sep, port = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or any(c in host for c in " /[]@") or not port:
            raise ValueError(f"{item!r}: expected host:port, e.g. 127.0.0.1:9092")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r}: the port must be a number from 1 to 65535")
        out.append((host, int(port)))
    return out


class Settings(BaseSettings):
    """Everything a flowmon process can be told. Environment: ``FLOWMON_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="FLOWMON_", frozen=True, extra="forbid")

    # --- where things are -------------------------------------------------------
    broker: str = Field(
        "embedded",
        description="Kafka bootstrap servers 'host:port[,host:port]', or 'embedded' to start "
        "the bundled Tansu broker on a free loopback port.",
    )
    clickhouse_dsn: str = Field(
        "chdb://./flowmon-data/chdb",
        description="ClickHouse: 'chdb://PATH' (in-process engine, one process per directory) or "
        "'http://user:pass@host:8123/db' (a ClickHouse server). Same client code for both.",
    )
    clickhouse_password: SecretStr | None = Field(
        None, description="Password for an http(s) DSN, any characters (never printed): it replaces the DSN's own, "
        "URL-encoded, so a deployment need not encode a secret into the URL itself.")
    data_dir: Path = Field(
        Path("./flowmon-data"),
        description="Local files: the embedded broker's log, Faust's data dir, worker logs of `flowmon demo`, and "
        "sql-endpoint.json (address and token of the live SQL endpoint, owner-only) / broker.json (the embedded "
        "broker's address).")
    topology: Path | None = Field(
        None,
        description="Topology YAML (VPCs, AZs, subnets with CIDRs). Used to place endpoints whose "
        "report omits subnet/az/vpc. Without it, such samples get subnet 'external'.",
    )

    # --- Kafka security (every client: the Faust app, producers, consumers, admin, produce, alerts) ----------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every flowmon Kafka client talks to the brokers: PLAINTEXT, SSL (TLS), "
        "SASL_PLAINTEXT or SASL_SSL (SASL over TLS: the one to use across a network).")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols).")
    kafka_sasl_username: str | None = Field(None, description="SASL user name (required with SASL_*).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (required with SASL_*; never printed).")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); "
        "unset: the system's CAs. Broker host names are always checked.")
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate (chain), for brokers that require TLS client authentication.")
    kafka_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of the client certificate (unset: it is in the certificate file).")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted client key (never printed).")

    # --- topics -----------------------------------------------------------------
    topic_prefix: str = Field("flow", description="Topic names are <prefix>-<name>-v<WIRE_VERSION>.")
    partitions: int = Field(8, ge=1, description="Partitions of every flowmon topic (created if missing). "
                            "The parallelism limit: one worker process per partition at most.")
    app_id: str = Field("flowmon", description="Faust app id = Kafka consumer group prefix.")

    # --- windows ----------------------------------------------------------------
    window_s: int = Field(600, ge=1, description="Tumbling window length, seconds of event time.")
    allowed_lateness_s: int = Field(
        120, ge=0, description="A window closes when the partition's event-time watermark passes its end by this much: "
        "a report may arrive this long after later ones (agents' clocks, publish jitter, retries) and still count."
    )
    source_idle_s: float = Field(
        5.0, gt=0,
        description="A reports partition that is caught up and gets nothing for this many wall-clock seconds is "
        "idle: it stops holding the watermark back.",
    )
    source_idle_lag_s: float = Field(
        120.0, ge=0,
        description="When every reports partition is idle, windows older than the wall clock less this lag close "
        "(a fleet gone silent, a finished simulation or backfill).",
    )
    mark_interval_s: float = Field(1.0, gt=0, description="How often the ingest stage sends progress marks.")

    # --- detection ----------------------------------------------------------------
    interval_s: int = Field(
        30, ge=1, description="The fleet-wide detection interval, seconds: every report is placed on this grid by "
        "the middle of its own interval (agents may start their intervals at any second, or use longer ones).")
    interval_lateness_s: int = Field(
        15, ge=0,
        description="A grid interval [g, g+interval_s) is scored when the watermark passes g + interval_s/2 by this "
        "much (at most allowed_lateness_s); later reports still count in their window, not in detection.",
    )
    detector: Literal["baseline", "gaussian"] = Field(
        "baseline", description="Detection model (detect.MODELS); 'baseline' is the measured choice. ('hst' and "
        "'page_hinkley' run in 'flowmon eval' only: their state needs pickle features the state loader refuses.)")
    detect_instances: bool = Field(
        True, description="Also learn and alert per reporting instance and remote subnet (attribution needs it)."
    )
    detector_key_ttl_s: int = Field(
        86_400, ge=0, description="A detector key (a subnet pair, or a reporting instance and remote subnet) that "
        "scores nothing for this long is forgotten, model and state: a fleet whose hosts come and go keeps the recent "
        "ones only. A key that comes back learns again. 0 = never.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of the topics flowmon creates.")
    state_message_bytes: int = Field(
        16 << 20, ge=1 << 20,
        description="Largest state record a worker writes: a pair-window's (~155 bytes per host reporting in its open "
        "intervals: 8,000 hosts of one subnet reporting to one other are ~1.2 MB) or the attribution stage's. The state "
        "topics are created with max.message.bytes a little above it and the worker's producer accepts it; a topic "
        "that exists keeps its own limit (raise it with kafka-configs).")

    # --- validation -------------------------------------------------------------
    max_future_s: int = Field(300, ge=0, description="Samples whose start is this far ahead of the worker clock are refused.")
    max_message_bytes: int = Field(
        1_000_000, ge=1024,
        description="Larger messages are dead-lettered as oversize (Kafka brokers refuse > ~1 MB by default anyway).")
    max_samples_per_report: int = Field(10_000, ge=1, description="Reports with more samples are dead-lettered as oversize.")

    # --- worker roles & sink -------------------------------------------------------
    roles: str = Field(
        "pipeline,sink",
        description="Comma list of what this process runs: pipeline (Faust agents: validate, pre-aggregate, "
        "windows) and sink (land windows and dead letters in ClickHouse). With chdb only one process may run sink.",
    )
    migrate: bool = Field(
        True, description="The sink applies pending ClickHouse schema steps when it starts. false: it only checks "
        "that none is pending and refuses to start otherwise; run `flowmon migrate` once instead (with a "
        "ClickHouse server: one migration job, not every worker).")
    sink_batch: int = Field(5000, ge=1, description="Max windows per ClickHouse insert.")
    sink_flush_s: float = Field(1.0, gt=0, description="Max seconds a window waits in the sink buffer.")
    sink_timeout_s: float = Field(
        60.0, gt=0, description="How long the sink waits for a ClickHouse server (http DSN) to answer one write "
        "before it counts the write as failed and retries it (writes are idempotent: one that did land is not "
        "doubled). A server that hangs or a network partition resets nothing; without this a write would wait "
        "clickhouse_connect's 5 minutes. Not used with chdb.")
    serve_port: int = Field(
        0, ge=0, description="Port of the SQL HTTP endpoint the chdb owner serves (0 = pick a free one)."
    )
    metrics_port: int = Field(0, ge=0, description="Port of /metrics (Prometheus) and /healthz (0 = disabled).")
    console_host: str = Field("127.0.0.1", description="Address `flowmon console` listens on (the console is "
                              "read-only and has no login: keep it on loopback, or put it behind your own proxy).")
    console_port: int = Field(8050, ge=0, le=65535, description="Port of `flowmon console` (0 = pick a free one).")
    gc_young_threshold: int = Field(
        100_000, ge=0, description="Python's cyclic garbage collector runs its young generation after this many new "
        "objects (Python's own default is 700; 0 keeps it). A worker holds millions of long-lived objects (windows, "
        "detector keys) that Python would rescan again and again: measured, a quarter of a worker's CPU went there.")
    health_interval_s: float = Field(10.0, gt=0, description="How often the worker reads its consumer groups' lag "
                                     "(flowmon_consumer_lag, /healthz).")
    health_stuck_s: float = Field(
        120.0, gt=0, description="/healthz turns unhealthy (503) when a consumer group has messages waiting and "
        "has committed nothing for this long, or the lag cannot be read for this long.")

    # --- Kafka group timings --------------------------------------------------------
    session_timeout_s: float = Field(10.0, gt=0, description="Consumer group session timeout: how long a dead worker "
                                   "keeps its partitions. Tansu answers a group join after about half of it (a worker's three "
                                   "groups, Faust's, the reports reader's and the sink's, join at once).")
    rebalance_timeout_s: float = Field(
        30.0, gt=0, description="Consumer group rebalance timeout: how long a rebalance waits for a member to finish "
        "its batch. A batch of a worker catching up on a backlog is 10-13 s of work; a member that misses this "
        "timeout is put out of the group and its whole batch is dropped and read again (Faust's own default: 60 s).")
    heartbeat_s: float = Field(1.0, gt=0, description="Consumer heartbeat interval.")
    commit_interval_s: float = Field(1.0, gt=0, description="Offset commit interval.")
    shutdown_grace_s: float = Field(
        20.0, gt=0, description="After SIGTERM or Ctrl-C a worker stops cleanly (finishes its batch, commits, leaves "
        "the group); if it has not within this many seconds (a broker that no longer answers), it exits anyway, "
        "as a crash would: what it had not committed is read again by the partitions' next owner.")

    @field_validator("broker")
    @classmethod
    def _broker_syntax(cls, v: str) -> str:
        if v != "embedded":
            try:
                parse_bootstrap(v)
            except ValueError as e:
                raise ValueError(f"{e} (or 'embedded'; several brokers: host:port,host:port)") from None
        return v

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, v: str) -> str:
        """A typo must not give a worker that runs nothing.

        >>> Settings(roles="pipeline").roles
        'pipeline'
        """
        roles = [r.strip() for r in v.split(",") if r.strip()]
        unknown = [r for r in roles if r not in ("pipeline", "sink")]
        if unknown or not roles:
            raise ValueError(f"unknown role(s) {', '.join(unknown) or '(none)'}: give pipeline, sink or pipeline,sink")
        return v

    @model_validator(mode="after")
    def _interval_lateness_within_allowed(self) -> Settings:
        if self.interval_lateness_s > self.allowed_lateness_s:
            raise ValueError(f"interval_lateness_s ({self.interval_lateness_s}) exceeds allowed_lateness_s "
                             f"({self.allowed_lateness_s}): a grid interval cannot wait longer than its window")
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        """Refuse security settings that would be ignored or cannot work (one message naming them)."""
        proto = self.kafka_security_protocol
        sasl, tls = proto.startswith("SASL_"), proto in ("SSL", "SASL_SSL")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"kafka_security_protocol {proto} needs kafka_sasl_username and kafka_sasl_password")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(f"kafka_sasl_username/password are set but kafka_security_protocol is {proto} "
                             "(use SASL_SSL)")
        files = [n for n in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password")
                 if getattr(self, n) is not None]
        if files and not tls:
            raise ValueError(f"{', '.join(files)} set but kafka_security_protocol is {proto} (use SSL or SASL_SSL)")
        if (self.kafka_ssl_keyfile or self.kafka_ssl_key_password) and not self.kafka_ssl_certfile:
            raise ValueError("kafka_ssl_keyfile/kafka_ssl_key_password need kafka_ssl_certfile")
        if proto != "PLAINTEXT" and self.broker == "embedded":
            raise ValueError(f"the embedded broker speaks PLAINTEXT only: set broker to use {proto}")
        return self

    def clickhouse_url(self) -> str:
        """``clickhouse_dsn`` with ``clickhouse_password`` (when set, for an http(s) DSN) URL-encoded into it:
        what every ClickHouse client connects to.

        >>> from urllib.parse import unquote, urlsplit
        >>> url = Settings(clickhouse_dsn="http://flowmon@ch:8123/flowmon", clickhouse_password="p@ss:w/rd%").clickhouse_url()
        >>> url
        'http://flowmon:p%40ss%3Aw%2Frd%25@ch:8123/flowmon'
        >>> unquote(urlsplit(url).password), urlsplit(url).hostname
        ('p@ss:w/rd%', 'ch')
        """
        if self.clickhouse_password is None or not self.clickhouse_dsn.startswith(("http://", "https://")):
            return self.clickhouse_dsn
        from urllib.parse import quote, urlsplit, urlunsplit
        parts = urlsplit(self.clickhouse_dsn)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0] or "default"
        secret = quote(self.clickhouse_password.get_secret_value(), safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{hostport}"))

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())


def settings_table() -> str:
    """The configuration reference as a Markdown table (the README embeds it; a test keeps it in sync)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = f.default if f.default is not None else ""
        rows.append(f"| `FLOWMON_{name.upper()}` | `{default}` | {f.description} |")
    return "\n".join(rows)


#: FLOWMON_* variables that are not settings but are read elsewhere (broker jar cache; test knobs; the
#: command's --debug).
OTHER_ENV = {"FLOWMON_CACHE_DIR", "FLOWMON_HYPOTHESIS_EXAMPLES", "FLOWMON_DEBUG"}


def unknown_env(environ: dict[str, str] | None = None) -> list[str]:
    """``FLOWMON_*`` variables that name no setting (typos would otherwise be ignored silently).

    >>> unknown_env({"FLOWMON_WINDOW_S": "60", "FLOWMON_WINDOWS_S": "60", "PATH": "/bin"})
    ['FLOWMON_WINDOWS_S']
    """
    import os
    env = os.environ if environ is None else environ
    known = {f"FLOWMON_{n.upper()}" for n in Settings.model_fields} | OTHER_ENV
    return sorted(k for k in env if k.startswith("FLOWMON_") and k not in known)
