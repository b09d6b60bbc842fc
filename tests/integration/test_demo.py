"""The README's main command works: `flowmon demo` on the embedded default lands every window."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _demo(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, FLOWMON_DATA_DIR=str(tmp_path / "data"),
               FLOWMON_CLICKHOUSE_DSN=f"chdb://{tmp_path / 'data' / 'chdb'}", COLUMNS="160")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--duration", "1h", *args], cwd=tmp_path,
                          env=env, capture_output=True, timeout=300)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def test_flowmon_demo(tmp_path):
    """The demo, then a second run in the same directory (refused: runs would mix), then --fresh (lands again)."""
    status, out = _demo(tmp_path)
    assert status == 0, out[-3000:]
    assert "30/30 pair-windows landed, totals exact" in out
    rows = {m[1]: (int(m[2]), m[3]) for m in re.finditer(r"│ (subnet-\S+ -> subnet-\S+)[^│]*│\s+(\d+) │\s+([\d.]+) │", out)}
    assert rows == {"subnet-1a -> subnet-1a": (6, "20.00"),  # the scenario's HTTP transfers: 20 MB per window
                    **{p: (6, "10.00") for p in ("subnet-1a -> subnet-1c", "subnet-1a -> subnet-1d",
                                                 "subnet-1c -> subnet-1a", "subnet-1d -> subnet-1a")}}, out
    assert "dead letters: none" in out
    assert "alerts: none" in out  # the HTTP experiment has no fault: nothing may alarm
    assert not (tmp_path / "data" / "broker.json").exists()  # the demo cleans up after itself
    assert (tmp_path / "data" / "demo-windows.png").stat().st_size > 10_000  # the plot
    assert "flowmon console" in out  # where to look next

    status, out = _demo(tmp_path)
    assert status == 6, out[-3000:]  # in use: the data directory holds an earlier run
    assert "already holds data" in out and "--fresh" in out and "Traceback" not in out
    assert (tmp_path / "data" / "worker.log.1").exists()  # the first run's log is kept

    status, out = _demo(tmp_path, "--fresh")
    assert status == 0, out[-3000:]
    assert "30/30 pair-windows landed, totals exact" in out
    previous = list((tmp_path / "data" / "previous").iterdir())
    assert len(previous) == 1 and (previous[0] / "chdb").is_dir()  # set aside, not deleted


def test_demo_follow_says_when_its_worker_dies(tmp_path):
    """`flowmon demo --follow` serves the console on the live worker's data (20 MB windows); then the worker is
    killed: the demo says so, with its status and log, stops the console, and exits 1."""
    import json
    import signal
    import time
    import urllib.request

    env = dict(os.environ, FLOWMON_DATA_DIR=str(tmp_path / "data"), FLOWMON_CONSOLE_PORT="0",
               FLOWMON_CLICKHOUSE_DSN=f"chdb://{tmp_path / 'data' / 'chdb'}", COLUMNS="400")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "demo", "--duration", "1h", "--follow"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        endpoint = tmp_path / "data" / "sql-endpoint.json"
        end = time.time() + 240
        out = b""
        while b"following" not in out and time.time() < end:  # the run has landed; the demo now follows
            out += proc.stdout.read1(65536)
        assert b"following" in out, out.decode()[-3000:]
        while b"Ctrl-C" not in out and time.time() < end:
            out += proc.stdout.read1(65536)
        url = re.search(r"console (http://\S+/)", out.decode()).group(1)
        page = urllib.request.urlopen(url + "path?src=subnet-1a&dst=subnet-1a", timeout=30).read().decode()
        assert page.count('<td class="n bytes">20.0 MB</td>') == 6  # 1 h: six windows of 20 MB, read live
        worker_pid = json.loads(endpoint.read_text())["pid"]
        os.kill(worker_pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (out + rest).decode()
    assert proc.returncode == 1, text[-3000:]
    assert "the worker exited with status -9" in text and "Traceback" not in text
    try:
        urllib.request.urlopen(url + "ping", timeout=5)
        raise AssertionError("the console outlived the demo")
    except OSError:
        pass
