"""The sink's columns come from schemas/clickhouse and agree with the live tables and the wire schemas.

- after the migrations (chdb), ``DESCRIBE TABLE`` of every table the sink writes lists
  exactly the columns, order and types the sink sends; the check really fails when
  they differ;
- for every table fed from a topic, each column the sink fills is a field of that
  topic's JSON schema (same name, nullable on both sides or neither), except the
  derived columns, which ``writer.DERIVED`` lists exactly;
- the parser of the SQL steps follows a later ``ALTER TABLE ... ADD COLUMN``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from pipeline.clickhouse.columns import Column, Table, apply_alter, describe_differences, parse_create_table, tables
from pipeline.clickhouse.migrations import load_steps, migrate
from pipeline.clickhouse.writer import DERIVED, ENTRIES, SINK_TABLES, SOURCES, SinkTable, WindowSink
from pipeline.wire.contract import schema


def described(client, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in client.query(f"DESCRIBE TABLE {table}").result_rows]


# ---- the sink against DESCRIBE TABLE -------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_describe_equals_what_the_sink_writes(client, name):
    spec = SINK_TABLES[name]
    assert described(client, name) == list(zip(spec.columns, spec.types))
    assert describe_differences(client, spec.table, spec.columns) == []


def test_sink_checks_its_tables(client):
    assert set(WindowSink(client).targets) == set(SOURCES)
    assert WindowSink(client).check_tables() == []


def _doctored(table: Table, **changes) -> Table:
    return replace(table, columns=tuple(replace(c, type=changes.get(c.name, c.type)) for c in table.columns))


def test_the_check_fails_on_a_doctored_column_list(client):
    spec = SINK_TABLES["flow_windows"]
    cols = spec.columns
    # a column the table lacks
    extra = replace(spec.table, columns=(*spec.table.columns, Column("bogus", "UInt8")))
    assert describe_differences(client, extra, (*cols, "bogus")) == ["flow_windows.bogus: written as UInt8, missing from the table"]
    # a column the sink forgets
    assert describe_differences(client, spec.table, cols[:-1]) == [
        "flow_windows.closed_at: in the table (DateTime64(3, 'UTC')), not written"]
    # a wrong type
    wrong = _doctored(spec.table, hosts="UInt64")
    assert describe_differences(client, wrong, cols) == ["flow_windows.hosts: written as UInt64, the table has UInt32"]
    # the right columns in another order
    swapped = (cols[1], cols[0], *cols[2:])
    (problem,) = describe_differences(client, spec.table, swapped)
    assert "another order" in problem


def test_the_sink_check_sees_a_table_changed_by_hand(client):
    client.command("ALTER TABLE nhi MODIFY COLUMN element Nullable(String)")
    assert WindowSink(client).check_tables() == ["nhi.element: written as String, the table has Nullable(String)"]
    # a renamed target is checked under its own name
    client.command("CREATE TABLE windows_copy AS flow_windows")
    client.command("ALTER TABLE windows_copy DROP COLUMN hosts")
    problems = WindowSink(client, windows_table="windows_copy").check_tables()
    assert "windows_copy.hosts: written as UInt32, missing from the table" in problems


# ---- the sink against the wire schemas -----------------------------------------------


def _nullable_in_json(prop: dict) -> bool:
    types = prop.get("type", [])
    types = [types] if isinstance(types, str) else types
    return "null" in types or None in prop.get("enum", ()) or ("const" in prop and prop["const"] is None)


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_wire_schema_covers_the_columns_the_sink_fills(name):
    spec = SINK_TABLES[name]
    props = schema(SOURCES[name].rsplit(".", 1)[0])["properties"]
    if name in ENTRIES:  # one row per entry of a list field: the entry's fields, else the record's
        entry = props[ENTRIES[name]]["items"]["properties"]
        props = {k: v for k, v in props.items() if k != ENTRIES[name]} | entry
    derived = DERIVED.get(name, {})
    assert set(derived) <= set(spec.columns), f"{name}: DERIVED names columns the table lacks"
    # every column not derived is the record's field of the same name...
    not_in_schema = [c for c in spec.columns if c not in props]
    assert set(not_in_schema) <= set(derived), f"{name}: {not_in_schema} are neither wire fields nor derived"
    # ...and DERIVED lists exactly the columns that are not (plus payload, a field turned into text)
    assert set(derived) - set(not_in_schema) <= {"payload"}
    for c, t in zip(spec.columns, spec.types):
        if c in derived:
            continue
        assert t.startswith("Nullable(") == _nullable_in_json(props[c]), f"{name}.{c}: {t} vs {props[c]}"


def test_sink_tables_are_the_schema_tables():
    assert set(SINK_TABLES) <= set(tables())
    for name, spec in SINK_TABLES.items():
        assert spec.table == tables()[name]
        assert spec.table.version is not None and spec.table.order_by


# ---- the parser ----------------------------------------------------------------------


def test_parser_reads_every_table_of_the_steps():
    parsed = tables()
    created = {o for s in load_steps() for o in s.objects}
    assert set(parsed) <= created
    assert {"flow_windows", "deadletter", "flow_anomalies", "flow_attributions", "nhi", "instance_windows"} <= set(parsed)
    w = parsed["flow_windows"]
    assert w.order_by == ("src_subnet", "dst_subnet", "window_s", "window_start") and w.version == "closed_at"
    assert w.types(("rtt_hist", "closed_at")) == ("Map(UInt16, UInt64)", "DateTime64(3, 'UTC')")
    assert parsed["deadletter"].order_by[-1] == "sample_index"


def test_a_column_added_by_a_later_step_reaches_the_parsed_table(client, tmp_path):
    steps = tmp_path / "steps"
    steps.mkdir()
    for s in load_steps():
        shutil.copy(s.path, steps)
    (steps / "900_more.sql").write_text(
        "-- a later release adds a column\n"
        "ALTER TABLE flow_windows ADD COLUMN IF NOT EXISTS note LowCardinality(String) DEFAULT '' "
        "COMMENT 'x, (y)' AFTER hosts;\n"
        "ALTER TABLE nhi ADD COLUMN IF NOT EXISTS score Float64 MATERIALIZED 1;\n"
    )
    parsed = tables(steps)
    w = parsed["flow_windows"]
    assert w.names[w.names.index("hosts") + 1] == "note"
    assert "score" in parsed["nhi"].names and "score" not in parsed["nhi"].insertable
    assert migrate(client, steps) == ["900_more"]
    for name in ("flow_windows", "nhi"):
        assert describe_differences(client, parsed[name], parsed[name].insertable) == []


def test_parse_create_table_edge_cases():
    t = parse_create_table(
        "CREATE TABLE IF NOT EXISTS db.`t` (`a b` Array(Tuple(x UInt8, y String)) COMMENT 'has, commas (and parens)', "
        "c Nullable(String) DEFAULT 'DEFAULT', d UInt8 ALIAS 1, PROJECTION p (SELECT a ORDER BY c)) "
        "ENGINE = MergeTree ORDER BY c"
    )
    assert t.name == "t" and t.version is None and t.order_by == ("c",)
    assert [(c.name, c.type, c.kind) for c in t.columns] == [
        ("a b", "Array(Tuple(x UInt8, y String))", ""), ("c", "Nullable(String)", "DEFAULT"), ("d", "UInt8", "ALIAS")]
    expr = parse_create_table("CREATE TABLE t (a DateTime, `b c` UInt8) ENGINE = ReplacingMergeTree(a) "
                              "ORDER BY (toDate(a), `b c`) SETTINGS index_granularity = 8192")
    assert expr.order_by == ("toDate(a)", "b c") and expr.version == "a"
    with pytest.raises(ValueError, match="must list columns"):
        SinkTable(expr)
    assert parse_create_table("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY tuple()").order_by == ()
    with pytest.raises(ValueError, match="only ADD/DROP/MODIFY COLUMN"):
        apply_alter(t, "ALTER TABLE t RENAME COLUMN c TO e")
    assert apply_alter(t, "ALTER TABLE t MODIFY SETTING x = 1") == t
    assert apply_alter(t, "ALTER TABLE t ADD COLUMN z UInt8 FIRST").names[0] == "z"


def test_a_quote_in_a_comment_does_not_hide_a_table(tmp_path):
    """An apostrophe in a step's comment once made the parser skip the table after it (silently: no columns)."""
    from pipeline.clickhouse.columns import tables

    (tmp_path / "001_x.sql").write_text(
        "-- the pair's windows, and a -- inside a string below\n"
        "CREATE TABLE IF NOT EXISTS x (a String DEFAULT '--', b UInt8) ENGINE = MergeTree ORDER BY a;\n"
        "-- it's the second\nCREATE TABLE IF NOT EXISTS y (c String) ENGINE = MergeTree ORDER BY c;\n")
    got = tables(tmp_path)
    assert set(got) == {"x", "y"}
    assert got["x"].names == ("a", "b") and got["y"].names == ("c",)
