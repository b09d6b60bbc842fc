"""Write what the pipeline emits to ClickHouse: windows, anomaly events, attributions, NHI periods, monitors, dead letters.  *shell*

:class:`WindowSink` is a plain synchronous class around a clickhouse_connect client
(``pipeline.clickhouse.client.connect``: chdb or HTTP): no Kafka, no asyncio. The
sink's consumer (:mod:`pipeline.runtime.land`) batches records and calls it from a
thread executor.

Columns
-------
The tables are defined once, in ``schemas/clickhouse/*.sql``; the sink reads them
(:mod:`pipeline.clickhouse.columns`) rather than restating them. Per table it takes
from the SQL: the columns it writes and their order and types (sent with each insert,
so no DESCRIBE round trip is needed), the Python → ClickHouse conversion of each value
where the type asks for one (``DateTime``: integer seconds; ``DateTime64(p)``: integer
``10**p`` fractions of a second; ``Map`` with integer keys: JSON's string keys become
integers), the dedup key (``ORDER BY``) and the version column
(``ReplacingMergeTree(v)``). Every column is a field of the record of the same name
(:data:`SOURCES` names the wire schema of each table), except the ones listed in
:data:`DERIVED`. ``tests/clickhouse/test_columns.py`` checks both against ``DESCRIBE
TABLE`` and the wire schemas. ``instance_windows`` is fed by the closed windows too: one
row per entry of a window's ``instances``, with the window's own fields the entry lacks
(:data:`ENTRIES`); the sink writes it from the very records of each ``flow_windows``
batch, so the two tables never disagree once a batch has landed.

Idempotency
-----------
A record may reach the sink twice (worker crash and re-emission, or a retried batch):

1. within a batch, records with the same key (the table's ``ORDER BY``, e.g.
   ``(src_subnet, dst_subnet, window_s, window_start)`` for windows) are collapsed
   before the insert (the one with the greatest version column, e.g. ``closed_at``, is
   kept);
2. every insert carries ``insert_deduplication_token`` = a digest of the whole batch
   (rows sorted by key, every column including the version): the tables keep the tokens
   of their recent blocks (``non_replicated_deduplication_window``), so the very same
   batch inserted again (a retried write, a batch read again after its offsets were
   not committed), in any row order, is dropped by ClickHouse. The version is part of
   the digest so that a deduplicated insert can never leave other rows standing: a
   record emitted again later (a re-emission after a crash, another run) carries a
   later version, is inserted, and wins;
3. anything else (the same record inside two different batches) collapses in the
   ReplacingMergeTree; exact totals are read with ``FINAL`` or the ``*_final`` views.

Dead letters are keyed by ``(source_topic, source_partition, source_offset,
sample_index)``, a NULL ``sample_index`` first.

Examples
--------
The conversion to columns is pure:

>>> w = {"version": 1, "src_subnet": "subnet-1a", "src_az": "use1-az1", "src_vpc": "vpc-1",
...      "dst_subnet": "subnet-1c", "dst_az": "use1-az2", "dst_vpc": "vpc-1", "window_start": 1_700_000_400,
...      "window_s": 600, "bytes_sent": 420, "bytes_received": 10_485_760, "bytes": 10_486_180,
...      "retransmissions": 1, "timeouts": 0, "flows": 4, "samples": 4, "hosts": 2, "rtt_count": 4,
...      "rtt_sum_us": 4800, "rtt_mean_us": 1200.0, "rtt_p50_us": 1150.0, "rtt_p90_us": 1400.0,
...      "rtt_p99_us": 1400.0, "rtt_hist": {"64": 3, "80": 1}, "closed_at": 1_700_001_060.25}
>>> cols = window_columns([w, dict(w, closed_at=w["closed_at"] + 5)])  # a re-emitted copy
>>> len(cols["src_subnet"]), cols["window_start"], cols["rtt_hist"], cols["closed_at"]
(1, [1700000400], [{64: 3, 80: 1}], [1700001065250])
>>> batch_token(cols) == batch_token(window_columns([w]))  # the version (closed_at) is part of the batch
False
>>> batch_token(window_columns([w])) == batch_token(window_columns([dict(w)]))
True

Writing needs ClickHouse (see tests/clickhouse/test_sink.py):

>>> from pipeline.clickhouse.client import connect  # doctest: +SKIP
>>> sink = WindowSink(connect("chdb://./flowmon-data/chdb"))  # doctest: +SKIP
>>> sink.write_windows([w])  # doctest: +SKIP
1
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from itertools import chain
from dataclasses import replace
from operator import itemgetter
from typing import Any

import orjson

from pipeline.clickhouse.columns import Table, describe_differences, tables
from pipeline.wire.contract import schema

__all__ = ["WindowSink", "WINDOW_COLUMNS", "DEADLETTER_COLUMNS", "ANOMALY_COLUMNS", "ATTRIBUTION_COLUMNS",
           "NHI_COLUMNS", "INSTANCE_COLUMNS", "SOURCES", "ENTRIES", "DERIVED", "SinkTable", "SINK_TABLES", "table_columns", "window_columns",
           "deadletter_columns", "anomaly_columns", "attribution_columns", "nhi_columns", "batch_token"]

#: The tables the sink writes, and the wire schema (schemas/wire/<name>.json) of the
#: topic that feeds each.
SOURCES: dict[str, str] = {
    "flow_windows": "flow_window.v1",
    "deadletter": "deadletter.v1",
    "flow_anomalies": "flow_anomaly.v1",
    "flow_attributions": "flow_attribution.v1",
    "nhi": "flow_nhi.v1",
    "monitors": "flow_monitor.v1",
    "monitor_windows": "flow_monitor_window.v1",
    "monitor_nhi": "flow_monitor_nhi.v1",
    "instance_windows": "flow_window.v1",
}

#: Tables whose rows are the entries of a list field of their topic's records (each entry with the record's
#: own fields it lacks): the table -> that field. A record without it (or ``null``) gives no row.
ENTRIES: dict[str, str] = {
    "instance_windows": "instances",
}

#: Columns that are not a field of the record of the same name, with where they come from.
DERIVED: dict[str, dict[str, str]] = {
    "deadletter": {
        "source_topic": "source.topic",
        "source_partition": "source.partition",
        "source_offset": "source.offset",
        "payload": "payload as JSON text, else payload_b64, else ''",
        "payload_encoding": "'json' (payload), 'base64' (payload_b64) or ''",
    },
    # the sink lands the monitors topic's messages, tombstones included (pipeline.monitors.evaluate.monitor_row;
    # ``remote`` is the definition's field, its 'any' stored as ['any'])
    "monitors": {
        "definition": "the message's value (the definition JSON), '' for a tombstone",
        "deleted": "1 for a tombstone (no value), else 0",
        "updated": "the message's Kafka timestamp",
    },
}


def _converter(type_name: str) -> Callable[[Any], Any] | None:
    """The Python → ClickHouse conversion a column of this type needs (None: the value as it is).

    >>> _converter("DateTime64(3, 'UTC')")(2.5), _converter("Nullable(DateTime('UTC'))")(None)
    (2500, None)
    >>> _converter("Map(UInt16, UInt64)")({"64": 3}), _converter("String") is None
    ({64: 3}, True)
    """
    nullable = type_name.startswith("Nullable(")
    base = type_name[len("Nullable("):-1] if nullable else type_name
    convert: Callable[[Any], Any]
    if base.startswith("DateTime64("):
        scale = 10 ** int(base[len("DateTime64("):].split(",")[0].rstrip(")"))
        convert = lambda v: round(v * scale)  # noqa: E731
    elif base.startswith("DateTime"):
        convert = int
    elif base.startswith(("Map(UInt", "Map(Int")):
        convert = lambda m: {int(k): n for k, n in m.items()}  # noqa: E731
    else:
        return None
    if nullable:
        inner = convert
        convert = lambda v: None if v is None else inner(v)  # noqa: E731
    return convert


def _key_function(table: Table) -> Callable[[dict[str, Any]], tuple]:
    """Row → its sort key (``ORDER BY``) as a tuple; a NULL in a Nullable key column sorts first."""
    names = table.order_by
    getter = itemgetter(*names)
    nullable = [i for i, t in enumerate(table.types(names)) if t.startswith("Nullable(")]
    if len(names) == 1 and not nullable:
        return lambda r: (getter(r),)
    if not nullable:
        return getter  # type: ignore[return-value]
    if len(names) == 1:
        return lambda r: ((r[names[0]] is not None, r[names[0]]),)

    def key(r: dict[str, Any]) -> tuple:
        k = list(getter(r))
        for i in nullable:
            k[i] = (k[i] is not None, k[i])
        return tuple(k)

    return key


def _deadletter_row(r: dict[str, Any]) -> dict[str, Any]:
    """A deadletter.v1 record with the :data:`DERIVED` columns (and its optional fields) filled in."""
    src = r["source"]
    if "payload" in r:
        payload, encoding = orjson.dumps(r["payload"]).decode(), "json"
    elif r.get("payload_b64") is not None:
        payload, encoding = r["payload_b64"], "base64"
    else:
        payload, encoding = "", ""
    return {**r, "version": r.get("version", 1), "field": r.get("field"), "sample_index": r.get("sample_index"),
            "source_topic": src["topic"], "source_partition": src["partition"], "source_offset": src["offset"],
            "payload": payload, "payload_encoding": encoding}


def _entry_rows(field: str, carry: tuple[str, ...]) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Record → one row per entry of its list ``field``: the entry's fields and the record's ``carry`` fields
    (those of the table's columns the entries do not have), see :data:`ENTRIES`.

    >>> rows = _entry_rows("instances", ("w",))
    >>> rows({"w": 1, "n": 5, "instances": [{"instance": "a", "n": 2}, {"instance": "b", "n": 3}]})
    [{'w': 1, 'instance': 'a', 'n': 2}, {'w': 1, 'instance': 'b', 'n': 3}]
    >>> rows({"w": 1, "n": 5}), rows({"w": 1, "n": 5, "instances": None})
    ([], [])
    """

    def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
        entries = r.get(field)
        if not entries:
            return []
        base = {c: r[c] for c in carry}
        return [{**base, **e} for e in entries]

    return rows


