"""The README's main command works: `flowmon demo` on the embedded default lands every window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_flowmon_demo(tmp_path):
    env = dict(os.environ, FLOWMON_DATA_DIR=str(tmp_path / "data"),
               FLOWMON_CLICKHOUSE_DSN=f"chdb://{tmp_path / 'data' / 'chdb'}", COLUMNS="160")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo", "--duration", "1h"], cwd=tmp_path,
                          env=env, capture_output=True, timeout=300)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out[-3000:]
    assert "30/30 pair-windows landed" in out
    assert "20.00" in out  # subnet-1a -> subnet-1a: 20 MB per window
    assert "dead letters: none" in out
    assert "alerts: none" in out  # the HTTP experiment has no fault: nothing may alarm
    assert not (tmp_path / "data" / "broker.json").exists()  # the demo cleans up after itself
    assert (tmp_path / "data" / "demo-windows.png").stat().st_size > 10_000  # the plot
