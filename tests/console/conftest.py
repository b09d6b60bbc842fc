"""The console's fixtures: ClickHouse databases filled by scenario runs, a live console on each, a browser.

A scenario runs through the very cores the worker runs (``pipeline.sim.evaluate``: ingest,
windows, detection, attribution) and what the worker would emit lands through the real sink
(``WindowSink``) in a chdb database of its own. ``console_url(db)`` serves ``create_app`` on
that database with uvicorn on a free loopback port. ``browser`` is Debian's Chromium
(``/usr/bin/chromium``, or ``FLOWMON_CHROMIUM``) driven by Playwright; screenshots go to
``test-artifacts/console/`` (or ``FLOWMON_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import migrate
from pipeline.clickhouse.writer import WindowSink
from pipeline.sim.evaluate import evaluate
from pipeline.wire.records import encode

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "pipeline" / "sim" / "scenarios" / "http_experiment.yaml"
FAULT = ROOT / "tests" / "scenarios" / "attr-az-pair-loss.yaml"


#: monitors of the fault scenario: one across the faulty AZ pair, one that the fault does not touch
MONITORS = [{"name": "az1-to-az2", "local": ["az:az1"], "remote": ["az:az2"]},
            {"name": "az3-anywhere", "local": ["az:az3"], "remote": "any"}]


def land(client, scenario: Path, monitors: list[dict] = ()):
    """Run ``scenario`` through the worker's cores and land its records with the sink (and, for ``monitors``,
    the records the monitor agents make of them, with the same pure functions); returns the EvalResult."""
    from pipeline.monitors.definition import parse_monitor
    from pipeline.monitors.evaluate import monitor_row, nhi_records, sides, window_records
    from pipeline.monitors.scope import Placements

    res = evaluate(scenario)
    sink = WindowSink(client)
    windows = [orjson.loads(encode(w)) for w in res.closed.values()]
    assert sink.write_windows(windows) == len(res.closed)
    assert sink.write_instance_windows(windows) > 0
    sink.write_anomalies(res.events)
    sink.write_attributions(res.attributions)
    sink.write_nhi(res.nhi_records)
    ms = [parse_monitor(m) for m in monitors]
    if ms:
        sink.write_monitors([monitor_row(m.name.encode(), m.to_json(), 1000) for m in ms])
        places = Placements()
        for w in windows:
            for side in sides(w):
                places.learn(side)
        sink.write_monitor_windows([r for w in windows for r in window_records(w, ms)])
        sink.write_monitor_nhi([r for p in res.nhi_records for r in nhi_records(p, ms, places)])
    return res


def _database(chdb_dsn: str, scenario: Path, monitors: list[dict] = ()):
    db = f"console_{uuid.uuid4().hex[:10]}"
    c = connect(chdb_dsn, database=db)
    migrate(c)
    res = land(c, scenario, monitors)
    return c, db, res


@pytest.fixture(scope="session")
def reference_db(chdb_dsn):
    """The reference HTTP experiment (10 MB every 10 minutes to three clients), 2 h."""
    c, db, res = _database(chdb_dsn, REFERENCE)
    yield c, res
    c.command(f"DROP DATABASE IF EXISTS {db}", use_database=False)
    c.close()


@pytest.fixture(scope="session")
def fault_db(chdb_dsn):
    """A loss between az1 and az2 (attributed to the az1|az2 path), 2 h."""
    c, db, res = _database(chdb_dsn, FAULT, MONITORS)
    yield c, res
    c.command(f"DROP DATABASE IF EXISTS {db}", use_database=False)
    c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, client) -> None:
        import uvicorn

        from pipeline.console.app import create_app

        self.port = _free_port()
        config = uvicorn.Config(create_app(lambda: client), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the console did not start within 20 s")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def consoles(reference_db, fault_db):
    """Live consoles: {'reference': url, 'fault': url}."""
    servers = {"reference": _Server(reference_db[0]), "fault": _Server(fault_db[0])}
    yield {k: s.url for k, s in servers.items()}
    for s in servers.values():
        s.stop()


def chromium_path() -> str:
    path = os.environ.get("FLOWMON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian's chromium is needed for the console's browser tests: apt-get install chromium "
                    "(bash .ci/run installs it)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API keeps an asyncio loop running in the main thread while it is open,
    and later tests call asyncio.run()."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    d = Path(os.environ.get("FLOWMON_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
    d.mkdir(parents=True, exist_ok=True)
    return d
