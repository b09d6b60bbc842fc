"""Write closed windows and dead letters to ClickHouse.  *shell*

:class:`WindowSink` is a plain synchronous class around a clickhouse_connect client
(``pipeline.clickhouse.client.connect``: chdb or HTTP): no Kafka, no asyncio. The Faust
shell batches records and calls it from a thread executor.

Idempotency
-----------
A window may reach the sink twice (worker crash and re-emission, or a retried batch):

1. within a batch, windows with the same key ``(src_subnet, dst_subnet, window_s,
   window_start)`` are collapsed before the insert (the one with the latest
   ``closed_at`` is kept);
2. every insert carries ``insert_deduplication_token`` = a digest of the batch content
   (rows sorted by key, ``closed_at`` excluded), and the tables keep the tokens of
   their recent blocks (``non_replicated_deduplication_window``): the same batch
   inserted again, in any row order, is dropped by ClickHouse;
3. anything else (the same window inside two different batches) collapses in the
   ReplacingMergeTree; exact totals are read with ``FINAL`` or the ``*_final`` views.

Dead letters work the same way, keyed by ``(source_topic, source_partition,
source_offset, sample_index)``.

Examples
--------
The conversion to columns is pure:

>>> w = example_window()
>>> cols = window_columns([w, dict(w, closed_at=w["closed_at"] + 5)])  # a re-emitted copy
>>> len(cols["src_subnet"]), cols["window_start"], cols["rtt_hist"]
(1, [1700000400], [{64: 3, 80: 1}])
>>> batch_token(cols) == batch_token(window_columns([w]))
True

Writing needs ClickHouse (see tests/test_sink.py):

>>> from pipeline.clickhouse.client import connect  # doctest: +SKIP
>>> sink = WindowSink(connect("chdb://./flowmon-data/chdb"))  # doctest: +SKIP
>>> sink.write_windows([w])  # doctest: +SKIP
1
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["WindowSink", "WINDOW_COLUMNS", "DEADLETTER_COLUMNS", "ANOMALY_COLUMNS", "window_columns",
           "deadletter_columns", "anomaly_columns", "batch_token"]

#: flow_windows columns, in table order; all are fields of flow_window.v1.json.
WINDOW_COLUMNS: tuple[str, ...] = (
    "version", "src_subnet", "src_az", "src_vpc", "dst_subnet", "dst_az", "dst_vpc",
    "window_start", "window_s", "bytes_sent", "bytes_received", "bytes", "retransmissions",
    "timeouts", "flows", "samples", "hosts", "rtt_count", "rtt_sum_us", "rtt_mean_us",
    "rtt_p50_us", "rtt_p90_us", "rtt_p99_us", "rtt_hist", "closed_at",
)  # fmt: skip
#: The column types, as in schemas/clickhouse/001_flow_windows.sql: sent with each insert
#: so no DESCRIBE round trip is needed.
WINDOW_TYPES: tuple[str, ...] = (
    "UInt8", "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)",
    "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)",
    "DateTime('UTC')", "UInt32", "UInt64", "UInt64", "UInt64", "UInt64",
    "UInt64", "UInt64", "UInt64", "UInt32", "UInt64", "UInt64", "Float64",
    "Float64", "Float64", "Float64", "Map(UInt16, UInt64)", "DateTime64(3, 'UTC')",
)  # fmt: skip
_WINDOW_KEY = ("src_subnet", "dst_subnet", "window_s", "window_start")
# Columns copied as they are (every field but the converted ones).
_PLAIN = tuple(c for c in WINDOW_COLUMNS if c not in ("window_start", "rtt_hist", "closed_at"))

DEADLETTER_COLUMNS: tuple[str, ...] = (
    "version", "reason", "field", "detail", "stage", "source_topic", "source_partition",
    "source_offset", "sample_index", "samples", "payload", "payload_encoding", "at",
)  # fmt: skip
DEADLETTER_TYPES: tuple[str, ...] = (
    "UInt8", "LowCardinality(String)", "Nullable(String)", "String", "LowCardinality(String)",
    "LowCardinality(String)", "Int32", "Int64", "Nullable(Int32)", "UInt32", "String",
    "LowCardinality(String)", "DateTime64(3, 'UTC')",
)  # fmt: skip


#: flow_anomalies columns, in table order; all are fields of flow_anomaly.v1.json.
ANOMALY_COLUMNS: tuple[str, ...] = (
    "version", "alert_id", "event", "seq", "scope", "instance", "src_subnet", "src_az", "src_vpc",
    "dst_subnet", "dst_az", "dst_vpc", "metric", "observed", "expected", "score", "severity",
    "first_seen", "last_seen", "at", "interval_s", "window_start", "reason", "emitted_at",
)  # fmt: skip
ANOMALY_TYPES: tuple[str, ...] = (
    "UInt8", "String", "LowCardinality(String)", "UInt32", "LowCardinality(String)", "Nullable(String)",
    "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)",
    "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)", "Float64", "Float64",
    "Float64", "LowCardinality(String)", "DateTime('UTC')", "DateTime('UTC')", "DateTime('UTC')", "UInt32",
    "DateTime('UTC')", "Nullable(String)", "DateTime64(3, 'UTC')",
)  # fmt: skip


def anomaly_columns(events: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_anomaly.v1 dicts → one list per column of flow_anomalies, sorted by (alert_id, seq).

    >>> e = {c: None for c in ANOMALY_COLUMNS} | {"alert_id": "a", "seq": 0, "emitted_at": 2.5}
    >>> anomaly_columns([e, dict(e, emitted_at=3.0)])["emitted_at"]
    [3000]
    """
    latest = _latest(events, lambda e: (e["alert_id"], e["seq"]), "emitted_at")
    rows = [latest[k] for k in sorted(latest)]
    cols: dict[str, list] = {c: [e[c] for e in rows] for c in ANOMALY_COLUMNS}
    cols["emitted_at"] = [round(e["emitted_at"] * 1000) for e in rows]
    return cols


