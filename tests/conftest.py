"""Shared fixtures for the unit tests (integration tests add theirs in tests/integration/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory):
    """The chdb directory of this test process (chdb hosts one directory per process): tests each
    take a database of their own in it."""
    from pipeline.clickhouse.client import chdb_path_in_use, connect

    path = chdb_path_in_use() or str(tmp_path_factory.getbasetemp() / "chdb")
    anchor = connect(f"chdb://{path}")  # keeps the engine up for the session
    yield f"chdb://{path}"
    anchor.close()


@pytest.fixture
def client(chdb_dsn):
    """A migrated database of its own in this process's chdb engine, dropped afterwards."""
    import uuid

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import migrate

    database = f"t_{uuid.uuid4().hex[:12]}"
    c = connect(chdb_dsn, database=database)
    migrate(c)
    yield c
    c.command(f"DROP DATABASE IF EXISTS {database}", use_database=False)
    c.close()
