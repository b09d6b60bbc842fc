"""A mistake the user makes gets one readable line and its own exit status, never a traceback.

Each case runs the real command (``python -m pipeline.cli``) in a subprocess, in an empty
directory, with no ``FLOWMON_*`` variable but the test's own. "No broker" is a loopback port
nothing listens on; ClickHouse is real chdb, created by a subprocess (a test process that opened
chdb would hold its directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import EXIT_STATUSES
from pipeline.runtime.brokers import free_port

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "scenarios" / "fleet-200.yaml"


def flowmon(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``flowmon ARGS`` in ``cwd`` with only the ``FLOWMON_*`` variables given here."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def one_error(r: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """Assert: exit ``status``, stderr exactly one ``error:`` line holding every needle; return that line."""
    assert r.returncode == status, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


# --- the broker -------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ("produce", "reports.jsonl"),
    ("simulate", str(SCENARIO), "--duration", "10m"),
    ("worker",),
])
def test_unreachable_broker(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "reports.jsonl").write_text('{"version": 1}\n')
    broker = closed_port()
    line = one_error(flowmon(tmp_path, *command, "--broker", broker, timeout=30), 3, broker, "connection refused",
                     "--broker", "FLOWMON_BROKER")
    assert "no Kafka broker answers" in line


def test_unknown_broker_host(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text("{}\n")
    one_error(flowmon(tmp_path, "produce", "r.jsonl", timeout=30, FLOWMON_BROKER="no-such-host.invalid:9092"), 3,
              "no-such-host.invalid", "unknown host")


def test_embedded_broker_not_running(tmp_path: Path) -> None:
    """produce on the default 'embedded' broker when no worker or demo runs one for this data directory."""
    (tmp_path / "r.jsonl").write_text("{}\n")
    one_error(flowmon(tmp_path, "produce", "r.jsonl"), 3, "no embedded broker runs", "flowmon worker")


@pytest.mark.parametrize("value, problem", [
    ("localhost", "expected host:port"),
    ("kafka:0", "port must be a number from 1 to 65535"),
    ("kafka:9092,", "expected host:port"),
    ("kafka://k:9092", "expected host:port"),
])
def test_broker_syntax(tmp_path: Path, value: str, problem: str) -> None:
    (tmp_path / "r.jsonl").write_text("{}\n")
    one_error(flowmon(tmp_path, "config", "check", FLOWMON_BROKER=value), 2, "FLOWMON_BROKER", problem)
    one_error(flowmon(tmp_path, "produce", "r.jsonl", "--broker", value), 2, "--broker", problem)


def test_broker_syntax_accepted(tmp_path: Path) -> None:
    r = flowmon(tmp_path, "config", "check", FLOWMON_BROKER="k1:9092, k2:9093,[::1]:9094")
    assert r.returncode == 0 and "configuration ok" in r.stderr


# --- input files and values -------------------------------------------------------------------------
def test_produce_missing_file(tmp_path: Path) -> None:
    """Said before any broker is tried (the broker here is unreachable too)."""
    one_error(flowmon(tmp_path, "produce", "nope.jsonl", "--broker", closed_port()), 2, "nope.jsonl",
              "no such file")


def test_produce_strict_invalid_json(tmp_path: Path) -> None:
    """--strict: a line that is not JSON stops the command with its line number (exit 2: the input, not the broker).
    (Without --strict every line is sent: tests/integration/test_produce.py.)"""
    from pipeline.runtime.brokers import EmbeddedTansu
    (tmp_path / "r.jsonl").write_text('{"version": 1}\nnot json\n')
    with EmbeddedTansu(tmp_path / "tansu") as broker:
        one_error(flowmon(tmp_path, "produce", "r.jsonl", "--strict", "--broker", broker.bootstrap), 2, "r.jsonl:2",
                  "not JSON")


@pytest.mark.parametrize("command", ["simulate", "demo"])
@pytest.mark.parametrize("case", ["missing", "broken-yaml", "not-a-scenario", "duration"])
def test_bad_scenario_or_duration(tmp_path: Path, command: str, case: str) -> None:
    (tmp_path / "broken.yaml").write_text("topology: [\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    scenario, duration, needles = {
        "missing": ("nope.yaml", "10m", ("nope.yaml", "cannot read")),
        "broken-yaml": ("broken.yaml", "10m", ("broken.yaml", "invalid YAML", "line 2")),
        "not-a-scenario": ("list.yaml", "10m", ("list.yaml", "'topology:'")),
        "duration": (str(SCENARIO), "1x", ("--duration", "'1x'", "use e.g. 30s")),
    }[case]
    args = [scenario] if command == "simulate" else ["--scenario", scenario]
    one_error(flowmon(tmp_path, command, *args, "--duration", duration, "--broker", closed_port())
              if command == "simulate" else flowmon(tmp_path, command, *args, "--duration", duration), 2, *needles)
    assert not (tmp_path / "flowmon-data" / "broker.json").exists()  # refused before starting anything


# --- settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("config", "check"), ("config", "dump"), ("sql", "SELECT 1"), ("plot",),
                                     ("produce", "r.jsonl"), ("worker",)])
def test_bad_setting_names_the_variable(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "r.jsonl").write_text("{}\n")
    line = one_error(flowmon(tmp_path, *command, FLOWMON_WINDOW_S="abc"), 2, "FLOWMON_WINDOW_S='abc'",
                     "valid integer", "unset FLOWMON_WINDOW_S")
    assert "window_s" not in line.replace("FLOWMON_WINDOW_S", "")  # the variable, not the pydantic field


def test_bad_option_names_the_option(tmp_path: Path) -> None:
    one_error(flowmon(tmp_path, "worker", "--roles", "pipeline", "--broker", "nohost"), 2, "--broker='nohost'")


@pytest.mark.parametrize("command", [("config", "dump"), ("produce", "r.jsonl"), ("eval", "--help"),
                                     ("sql", "SELECT 1")])
def test_unknown_variables_warned_by_every_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "r.jsonl").write_text("{}\n")
    r = flowmon(tmp_path, *command, FLOWMON_WINDOWS_S="60", FLOWMON_BROKER=closed_port())
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "FLOWMON_WINDOWS_S" in warnings[0], r.stderr
    assert "Traceback" not in r.stderr


def test_config_check_refuses_unknown_variables(tmp_path: Path) -> None:
    one_error(flowmon(tmp_path, "config", "check", FLOWMON_WINDOWS_S="60"), 2, "unknown variables",
              "FLOWMON_WINDOWS_S")


# --- ClickHouse ---------------------------------------------------------------------------------------
def _chdb(tmp_path: Path, migrate: bool) -> None:
    """Create the default chdb directory (with flowmon's empty tables if ``migrate``) in a subprocess."""
    last = "migrate(c)" if migrate else "c.command('SELECT 1')"
    code = ("from pipeline.clickhouse.client import connect; from pipeline.clickhouse.migrations import migrate; "
            f"c = connect('chdb://./flowmon-data/chdb'); {last}")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120,
                   env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_plot_without_any_data_directory(tmp_path: Path) -> None:
    one_error(flowmon(tmp_path, "plot"), 5, "no flowmon data here", "chdb://./flowmon-data/chdb", "flowmon demo")
    assert not (tmp_path / "flowmon-data").exists()  # asking created nothing


@pytest.mark.parametrize("migrated", [False, True], ids=["no-tables", "empty-tables"])
def test_plot_with_no_windows(tmp_path: Path, migrated: bool) -> None:
    _chdb(tmp_path, migrated)
    one_error(flowmon(tmp_path, "plot"), 5, "no windows in ClickHouse yet", "flowmon worker")
    assert not (tmp_path / "flowmon-windows.png").exists()


def test_sql_error_is_one_line(tmp_path: Path) -> None:
    _chdb(tmp_path, False)
    line = one_error(flowmon(tmp_path, "sql", "SELECT * FROM no_such_table"), 4, "ClickHouse", "UNKNOWN_TABLE")
    assert "In scope" not in line


# --- the command line itself ------------------------------------------------------------------------
def test_unknown_option_is_one_line(tmp_path: Path) -> None:
    one_error(flowmon(tmp_path, "produce", "--bogus"), 2, "No such option: --bogus", "produce --help")


def test_version(tmp_path: Path) -> None:
    from pipeline import __version__
    r = flowmon(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"flowmon {__version__}", r


@pytest.mark.parametrize("how", ["option", "env"])
def test_debug_shows_the_traceback(tmp_path: Path, how: str) -> None:
    args, env = (["--debug"], {}) if how == "option" else ([], {"FLOWMON_DEBUG": "1"})
    r = flowmon(tmp_path, *args, "simulate", "nope.yaml", **env)
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: scenario nope.yaml: cannot read")


def test_exit_statuses_are_distinct_and_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for status, meaning in EXIT_STATUSES.items():
        assert f"| {status} | {meaning} |" in readme


def test_console_mistakes_are_one_line(tmp_path):
    """`flowmon console` with no data here, with ClickHouse down, or on a port in use: one line each."""
    import socket

    one_error(flowmon(tmp_path, "console"), 5, "no flowmon data here")
    one_error(flowmon(tmp_path, "console", FLOWMON_CLICKHOUSE_DSN=f"http://default@{closed_port()}/flowmon"), 4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = tmp_path / "d"
        (data / "chdb").mkdir(parents=True)  # a data directory that exists (the console's chdb opens it)
        one_error(flowmon(tmp_path, "console", "--port", str(port), FLOWMON_DATA_DIR=str(data),
                          FLOWMON_CLICKHOUSE_DSN=f"chdb://{data / 'chdb'}"), 6, f"127.0.0.1:{port}", "--port")
    one_error(flowmon(tmp_path, "console", "--port", "70000"), 2, "console")