def _entry_fields(name: str) -> tuple[str, ...]:
    """The fields of one entry of :data:`ENTRIES`' list field, from the wire schema of ``name``'s topic."""
    props = schema(SOURCES[name].rsplit(".", 1)[0])["properties"][ENTRIES[name]]
    return tuple(props["items"]["properties"])


def _sink_table(name: str) -> SinkTable:
    table = tables()[name]
    if name in ENTRIES:
        own = _entry_fields(name)
        return SinkTable(table, expand=_entry_rows(ENTRIES[name], tuple(c for c in table.insertable if c not in own)))
    return SinkTable(table, _deadletter_row if name == "deadletter" else None)


class SinkTable:
    """How the sink fills one table: the table (from the SQL), and what each record needs first.

    ``prepare`` turns a record into a row (a dict holding every column) when some
    columns are :data:`DERIVED`; otherwise the record is the row. ``expand`` instead
    turns a record into any number of rows (:data:`ENTRIES`).
    """

    def __init__(self, table: Table, prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 expand: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None) -> None:
        if table.version is None:
            raise ValueError(f"{table.name}: the sink collapses rows like a ReplacingMergeTree(version)")
        if not table.order_by or not set(table.order_by) <= set(table.names):
            raise ValueError(f"{table.name}: the sink's dedup key is ORDER BY, which must list columns: {table.order_by}")
        self.table = table
        self.prepare = prepare
        self.expand = expand
        #: The columns written, in table order, and their ClickHouse types.
        self.columns: tuple[str, ...] = table.insertable
        self.types: tuple[str, ...] = table.types(self.columns)
        self._version: str = table.version
        self._key = _key_function(table)
        self._plan = [(c, _converter(t)) for c, t in zip(self.columns, self.types)]

    def __repr__(self) -> str:
        return f"SinkTable({self.table.name!r}, {len(self.columns)} columns)"

    def to_columns(self, records: Iterable[dict[str, Any]]) -> dict[str, list]:
        """Records → one list per column, one row per key (the greatest version wins), sorted by key."""
        rows = records if self.prepare is None else map(self.prepare, records)
        if self.expand is not None:
            rows = chain.from_iterable(map(self.expand, rows))
        latest = _latest(rows, self._key, self._version)
        ordered = [latest[k] for k in sorted(latest)]
        return {c: [r[c] for r in ordered] if conv is None else [conv(r[c]) for r in ordered] for c, conv in self._plan}


