"""With a ClickHouse server DSN (``http://``) flowmon never imports chdb, and migrations run in one place.

The server is the project's SQL endpoint (``sqlserve``) over this test process's chdb engine: a real
ClickHouse HTTP interface. The commands run in subprocesses, whose imports are what is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.clickhouse.client import chdb_path_in_use, connect
from pipeline.clickhouse.migrations import applied_steps, load_steps
from pipeline.clickhouse.sqlserve import SqlServer

REPO = Path(__file__).resolve().parents[2]

#: the worker's sink setup as `flowmon worker` runs it (the Faust app is built, nothing connects to Kafka)
SINK = """
import sys
from pipeline.cli.worker import _install_sink
from pipeline.config import Settings
from pipeline.runtime.app import create_app
_install_sink(create_app(Settings(), "127.0.0.1:1"))
print("chdb imported:", "chdb" in sys.modules)
"""


_token = [""]  # the running server's token: FLOWMON_CLICKHOUSE_PASSWORD of the commands


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = chdb_path_in_use() or str(tmp_path_factory.getbasetemp() / "chdb")
    client = connect(f"chdb://{path}")
    srv = SqlServer(client, writable=True).start()  # a ClickHouse server, in effect (token required)
    _token[:] = [srv.token]
    yield client, srv
    srv.stop()
    client.close()


def run(args: list[str], dsn: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    return subprocess.run([sys.executable, "-X", "importtime", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=clean | {"FLOWMON_CLICKHOUSE_DSN": dsn, "FLOWMON_DATA_DIR": str(tmp_path),
                                                    "FLOWMON_CLICKHOUSE_PASSWORD": _token[0], "PYTHONPATH": str(REPO),
                                                    **env})


def imported(stderr: str) -> set[str]:
    """Top-level modules named by ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_migrate_command_then_workers_check_only_and_no_chdb_import(server, tmp_path):
    owner, srv = server
    database = f"t_{uuid.uuid4().hex[:12]}"
    dsn = f"{srv.url}/{database}"

    # a worker told not to migrate refuses an empty schema, in one line
    out = run(["-c", SINK], dsn, tmp_path, FLOWMON_MIGRATE="false")
    assert out.returncode != 0
    assert "ClickHouse schema not up to date" in out.stderr and "flowmon migrate" in out.stderr
    assert "Traceback" not in out.stderr
    assert "chdb" not in imported(out.stderr)

    # `flowmon migrate` applies every step, once
    out = run(["-m", "pipeline.cli", "migrate"], dsn, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "applied 001_" in out.stderr
    assert "chdb" not in imported(out.stderr)
    assert set(applied_steps(connect(f"{srv.url}/{database}", password=srv.token))) == {s.name for s in load_steps()}
    out = run(["-m", "pipeline.cli", "migrate"], dsn, tmp_path)
    assert out.returncode == 0 and "up to date" in out.stderr, out.stderr

    # now the worker's sink starts without migrating, and without chdb
    out = run(["-c", SINK], dsn, tmp_path, FLOWMON_MIGRATE="false")
    assert out.returncode == 0, out.stderr
    assert "chdb imported: False" in out.stdout
    assert "chdb" not in imported(out.stderr)

    # `flowmon sql` on the server DSN
    out = run(["-m", "pipeline.cli", "sql", "SELECT count() FROM schema_migrations FINAL", "-f", "TSV"], dsn, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(load_steps()))
    assert "chdb" not in imported(out.stderr)


def test_the_check_itself_sees_chdb(tmp_path):
    """The import check can fail: a chdb DSN does import it."""
    out = run(["-c", "from pipeline.clickhouse.client import connect; connect('chdb://memory')"], "chdb://memory",
              tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "chdb" in imported(out.stderr)


def test_migrate_command_failure_is_one_line(tmp_path):
    out = run(["-m", "pipeline.cli", "migrate"], "http://flowmon@127.0.0.1:9/flowmon", tmp_path,
              FLOWMON_CLICKHOUSE_PASSWORD="s3cret")
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith("ClickHouse schema not migrated:"), lines
    assert "s3cret" not in out.stderr