#: flow_attributions columns; all are fields of flow_attribution.v1.json.
ATTRIBUTION_COLUMNS: tuple[str, ...] = (
    "version", "alert_id", "at", "scope", "instance", "src_subnet", "dst_subnet", "metric", "family", "cause",
    "element_kind", "element", "confidence", "purity", "reporters_crossing", "reporters_degraded", "degraded",
    "keys_scored", "keys_degraded", "exonerating", "exonerating_reporters", "keys_attributed", "evidence_level",
    "attributed_at",
)  # fmt: skip
ATTRIBUTION_TYPES: tuple[str, ...] = (
    "UInt8", "String", "DateTime('UTC')", "LowCardinality(String)", "Nullable(String)", "LowCardinality(String)",
    "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)", "LowCardinality(String)",
    "Nullable(String)", "Nullable(String)", "Float64", "Float64", "UInt32", "UInt32", "Array(String)", "UInt32",
    "UInt32", "UInt32", "Array(String)", "UInt32", "LowCardinality(String)", "DateTime64(3, 'UTC')",
)  # fmt: skip
NHI_COLUMNS: tuple[str, ...] = ("version", "scope_kind", "scope", "status", "start", "end", "element", "updated")
NHI_TYPES: tuple[str, ...] = ("UInt8", "LowCardinality(String)", "String", "LowCardinality(String)", "DateTime('UTC')",
                              "Nullable(DateTime('UTC'))", "String", "DateTime64(3, 'UTC')")


def attribution_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_attribution.v1 dicts → columns of flow_attributions, one row per alert_id (latest wins)."""
    latest = _latest(records, lambda r: (r["alert_id"],), "attributed_at")
    rows = [latest[k] for k in sorted(latest)]
    cols: dict[str, list] = {c: [r[c] for r in rows] for c in ATTRIBUTION_COLUMNS}
    cols["attributed_at"] = [round(r["attributed_at"] * 1000) for r in rows]
    return cols


def nhi_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_nhi.v1 dicts → columns of nhi, one row per (scope_kind, scope, start) (latest wins)."""
    latest = _latest(records, lambda r: (r["scope_kind"], r["scope"], r["start"]), "updated")
    rows = [latest[k] for k in sorted(latest)]
    cols: dict[str, list] = {c: [r[c] for r in rows] for c in NHI_COLUMNS}
    cols["updated"] = [round(r["updated"] * 1000) for r in rows]
    return cols


