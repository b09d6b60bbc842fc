"""`flowmon alerts` without a broker: bad options refused, no broker reported readably."""

from __future__ import annotations

import json

import pytest

from pipeline.runtime.brokers import free_port


# --- the command, without a broker ----------------------------------------------------------------
def _invoke(*args: str):
    """``flowmon alerts ARGS`` through the real command tree."""
    from typer.testing import CliRunner

    from pipeline.cli.app import cli
    return CliRunner().invoke(cli, ["alerts", *args])


@pytest.mark.parametrize("args, message", [
    (("--severity", "high"), "--severity"),
    (("--scope", "host"), "--scope"),
    (("--metric", "rtt_mean", "--metric", "jitter"), "--metric"),
    (("--pair", "a->b->c"), "--pair"),
    (("--webhook", "ftp://example.com/hook"), "--webhook"),
    (("--webhook-retries", "-1"), "--webhook-retries"),
])
def test_command_refuses_bad_options(args, message):
    r = _invoke("--broker", "127.0.0.1:1", *args)
    assert r.exit_code == 2
    assert message in r.stderr


def test_command_without_a_broker_exits_3_readably():
    port = free_port()
    r = _invoke("--broker", f"127.0.0.1:{port}", "--no-follow", "--source", "kafka")
    assert r.exit_code == 3, r.stderr
    assert r.stderr.startswith(f"error: no Kafka broker answers at 127.0.0.1:{port}") and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert r.stdout == ""


def test_source_clickhouse_refuses_to_follow():
    r = _invoke("--source", "clickhouse", "--follow")
    assert r.exit_code == 2 and "--source" in r.stderr


# --- the history, from ClickHouse, with no broker at all ---------------------------------------------
_WRITE = """
import sys
from pipeline.clickhouse.client import connect
from pipeline.clickhouse.migrations import migrate
from pipeline.clickhouse.writer import WindowSink
from tests.support.events import example_event
from tests.alerts.test_history import _attribution
c = connect(sys.argv[1]); migrate(c)
a = example_event(alert_id="a" * 16, at=1_700_000_060, first_seen=1_700_000_060, last_seen=1_700_000_060)
b = example_event(alert_id="b" * 16, at=1_700_000_030, first_seen=1_700_000_030, last_seen=1_700_000_030,
                  src_subnet="subnet-x", severity="warning")
WindowSink(c).write_anomalies([dict(a, event="resolved", seq=1, at=1_700_000_600, reason="normal"), a, b])
WindowSink(c).write_attributions([_attribution("a" * 16, 1_700_000_060, "infrastructure")])
"""


def test_no_follow_reads_the_history_from_clickhouse(tmp_path):
    """After the broker is gone: `flowmon alerts --no-follow` shows what landed, in time order, attributions under."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dsn = f"chdb://{tmp_path / 'chdb'}"
    subprocess.run([sys.executable, "-c", _WRITE, dsn], check=True, cwd=repo, capture_output=True)
    env = dict(os.environ, FLOWMON_CLICKHOUSE_DSN=dsn, FLOWMON_DATA_DIR=str(tmp_path), FLOWMON_BROKER="embedded")
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline.cli", "alerts", "--no-follow", *a],  # noqa: E731
                                    env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    r = run()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4, r.stdout
    assert "opened" in lines[0] and "subnet-x" in lines[0]                      # b, 22:13:50
    assert "opened" in lines[1] and "alert " + "a" * 16 in lines[1]             # a, 22:14:20
    assert lines[2].startswith("    ") and "infrastructure" in lines[2]          # a's attribution under it
    assert "resolved" in lines[3] and "normal" in lines[3]
    assert "3 events shown" in r.stderr
    r = run("--severity", "critical", "--json")
    assert [json.loads(x).get("event", "attribution") for x in r.stdout.splitlines()] == [
        "opened", "attribution", "resolved"]
