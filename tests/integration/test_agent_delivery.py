"""``flowmon agent`` delivery through a real broker outage: the broker is stopped while the host's
connections move data and started again; the agent spools meanwhile and drains in order, so the
reports on the topic, each counted once by its report_id, add up to exactly what was sent."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.brokers import EmbeddedTansu, free_port
from pipeline.runtime.topics import Topics, ensure_topics

REPO = Path(__file__).resolve().parents[2]
AGENT_IP, SERVER_IP = "127.0.0.81", "127.0.0.82"
TOPICS = Topics.from_settings(Settings(partitions=1))


def serve(sock: socket.socket) -> None:
    def one(c: socket.socket) -> None:
        with c:
            while c.recv(1 << 16):
                pass
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=one, args=(c,), daemon=True).start()


def transfer(port: int, n: int) -> None:
    with socket.create_connection((SERVER_IP, port), source_address=(AGENT_IP, 0)) as s:
        s.sendall(b"x" * n)
        s.shutdown(socket.SHUT_WR)
        s.recv(1)


def read_all(bootstrap: str, timeout: float = 15.0) -> list[dict]:
    async def go() -> list[dict]:
        c = kafka.consumer(bootstrap, TOPICS.reports, auto_offset_reset="earliest")
        await c.start()
        out: list[dict] = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:  # until caught up: the first empty fetch after some messages
                batch = await c.getmany(timeout_ms=300)
                if not batch and out:
                    break
                for msgs in batch.values():
                    out.extend(orjson.loads(m.value) for m in msgs)
        finally:
            await c.stop()
        return out
    return asyncio.run(go())


def sent_to_server(reports: list[dict]) -> int:
    return sum(s["bytes_sent"] for r in reports for s in r["samples"] if s["remote"]["ip"] == SERVER_IP)


def start_agent(tmp_path: Path, bootstrap: str, log: Path | None = None) -> subprocess.Popen:
    """``flowmon agent`` for host h1, reporting every second what AGENT_IP sends, its spool under ``tmp_path``;
    its log to ``log`` when given (read while it runs), else to a pipe (``communicate``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "agent", "--instance", "h1", "--ip", AGENT_IP, "--subnet", "s1",
         "--az", "a1", "--vpc", "v1", "--interval", "1", "--include-loopback", "--state-dir", str(tmp_path / "st"),
         "--broker", bootstrap, "--loglevel", "info"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE if log is None else log.open("w"), text=True)


def wait_drained(tmp_path: Path, timeout_s: float = 90.0) -> None:
    deadline = time.time() + timeout_s
    while list((tmp_path / "st" / "spool").glob("*.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    assert not list((tmp_path / "st" / "spool").glob("*.jsonl")), "the spool did not drain"


def counted_once(reports: list[dict]) -> int:
    """Bytes sent to the server by the reports, each report_id counted once (a re-sent report must be the same)."""
    by_id: dict[str, dict] = {}
    for r in reports:
        assert by_id.setdefault(r["report_id"], r) == r, "a re-sent report must be the same report"
    return sent_to_server(list(by_id.values()))


def test_agent_spools_through_a_broker_outage_and_counts_every_byte_once(tmp_path):
    port = free_port()
    broker = EmbeddedTansu(tmp_path / "tansu", port=port).start()
    asyncio.run(ensure_topics(broker.bootstrap, TOPICS, names=[TOPICS.reports]))
    srv = socket.create_server((SERVER_IP, 0))
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
    agent = start_agent(tmp_path, broker.bootstrap)
    seen: list[dict] = []
    try:
        time.sleep(2.5)  # the agent takes its base
        for _ in range(3):
            transfer(srv.getsockname()[1], 1_000_000)
        time.sleep(3)
        seen += read_all(broker.bootstrap)
        before = sent_to_server(seen)
        assert 3_000_000 <= before <= 3_000_006, before
        broker.stop()  # memory storage: what was on it is gone with it (we read it above)
        for _ in range(3):
            transfer(srv.getsockname()[1], 1_000_000)
            time.sleep(1)
        time.sleep(3)
        spooled = sorted((tmp_path / "st" / "spool").glob("*.jsonl"))
        assert spooled, "the agent spooled nothing while the broker was down"
        broker = EmbeddedTansu(tmp_path / "tansu", port=port).start()  # the same address, empty
        asyncio.run(ensure_topics(broker.bootstrap, TOPICS, names=[TOPICS.reports]))
        transfer(srv.getsockname()[1], 1_000_000)
        wait_drained(tmp_path)
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-2000:]
        seen += read_all(broker.bootstrap)
    finally:
        if agent.poll() is None:
            agent.kill()
        broker.stop()
        srv.close()
    total = counted_once(seen)
    assert 7_000_000 <= total <= 7_000_014, total  # + SYN/FIN of 7 connections
    assert err.count("cannot deliver to") == 1, err  # one line per outage, not one per retry
    assert "answers again" in err, err


def test_agent_through_a_broker_that_stops_answering_leaves_no_producer_running(tmp_path):
    """A broker that stops answering but keeps its connections open (frozen here; a network partition that
    drops packets does the same): the agent gives its producer up after 5 s without an acknowledgement, spools,
    and drains when the broker answers again. aiokafka's ``stop()`` of the producer given up waits for what it
    holds; cancelled after 5 s, as it was, it left the producer's tasks running, and asyncio logged them
    "destroyed but pending" once they were collected (``runtime.agent.Sender._reset``)."""
    broker = EmbeddedTansu(tmp_path / "tansu", port=free_port()).start()
    asyncio.run(ensure_topics(broker.bootstrap, TOPICS, names=[TOPICS.reports]))
    srv = socket.create_server((SERVER_IP, 0))
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
    agent = start_agent(tmp_path, broker.bootstrap)
    try:
        time.sleep(2.5)  # the agent takes its base
        transfer(srv.getsockname()[1], 1_000_000)
        time.sleep(3)  # delivered: the agent's producer is up
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            for _ in range(2):  # 12 s: past the 5 s without acknowledgement, and the 5 s its stop is waited for
                transfer(srv.getsockname()[1], 1_000_000)
                time.sleep(6)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        wait_drained(tmp_path)
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=40)
        assert agent.returncode == 0, err[-2000:]
        seen = read_all(broker.bootstrap)
    finally:
        if agent.poll() is None:
            agent.kill()
        broker.stop()
        srv.close()
    assert 3_000_000 <= counted_once(seen) <= 3_000_006, counted_once(seen)
    assert err.count("cannot deliver to") == 1, err
    assert "no acknowledgement within 5 s" in err and "answers again" in err, err
    for noise in ("Task was destroyed", "never retrieved", "Unclosed"):
        assert noise not in err, err[-3000:]


