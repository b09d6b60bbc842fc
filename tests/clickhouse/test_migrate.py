"""pipeline.clickhouse.migrations against real chdb: steps apply once, in order, and only what is missing.

chdb hosts one data directory per process at a time, so every test module shares one
directory per pytest session (or the one already open) and each test gets a database
of its own.
"""

from __future__ import annotations

import logging
import shutil
import uuid

import pytest

from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import LEDGER, applied_steps, created_objects, load_steps, migrate, split_statements

ALL_STEPS = [s.name for s in load_steps()]




@pytest.fixture
def client(chdb_dsn):
    database = f"t_{uuid.uuid4().hex[:12]}"
    c = connect(chdb_dsn, database=database)
    yield c
    c.command(f"DROP DATABASE IF EXISTS {database}", use_database=False)
    c.close()


def _objects(client) -> set[str]:
    return {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}


def test_steps_are_ordered_and_numbered():
    assert ALL_STEPS[:3] == ["001_flow_windows", "002_deadletter", "003_az_traffic"]
    assert ALL_STEPS == sorted(ALL_STEPS)


def test_fresh_database_gets_every_step_then_none(client):
    assert migrate(client) == ALL_STEPS
    assert migrate(client) == []  # second run: 0 steps
    assert {"flow_windows", "flow_windows_final", "deadletter", "deadletter_final", "az_traffic", LEDGER} <= _objects(client)
    recorded = applied_steps(client)
    assert sorted(recorded) == ALL_STEPS
    assert all(recorded[s.name] == s.checksum for s in load_steps())


def test_database_with_only_step_001_gets_the_rest(client, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(load_steps()[0].path, old)
    assert migrate(client, old) == ["001_flow_windows"]  # the state of an older release
    client.command("INSERT INTO flow_windows (src_subnet, dst_subnet, window_start, window_s, bytes) VALUES ('a', 'b', 600, 600, 5)")
    assert migrate(client) == ALL_STEPS[1:]
    assert migrate(client) == []
    assert client.command("SELECT sum(bytes) FROM flow_windows_final") == 5  # data kept


def test_missing_object_reapplies_its_step(client):
    migrate(client)
    client.command("INSERT INTO flow_windows (src_subnet, dst_subnet, window_start, window_s, bytes) VALUES ('a', 'b', 600, 600, 7)")
    client.command("DROP VIEW flow_windows_final")
    assert migrate(client) == ["001_flow_windows"]
    assert client.command("SELECT sum(bytes) FROM flow_windows_final") == 7
    assert migrate(client) == []


def test_edited_step_is_reported_not_rerun(client, tmp_path, caplog):
    steps = tmp_path / "steps"
    steps.mkdir()
    for s in load_steps():
        shutil.copy(s.path, steps)
    assert migrate(client, steps) == ALL_STEPS
    first = steps / "001_flow_windows.sql"
    first.write_text(first.read_text() + "\n-- edited after release\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.clickhouse.migrations"):
        assert migrate(client, steps) == []
    assert "001_flow_windows changed since it was applied" in caplog.text


def test_databases_are_independent(client, chdb_dsn):
    migrate(client)
    other_db = f"t_{uuid.uuid4().hex[:12]}"
    other = connect(chdb_dsn, database=other_db)
    try:
        assert migrate(other) == ALL_STEPS
        assert migrate(client) == []
    finally:
        other.command(f"DROP DATABASE {other_db}", use_database=False)
        other.close()


def test_bad_step_names_are_refused(tmp_path):
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="NNN_<what>.sql"):
        load_steps(tmp_path)
    (tmp_path / "1_x.sql").unlink()
    (tmp_path / "001_a.sql").write_text("SELECT 1")
    (tmp_path / "001_b.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match="already used"):
        load_steps(tmp_path)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT ';' AS a; SELECT 'it''s;' AS b", ["SELECT ';' AS a", "SELECT 'it''s;' AS b"]),
        ("SELECT 'a\\';b'", ["SELECT 'a\\';b'"]),
        ("SELECT `x;y` FROM t -- trailing; comment\n; /* a; b */", ["SELECT `x;y` FROM t -- trailing; comment"]),
        ("-- only a comment; really\n/* and; this */", []),
        ("CREATE TABLE t (x String COMMENT 'a;b') ENGINE = Memory", ["CREATE TABLE t (x String COMMENT 'a;b') ENGINE = Memory"]),
    ],
)
def test_split_statements(sql, expected):
    assert split_statements(sql) == expected


def test_created_objects():
    assert created_objects("CREATE TABLE IF NOT EXISTS db.`t` (x UInt8) ENGINE = Memory") == ["t"]
    assert created_objects("create materialized view if not exists mv to t as select 1") == ["mv"]
    assert created_objects("CREATE OR REPLACE VIEW v AS SELECT 1") == ["v"]
    assert created_objects("ALTER TABLE t ADD COLUMN y UInt8") == []