def example_window(**overrides: Any) -> dict[str, Any]:
    """A valid flow_window.v1 record (for examples and tests).

    >>> example_window(bytes=7)["bytes"]
    7
    """
    w: dict[str, Any] = {
        "version": 1, "src_subnet": "subnet-1a", "src_az": "use1-az1", "src_vpc": "vpc-1",
        "dst_subnet": "subnet-1c", "dst_az": "use1-az2", "dst_vpc": "vpc-1",
        "window_start": 1_700_000_400, "window_s": 600,
        "bytes_sent": 420, "bytes_received": 10_485_760, "bytes": 10_486_180,
        "retransmissions": 1, "timeouts": 0, "flows": 4, "samples": 4, "hosts": 2,
        "rtt_count": 4, "rtt_sum_us": 4800, "rtt_mean_us": 1200.0,
        "rtt_p50_us": 1150.0, "rtt_p90_us": 1400.0, "rtt_p99_us": 1400.0,
        "rtt_hist": {"64": 3, "80": 1}, "closed_at": 1_700_001_060.25,
    }  # fmt: skip
    w.update(overrides)
    return w


def _latest(records: Iterable[dict[str, Any]], key: Any, version: str) -> dict[tuple, dict[str, Any]]:
    """One record per key, the one with the highest ``version`` field (what ReplacingMergeTree keeps)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        k = key(r)
        prev = latest.get(k)
        if prev is None or r[version] >= prev[version]:
            latest[k] = r
    return latest


def _window_key(w: dict[str, Any]) -> tuple:
    return (w["src_subnet"], w["dst_subnet"], w["window_s"], w["window_start"])


def window_columns(windows: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_window.v1 dicts → one list per column of flow_windows, sorted by key.

    Windows with the same key are collapsed (latest ``closed_at`` wins). Times become
    integers (Unix seconds for ``window_start``, milliseconds for ``closed_at``), which
    clickhouse_connect writes to ``DateTime``/``DateTime64(3)`` without conversion;
    ``rtt_hist`` keys become integers.

    >>> window_columns([example_window(closed_at=1.5)])["closed_at"]
    [1500]
    """
    latest = _latest(windows, _window_key, "closed_at")
    rows = [latest[k] for k in sorted(latest)]
    cols: dict[str, list] = {c: [w[c] for w in rows] for c in _PLAIN}
    cols["window_start"] = [int(w["window_start"]) for w in rows]
    cols["rtt_hist"] = [{int(b): n for b, n in w["rtt_hist"].items()} for w in rows]
    cols["closed_at"] = [round(w["closed_at"] * 1000) for w in rows]
    return {c: cols[c] for c in WINDOW_COLUMNS}


def batch_token(columns: dict[str, list],
                exclude: tuple[str, ...] = ("closed_at", "at", "emitted_at", "attributed_at", "updated")) -> str:
    """Deterministic ``insert_deduplication_token`` of a batch: a digest of its columns.

    The time of emission (``closed_at`` / ``at``) is left out, so a re-emitted identical
    batch gets the same token. Rows must already be in a canonical order
    (:func:`window_columns` and :func:`deadletter_columns` sort them by key).

    >>> batch_token({"a": [1, 2], "closed_at": [3, 4]}) == batch_token({"a": [1, 2], "closed_at": [0, 0]})
    True
    """
    payload = orjson.dumps([[name, values] for name, values in columns.items() if name not in exclude], option=orjson.OPT_NON_STR_KEYS)
    return "flowmon-" + hashlib.blake2b(payload, digest_size=16).hexdigest()


def _deadletter_key(r: dict[str, Any]) -> tuple:
    src = r["source"]
    idx = r.get("sample_index")
    return (src["topic"], src["partition"], src["offset"], -1 if idx is None else idx)


