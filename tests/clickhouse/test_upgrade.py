"""Upgrading a database of an earlier release (akvorado's migrations_test.go: replay saved states).

Each directory of tests/clickhouse/states/ is the saved state of a release's database
(tests/support/chstate.py: its tables and views as system.tables shows them, ledger
included, and a few rows). The test builds a chdb database from it, runs today's
migrations, and checks that the result is a fresh install's schema, that the rows
survived, that a second run applies 0 steps, and that today's sink can write to it.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import LEDGER, applied_steps, load_steps, migrate
from pipeline.clickhouse.writer import WindowSink
from tests.support.chstate import STATES_DIR, ddl, load_state, states, table_rows
from tests.support.records import example_window

STATES = states()


@pytest.fixture
def database(chdb_dsn):
    made = []

    def make():
        name = f"t_{uuid.uuid4().hex[:12]}"
        client = connect(chdb_dsn, database=name)
        made.append((name, client))
        return client

    yield make
    for name, client in made:
        client.command(f"DROP DATABASE IF EXISTS {name}", use_database=False)
        client.close()


def test_there_is_a_saved_state_of_the_previous_release():
    assert (STATES_DIR / "0.1.0" / "objects.json").is_file()
    release = json.loads((STATES_DIR / "0.1.0" / "release.json").read_text())
    assert release["commit"].startswith("da28f4d")
    assert [p.name for p in STATES][0] == "0.1.0"


@pytest.mark.parametrize("state", STATES, ids=[p.name for p in STATES])
def test_upgrade_from_a_saved_state(database, state, caplog):
    old = database()
    rows = load_state(old, state)
    recorded = applied_steps(old)
    assert recorded, "a saved state carries the ledger of its release"
    tables_with_rows = [t for t, lines in rows.items() if lines and t != LEDGER]
    assert tables_with_rows, "a saved state carries some data"

    # today's migrations apply exactly the steps the release did not have...
    steps = [s.name for s in load_steps()]
    with caplog.at_level(logging.WARNING, logger="pipeline.clickhouse.migrations"):
        assert migrate(old) == [s for s in steps if s not in recorded]
    # a released step is never edited (not even its comments): a new step changes the schema
    assert "changed since it was applied" not in caplog.text
    # ...and a second run applies none
    assert migrate(old) == []

    # the schema is a fresh install's
    fresh = database()
    assert migrate(fresh) == steps
    assert ddl(old) == ddl(fresh)

    # the rows survived (the ledger gained rows for the new steps only)
    for table in tables_with_rows:
        assert table_rows(old, table) == rows[table], table
    assert set(applied_steps(old)) == set(steps)

    # and today's sink writes to the upgraded database
    sink = WindowSink(old)
    assert sink.check_tables() == []
    before = old.command("SELECT count() FROM flow_windows_final")
    assert sink.write_windows([example_window(src_subnet="after-upgrade")]) == 1
    assert old.command("SELECT count() FROM flow_windows_final") == before + 1


@pytest.mark.parametrize("state", STATES, ids=[p.name for p in STATES])
def test_saved_state_is_consistent(state):
    """The ledger first (it is created before any step), each object once, and the
    ledger rows name exactly the release's steps."""
    objects = [o["name"] for o in json.loads((state / "objects.json").read_text())]
    release = json.loads((state / "release.json").read_text())
    assert objects[0] == LEDGER
    assert len(objects) == len(set(objects))
    ledger = [json.loads(line)["name"] for line in (state / "rows" / f"{LEDGER}.jsonl").read_text().splitlines()]
    assert sorted(ledger) == sorted(release["steps"])
