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


def test_agent_spools_through_a_broker_outage_and_counts_every_byte_once(tmp_path):
    port = free_port()
    broker = EmbeddedTansu(tmp_path / "tansu", port=port).start()
    asyncio.run(ensure_topics(broker.bootstrap, TOPICS, names=[TOPICS.reports]))
    srv = socket.create_server((SERVER_IP, 0))
    threading.Thread(target=serve, args=(srv,), daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
    env["PYTHONPATH"] = str(REPO)
    agent = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "agent", "--instance", "h1", "--ip", AGENT_IP, "--subnet", "s1",
         "--az", "a1", "--vpc", "v1", "--interval", "1", "--include-loopback", "--state-dir", str(tmp_path / "st"),
         "--broker", broker.bootstrap, "--loglevel", "info"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        deadline = time.time() + 90
        while list((tmp_path / "st" / "spool").glob("*.jsonl")) and time.time() < deadline:
            time.sleep(0.5)
        assert not list((tmp_path / "st" / "spool").glob("*.jsonl")), "the spool did not drain"
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-2000:]
        seen += read_all(broker.bootstrap)
    finally:
        if agent.poll() is None:
            agent.kill()
        broker.stop()
        srv.close()
    by_id: dict[str, dict] = {}
    for r in seen:
        assert by_id.setdefault(r["report_id"], r) == r, "a re-sent report must be the same report"
    total = sent_to_server(list(by_id.values()))
    assert 7_000_000 <= total <= 7_000_014, total  # + SYN/FIN of 7 connections
    starts = [r["start"] for r in by_id.values()]
    assert len(set(zip(starts, [r["report_id"] for r in by_id.values()]))) == len(by_id)
    assert err.count("cannot deliver to") == 1, err  # one line per outage, not one per retry
    assert "answers again" in err, err