#: The tables the sink writes, read from schemas/clickhouse at import.
SINK_TABLES: dict[str, SinkTable] = {name: _sink_table(name) for name in SOURCES}

#: Columns written to each table, in table order (derived from the SQL).
WINDOW_COLUMNS: tuple[str, ...] = SINK_TABLES["flow_windows"].columns
DEADLETTER_COLUMNS: tuple[str, ...] = SINK_TABLES["deadletter"].columns
ANOMALY_COLUMNS: tuple[str, ...] = SINK_TABLES["flow_anomalies"].columns
ATTRIBUTION_COLUMNS: tuple[str, ...] = SINK_TABLES["flow_attributions"].columns
NHI_COLUMNS: tuple[str, ...] = SINK_TABLES["nhi"].columns
INSTANCE_COLUMNS: tuple[str, ...] = SINK_TABLES["instance_windows"].columns


def _latest(records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], tuple], version: str,
            ) -> dict[tuple, dict[str, Any]]:
    """One record per key, the one with the highest ``version`` field (what ReplacingMergeTree keeps)."""
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        k = key(r)
        prev = latest.get(k)
        if prev is None or r[version] >= prev[version]:
            latest[k] = r
    return latest


def table_columns(table: str, records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """Records of the topic that feeds *table* → one list per column of *table*, one row per key, sorted by key."""
    return SINK_TABLES[table].to_columns(records)


def window_columns(windows: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_window.v1 dicts → one list per column of flow_windows, sorted by key.

    Windows with the same key are collapsed (latest ``closed_at`` wins). Times become
    integers (Unix seconds for ``window_start``, milliseconds for ``closed_at``), which
    clickhouse_connect writes to ``DateTime``/``DateTime64(3)`` without conversion;
    ``rtt_hist`` keys become integers.
    """
    return SINK_TABLES["flow_windows"].to_columns(windows)


def anomaly_columns(events: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_anomaly.v1 dicts → one list per column of flow_anomalies, sorted by (alert_id, seq).

    >>> e = {c: 0 for c in ANOMALY_COLUMNS} | {"alert_id": "a", "seq": 0, "emitted_at": 2.5}
    >>> anomaly_columns([e, dict(e, emitted_at=3.0)])["emitted_at"]
    [3000]
    """
    return SINK_TABLES["flow_anomalies"].to_columns(events)


def attribution_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_attribution.v1 dicts → columns of flow_attributions, one row per alert_id (latest wins)."""
    return SINK_TABLES["flow_attributions"].to_columns(records)


def nhi_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """flow_nhi.v1 dicts → columns of nhi, one row per (scope_kind, scope, start) (latest wins)."""
    return SINK_TABLES["nhi"].to_columns(records)


def deadletter_columns(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """deadletter.v1 dicts → one list per column of the deadletter table, sorted by key.

    ``payload`` becomes JSON text (``payload_encoding`` 'json'); ``payload_b64`` is kept
    as its base64 text ('base64'); neither gives '' ('').

    >>> cols = deadletter_columns([{"version": 1, "reason": "malformed_json", "detail": "bad", "stage": "ingest",
    ...     "source": {"topic": "t", "partition": 0, "offset": 9}, "samples": 0, "payload_b64": "e30=", "at": 2.0}])
    >>> cols["payload"], cols["payload_encoding"], cols["sample_index"], cols["at"]
    (['e30='], ['base64'], [None], [2000])
    """
    return SINK_TABLES["deadletter"].to_columns(records)


def batch_token(columns: dict[str, list]) -> str:
    """Deterministic ``insert_deduplication_token`` of a batch: a digest of all its columns.

    Rows must already be in a canonical order (the ``*_columns`` functions sort them by
    key). Every column counts, the version too: only the very same batch gets the same
    token (see "Idempotency" above).

    >>> batch_token({"a": [1, 2], "closed_at": [3, 4]}) == batch_token({"a": [1, 2], "closed_at": [3, 4]})
    True
    >>> batch_token({"a": [1, 2], "closed_at": [3, 4]}) == batch_token({"a": [1, 2], "closed_at": [3, 5]})
    False
    """
    payload = orjson.dumps([[name, values] for name, values in columns.items()], option=orjson.OPT_NON_STR_KEYS)
    return "flowmon-" + hashlib.blake2b(payload, digest_size=16).hexdigest()


class WindowSink:
    """Column-wise, idempotent writer of the tables the pipeline feeds (see :data:`SOURCES`).

    Parameters
    ----------
    client
        A clickhouse_connect client whose current database has been migrated
        (:func:`pipeline.clickhouse.migrations.migrate`).
    windows_table, deadletter_table, anomalies_table
        Table names (defaults match schemas/clickhouse); ``flow_attributions`` and
        ``nhi`` are written under their own names.

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

    @property
    def targets(self) -> dict[str, str]:
        """Schema table → the table this sink writes it to."""
        renamed = {"flow_windows": self.windows_table, "deadletter": self.deadletter_table,
                   "flow_anomalies": self.anomalies_table}
        return {name: renamed.get(name, name) for name in SINK_TABLES}

    def check_tables(self) -> list[str]:
        """Differences between what this sink writes and ``DESCRIBE TABLE`` of its targets ([]: none)."""
        problems: list[str] = []
        for name, target in self.targets.items():
            spec = SINK_TABLES[name]
            problems += describe_differences(self.client, replace(spec.table, name=target), spec.columns)
        return problems

    def _write(self, name: str, records: list[dict[str, Any]]) -> int:
        if not records:
            return 0
        spec = SINK_TABLES[name]
        columns = spec.to_columns(records)
        n = len(next(iter(columns.values())))
        if n == 0:
            return 0
        t0 = time.perf_counter()
        self.client.insert(
            self.targets[name],
            list(columns.values()),
            column_names=list(columns),
            column_type_names=list(spec.types),
            column_oriented=True,
            # max_partitions_per_insert_block: flow_windows has one partition per day (step 006); a batch of a
            # replayed backlog may span more than ClickHouse's default 100 days, which it would refuse.
            settings={"insert_deduplication_token": batch_token(columns), "max_partitions_per_insert_block": 0,
                          # the materialized view's blocks (pair_hours) are deduplicated on their own: a retried
                          # batch writes a view block that failed the first time, and never one twice
                          "deduplicate_blocks_in_dependent_materialized_views": 1},
        )
        self.last_insert_s = time.perf_counter() - t0
        self.rows_written += n
        self.batches_written += 1
        return n

    @staticmethod
    def unwritable(table: str, records: list[dict[str, Any]]) -> dict[int, str]:
        """Records of ``table``'s topic that cannot become rows (a field missing, a value of the wrong type):
        ``{index: why}``; ``{}`` when all can (one conversion of the whole batch, the usual case).

        >>> WindowSink.unwritable("nhi", [{"version": 1}])
        {0: "KeyError: 'scope_kind'"}
        """
        spec = SINK_TABLES[table]
        try:
            spec.to_columns(records)
            return {}
        except Exception:  # noqa: BLE001 - find which
            bad = {}
            for i, r in enumerate(records):
                try:
                    spec.to_columns([r])
                except Exception as exc:  # noqa: BLE001
                    bad[i] = f"{type(exc).__name__}: {exc}"
            return bad

    def write_windows(self, windows: list[dict[str, Any]]) -> int:
        """Insert flow_window.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        return self._write("flow_windows", windows)

    def write_anomalies(self, events: list[dict[str, Any]]) -> int:
        """Insert flow_anomaly.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        return self._write("flow_anomalies", events)

    def write_attributions(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_attribution.v1 dicts."""
        return self._write("flow_attributions", records)

    def write_nhi(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_nhi.v1 dicts."""
        return self._write("nhi", records)

    def write_monitors(self, rows: list[dict[str, Any]]) -> int:
        """Insert ``monitors`` rows (``pipeline.monitors.evaluate.monitor_row`` of the monitors topic's messages)."""
        return self._write("monitors", rows)

    def write_monitor_windows(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_monitor_window.v1 dicts."""
        return self._write("monitor_windows", records)

    def write_monitor_nhi(self, records: list[dict[str, Any]]) -> int:
        """Insert flow_monitor_nhi.v1 dicts."""
        return self._write("monitor_nhi", records)

    def write_instance_windows(self, windows: list[dict[str, Any]]) -> int:
        """Insert the ``instances`` of flow_window.v1 dicts, one row per entry (windows without them give none);
        returns the number of rows sent (after in-batch dedup)."""
        return self._write("instance_windows", windows)

    def write_deadletters(self, records: list[dict[str, Any]]) -> int:
        """Insert deadletter.v1 dicts; returns the number of rows sent (after in-batch dedup)."""
        return self._write("deadletter", records)