def test_agent_started_while_the_broker_does_not_answer_says_so_within_seconds(tmp_path):
    """The broker is frozen before the agent's first delivery (a partition that drops packets looks the same).
    The agent says it cannot deliver within seconds: its first look at the broker (does it grant producer ids?)
    counts as a delivery attempt. Before, it took that silence for "no idempotence" for the rest of its life,
    then waited 20 s for its producer's start, and said nothing for 25 s. Stopped meanwhile, it exits cleanly
    (the look it had begun closes its client) and keeps its spool; started again once the broker answers, it
    drains it, and every byte counts once."""
    broker = EmbeddedTansu(tmp_path / "tansu", port=free_port()).start()
    asyncio.run(ensure_topics(broker.bootstrap, TOPICS, names=[TOPICS.reports]))
    srv = socket.create_server((SERVER_IP, 0))
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
    logs = [tmp_path / "agent-1.log", tmp_path / "agent-2.log"]
    os.kill(broker.pid, signal.SIGSTOP)
    agent = None
    try:
        agent = start_agent(tmp_path, broker.bootstrap, logs[0])
        spawned = time.monotonic()
        time.sleep(2.5)  # the agent takes its base
        transfer(srv.getsockname()[1], 1_000_000)
        while "cannot deliver to" not in logs[0].read_text() and time.monotonic() - spawned < 40:
            assert agent.poll() is None, logs[0].read_text()[-2000:]
            time.sleep(0.2)
        said_after = time.monotonic() - spawned
        assert said_after < 15, f"{said_after:.1f} s\n" + logs[0].read_text()[-2000:]
        agent.send_signal(signal.SIGTERM)  # while the broker is still silent
        agent.communicate(timeout=40)
        assert agent.returncode == 0, logs[0].read_text()[-2000:]
        assert list((tmp_path / "st" / "spool").glob("*.jsonl")), "the stop lost the spool"
        os.kill(broker.pid, signal.SIGCONT)
        agent = start_agent(tmp_path, broker.bootstrap, logs[1])
        wait_drained(tmp_path)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=40)
        assert agent.returncode == 0, logs[1].read_text()[-2000:]
        seen = read_all(broker.bootstrap)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        if agent is not None and agent.poll() is None:
            agent.kill()
        broker.stop()
        srv.close()
    first, second = (log.read_text() for log in logs)
    assert 1_000_000 <= counted_once(seen) <= 1_000_006, counted_once(seen)
    assert first.count("cannot deliver to") == 1, first
    assert "cannot deliver to" not in second, second
    for noise in ("Task was destroyed", "never retrieved", "Unclosed"):
        assert noise not in first + second, (first + second)[-3000:]
