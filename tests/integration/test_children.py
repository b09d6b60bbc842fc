"""What flowmon starts dies with it: a SIGKILLed worker leaves no embedded broker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for our purpose
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigkilled_worker_takes_its_embedded_broker_with_it(tmp_path):
    env = dict(os.environ, FLOWMON_DATA_DIR=str(tmp_path / "data"), FLOWMON_BROKER="embedded",
               FLOWMON_CLICKHOUSE_DSN=f"chdb://{tmp_path / 'data' / 'chdb'}")
    worker = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        record = tmp_path / "data" / "broker.json"
        end = time.time() + 60
        while not record.exists() and time.time() < end:
            time.sleep(0.2)
        broker_pid = json.loads(record.read_text())["broker_pid"]
        assert _alive(broker_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        end = time.time() + 10
        while _alive(broker_pid) and time.time() < end:
            time.sleep(0.1)
        assert not _alive(broker_pid), "the embedded broker outlived its SIGKILLed worker"
    finally:
        worker.kill()