def deadletter_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """deadletter.v1 dicts → one list per column of the deadletter table, sorted by key.

    ``payload`` becomes JSON text (``payload_encoding`` 'json'); ``payload_b64`` is kept
    as its base64 text ('base64'); neither gives '' ('').

    >>> cols = deadletter_columns([{"version": 1, "reason": "malformed_json", "detail": "bad", "stage": "ingest",
    ...     "source": {"topic": "t", "partition": 0, "offset": 9}, "samples": 0, "payload_b64": "e30=", "at": 2.0}])
    >>> cols["payload"], cols["payload_encoding"], cols["sample_index"], cols["at"]
    (['e30='], ['base64'], [None], [2000])
    """
    latest = _latest(records, _deadletter_key, "at")
    cols: dict[str, list] = {c: [] for c in DEADLETTER_COLUMNS}
    for key in sorted(latest):
        r = latest[key]
        src = r["source"]
        if "payload" in r:
            payload, encoding = orjson.dumps(r["payload"]).decode(), "json"
        elif r.get("payload_b64") is not None:
            payload, encoding = r["payload_b64"], "base64"
        else:
            payload, encoding = "", ""
        cols["version"].append(r.get("version", 1))
        cols["reason"].append(r["reason"])
        cols["field"].append(r.get("field"))
        cols["detail"].append(r["detail"])
        cols["stage"].append(r["stage"])
        cols["source_topic"].append(src["topic"])
        cols["source_partition"].append(src["partition"])
        cols["source_offset"].append(src["offset"])
        cols["sample_index"].append(r.get("sample_index"))
        cols["samples"].append(r["samples"])
        cols["payload"].append(payload)
        cols["payload_encoding"].append(encoding)
        cols["at"].append(round(r["at"] * 1000))
    return cols


class WindowSink:
    """Column-wise, idempotent writer of closed windows and dead letters.

    Parameters
    ----------
    client
        A clickhouse_connect client whose current database has been migrated
        (:func:`pipeline.clickhouse.migrations.migrate`).
    windows_table, deadletter_table
        Table names (defaults match schemas/clickhouse).

    Attributes ``rows_written``, ``batches_written`` and ``last_insert_s`` count what
    was sent (a batch ClickHouse drops as a duplicate still counts: the server does
    not say).
    """

    def __init__(self, client: Any, windows_table: str = "flow_windows", deadletter_table: str = "deadletter",
                 anomalies_table: str = "flow_anomalies"):
        self.client = client
        self.anomalies_table = anomalies_table
        self.windows_table = windows_table
        self.deadletter_table = deadletter_table
        self.rows_written = 0
        self.batches_written = 0
        self.last_insert_s = 0.0

    def _insert(self, table: str, columns: dict[str, list], types: tuple[str, ...]) -> int:
        n = len(next(iter(columns.values())))
        if n == 0:
            return 0
        t0 = time.perf_counter()
        self.client.insert(
            table,
            list(columns.values()),
            column_names=list(columns),
            column_type_names=list(types),
            column_oriented=True,
            settings={"insert_deduplication_token": batch_token(columns)},
        )
        self.last_insert_s = time.perf_counter() - t0
        self.rows_written += n
        self.batches_written += 1
        return n

    def write_windows(self, windows: list[dict[str, Any]]) -> int:
        """Insert flow_window.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        if not windows:
            return 0
        return self._insert(self.windows_table, window_columns(windows), WINDOW_TYPES)

    def write_anomalies(self, events: list[dict[str, Any]]) -> int:
        """Insert flow_anomaly.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        if not events:
            return 0
        return self._insert(self.anomalies_table, anomaly_columns(events), ANOMALY_TYPES)

    def write_attributions(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_attribution.v1 dicts."""
        if not records:
            return 0
        return self._insert("flow_attributions", attribution_columns(records), ATTRIBUTION_TYPES)

    def write_nhi(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_nhi.v1 dicts."""
        if not records:
            return 0
        return self._insert("nhi", nhi_columns(records), NHI_TYPES)

    def write_deadletters(self, records: list[dict[str, Any]]) -> int:
        """Insert deadletter.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        if not records:
            return 0
        return self._insert(self.deadletter_table, deadletter_columns(records), DEADLETTER_TYPES)
