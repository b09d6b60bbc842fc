"""Fixtures of the ClickHouse tests."""

from __future__ import annotations

import uuid

import pytest

from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import migrate


@pytest.fixture
def client(chdb_dsn):
    """A migrated database of its own in this process's chdb engine, dropped afterwards."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    c = connect(chdb_dsn, database=database)
    migrate(c)
    yield c
    c.command(f"DROP DATABASE IF EXISTS {database}", use_database=False)
    c.close()
