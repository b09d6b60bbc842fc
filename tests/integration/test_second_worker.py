"""A second ``flowmon worker`` on the same data directory: it joins the first one's embedded Tansu broker
and leaves the sink to the process that owns the chdb directory; asked to run the sink, it refuses in
one line. Both say what they run and print status lines, and both consume the reports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "scenarios" / "fleet-200.yaml"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    env.update(PYTHONPATH=str(REPO), FLOWMON_SESSION_TIMEOUT_S="4", FLOWMON_REBALANCE_TIMEOUT_S="4",
               FLOWMON_SOURCE_IDLE_S="2")
    return env


def _worker(cwd: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--status-every", "2", *args],
                            cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=open(cwd / f"{name}.err", "wb"))


def _wait(what: str, check, procs: list[subprocess.Popen[bytes]], cwd: Path, timeout: float = 90):
    end = time.time() + timeout
    while time.time() < end:
        got = check()
        if got:
            return got
        for p in procs:
            assert p.poll() is None, f"a worker exited ({p.returncode}) while waiting for {what}:\n" + _logs(cwd)
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}:\n" + _logs(cwd))


def _logs(cwd: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(cwd.glob("*.err")))


def _reports_read(cwd: Path, name: str) -> int:
    """The count in the worker's latest status line."""
    counts = re.findall(r"status after [^:]*: ([\d,]+) reports read", (cwd / f"{name}.err").read_text())
    return int(counts[-1].replace(",", "")) if counts else -1


def test_second_worker_joins_the_embedded_tansu_broker_and_leaves_the_sink(tmp_path: Path) -> None:
    data = tmp_path / "flowmon-data"
    first = _worker(tmp_path, "first")
    procs = [first]
    try:
        _wait("the first worker's SQL endpoint", lambda: (data / "sql-endpoint.json").exists(), procs, tmp_path)
        bootstrap = json.loads((data / "broker.json").read_text())["bootstrap"]

        second = _worker(tmp_path, "second", "--loglevel", "info")  # no --roles: the pipeline only
        procs.append(second)
        _wait("the second worker's start line", lambda: "running: pipeline" in (tmp_path / "second.err").read_text(),
              procs, tmp_path)
        # reports produced before the reports group has rebalanced could all go to the first worker (CI saw
        # it read every one): wait until the second has partitions of its own (``ReportsReader`` logs them)
        _wait("the second worker's share of the reports partitions",
              lambda: re.search(r"ingest: assigned reports \[\d", (tmp_path / "second.err").read_text()),
              procs, tmp_path)
        said = (tmp_path / "second.err").read_text()
        assert f"joining the embedded broker on {bootstrap}" in said
        assert "this worker runs the pipeline role only" in said
        start = next(ln for ln in said.splitlines() if "running:" in ln)
        assert f"on broker {bootstrap}" in start and "flow-reports-v1" in start and "sink" not in start
        assert "Traceback" not in said

        sink = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker", "--roles", "sink"], cwd=tmp_path,
                              env=_env(), capture_output=True, text=True, timeout=60)
        assert sink.returncode == 6, sink.stderr
        assert len(sink.stderr.splitlines()) == 1
        assert sink.stderr.startswith("error: a sink already runs for flowmon-data in process")
        assert "--roles pipeline" in sink.stderr

        # reports produced on the shared broker (found through broker.json) are read by both workers
        sim = subprocess.run([sys.executable, "-m", "pipeline.cli", "simulate", str(SCENARIO), "--duration", "10m"],
                             cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
        assert sim.returncode == 0, sim.stderr
        produced = int(re.search(r"produced ([\d,]+) reports", sim.stderr).group(1).replace(",", ""))
        _wait("both workers to read the reports",
              lambda: _reports_read(tmp_path, "second") > 0
              and _reports_read(tmp_path, "first") + _reports_read(tmp_path, "second") >= produced,
              procs, tmp_path, timeout=120)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    assert first.returncode == 0, _logs(tmp_path)
    assert not (data / "broker.json").exists()  # the first worker stopped its broker and said so
