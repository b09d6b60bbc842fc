"""A worker asked to stop stops: cleanly while its broker answers, by its deadline when the broker is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.harness import log_gap
from pipeline.runtime.brokers import EmbeddedTansu
from pipeline.errors import STOP_TIMED_OUT, WRITE_FAILED

REPO = Path(__file__).resolve().parents[2]
GRACE_S = 3


def _worker(tmp_path: Path, bootstrap: str, n: int) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, FLOWMON_BROKER=bootstrap, FLOWMON_ROLES="pipeline", FLOWMON_APP_ID="stop",
               FLOWMON_TOPIC_PREFIX="stop", FLOWMON_SESSION_TIMEOUT_S="4", FLOWMON_REBALANCE_TIMEOUT_S="4",
               FLOWMON_HEARTBEAT_S="1", FLOWMON_SHUTDOWN_GRACE_S=str(GRACE_S),
               # a data directory whose parent does not exist yet: the worker makes it
               FLOWMON_DATA_DIR=str(tmp_path / f"w{n}" / "data"))
    log = tmp_path / f"worker-{n}.log"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.app", "worker", "--loglevel", "info"], env=env,
                            cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    end = time.time() + 90
    while "ingest: assigned reports" not in log.read_text(errors="replace"):  # joined, reading
        assert proc.poll() is None and time.time() < end, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    return proc, log


def _stop(proc: subprocess.Popen) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(GRACE_S + 20)
    finally:
        proc.kill()
    return rc, time.monotonic() - t0


def test_sigterm_stops_cleanly_and_a_lost_broker_cannot_hold_the_stop(tmp_path):
    with EmbeddedTansu(tmp_path / "broker") as broker:
        proc, log = _worker(tmp_path, broker.bootstrap, 1)
        rc, took = _stop(proc)  # the broker answers: a clean stop, well inside the deadline
        text = log.read_text(errors="replace")
        assert (rc, "did not stop" in text) == (0, False), text[-3000:]
        assert took < GRACE_S, took
        # once its last task is done, the loop closes at once (mode waited a fixed second there)
        assert log_gap(text, "Gathering all futures", "Closing event loop") < 0.9, text[-3000:]

        # A broker that no longer answers (frozen; as behind a partition that drops packets): the
        # stop's commit and leave wait for their request timeouts, so only the deadline can end it.
        proc, log = _worker(tmp_path, broker.bootstrap, 2)
        assert broker.pid is not None
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            time.sleep(1)
            rc, took = _stop(proc)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        text = log.read_text(errors="replace")
        assert rc == STOP_TIMED_OUT, text[-3000:]
        assert GRACE_S <= took < GRACE_S + 10, took
        assert f"did not stop within {GRACE_S} s" in text

        # A broker that is gone (connections refused): aiokafka may retry for ever or give up at once
        # (both seen in CI); either way the stop ends by its deadline, and says so if it needed it.
        proc, log = _worker(tmp_path, broker.bootstrap, 3)
        broker.stop()
        time.sleep(1)
        rc, took = _stop(proc)
    # (A write still pending when the producer gives up ends the worker at once with WRITE_FAILED, saying so.)
    text = log.read_text(errors="replace")
    assert rc in (0, WRITE_FAILED, STOP_TIMED_OUT), text[-3000:]
    assert took < GRACE_S + 10, took
    assert (rc == STOP_TIMED_OUT) == (f"did not stop within {GRACE_S} s" in text), text[-3000:]
    assert (rc == WRITE_FAILED) == ("exiting before anything commits past it" in text), text[-3000:]
