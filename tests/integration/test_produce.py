"""``produce_reports`` on real brokers: each key's partition is the Java client's, order per key, counts.

(Kafka is never mocked: the reports are read back from the broker.)
"""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from pipeline.runtime import kafka
from pipeline.runtime.produce import produce_reports
from tests.support.helpers import unique_name

pytestmark = pytest.mark.integration


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0) -> list:
    c = kafka.consumer(bootstrap, topic, auto_offset_reset="earliest")
    await c.start()
    out = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(out) < n:
                for records in (await c.getmany(timeout_ms=500)).values():
                    out.extend(records)
    finally:
        await c.stop()
    return out


def test_keys_partitions_order_and_counts(broker):
    topic = unique_name("produce")
    reports = [{"instance": f"i-{n % 5}", "seq": n, "samples": [1] * (n % 3)} for n in range(40)]
    reports += [[1, 2], {"no": "instance"}]  # unkeyed: spread over partitions
    seen: list[int] = []

    async def run():
        await _create(broker, topic, 4)
        stats = await produce_reports(broker, topic, reports, progress_every=10,
                                      progress=lambda st: seen.append(st.reports))
        return stats, await _read_all(broker, topic, len(reports))

    stats, got = asyncio.run(run())
    assert (stats.reports, stats.samples) == (42, sum(n % 3 for n in range(40)) + 2)
    assert seen == [10, 20, 30, 40, 42]
    assert len(got) == 42
    by_key: dict[bytes, list[int]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        if m.key is None:
            continue
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % 4  # the Java client's partition for the key
        by_key.setdefault(m.key, []).append(orjson.loads(m.value)["seq"])
    assert by_key == {f"i-{i}".encode(): list(range(i, 40, 5)) for i in range(5)}
    assert sorted((orjson.loads(m.value) for m in got if m.key is None), key=str) == sorted([[1, 2], {"no": "instance"}], key=str)


def test_async_iterable(broker):
    topic = unique_name("produce")

    async def gen():
        for n in range(7):
            yield {"instance": "a", "n": n}

    async def run():
        await _create(broker, topic, 1)
        stats = await produce_reports(broker, topic, gen())
        return stats, await _read_all(broker, topic, 7)

    stats, got = asyncio.run(run())
    assert stats.reports == 7
    assert [orjson.loads(m.value)["n"] for m in got] == list(range(7))


# --- flowmon produce: every line is sent; --strict sends nothing of a bad file --------------------------

def _flowmon_produce(d, *args: str, stdin: bytes | None = None):
    import os
    import subprocess
    import sys
    env = dict(d.env, FLOWMON_BROKER=d.bootstrap)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", *args], input=stdin, env=env,
                          capture_output=True, timeout=120, cwd=os.getcwd())


def _lines(t0: int) -> list[bytes]:
    from tests.integration.test_bad_input import _valid
    return [orjson.dumps(_valid(t0)), b'{"version": 1, "instance": "s-1a/0", "samp',  # truncated
            b"", b"\xff\xfe not utf-8 \xc3\x28", orjson.dumps(_valid(t0 + 30) | {"report_id": "r2"})]


def test_produce_sends_every_line_and_bad_ones_become_dead_letters(deploy, tmp_path):
    from tests.integration.test_bad_input import _topology_file
    from tests.support.strategies import base_start
    t0 = base_start()
    d = deploy(topology=_topology_file())
    d.start()
    proc = _flowmon_produce(d, "-", stdin=b"\n".join(_lines(t0)) + b"\n")  # from stdin, non-UTF-8 and all
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "2 JSON lines; 1 not JSON, 1 not UTF-8 (sent: the pipeline dead-letters them; lines 2, 4); " \
           "1 blank lines skipped" in err, err
    assert "Traceback" not in err
    dead = d.read_topic(d.topics.deadletter, 2, timeout=90)
    assert sorted(r["reason"] for r in dead) == ["malformed_json", "malformed_json"], dead
    assert sorted(base64.b64decode(r["payload_b64"]) for r in dead) == sorted([_lines(t0)[1], _lines(t0)[3]])
    assert d.wait_windows(2, timeout=120) == 2, d.logs()  # both good reports landed (two remote subnets)


def test_produce_strict_sends_nothing_of_a_bad_file(deploy, tmp_path):
    from tests.support.strategies import base_start
    d = deploy()
    path = tmp_path / "samples.jsonl"
    path.write_bytes(b"\n".join(_lines(base_start())))
    proc = _flowmon_produce(d, str(path), "--strict")
    err = proc.stderr.decode().strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and f"{path}:2: not JSON" in err and "nothing was sent" in err, err
    assert d.read_topic(d.topics.reports, 1, timeout=5) == []


def test_idempotent_producer_where_the_broker_grants_it(broker, request):
    """Apache Kafka grants producer ids, Tansu does not: produce_reports uses idempotence on the former only,
    and every report arrives once either way."""
    kind = request.node.callspec.params["broker"]
    topic = unique_name("idem")

    async def run():
        await _create(broker, topic, 2)
        granted = await kafka.supports_idempotence(broker)
        assert await kafka.grants_producer_ids(broker) is granted
        stats = await produce_reports(broker, topic, ({"instance": f"i{n % 7}", "n": n} for n in range(2000)))
        return granted, stats, await _read_all(broker, topic, 2000)

    granted, stats, got = asyncio.run(run())
    assert granted is (kind == "kafka")
    assert stats.reports == 2000
    assert sorted(orjson.loads(m.value)["n"] for m in got) == list(range(2000))
