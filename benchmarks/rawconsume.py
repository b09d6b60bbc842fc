"""The raw rate: a plain AIOKafkaConsumer reads every report of a topic and orjson-decodes it.

Run as its own process (like the worker it is compared with), by ``benchmarks.bench``::

    python -m benchmarks.rawconsume BOOTSTRAP TOPIC REPORTS [--numpy]

Prints JSON lines on stdout: ``{"progress": reports}`` about 4 times a second, then one
``{"reports", "samples", "seconds", "cpu_s", "passes"}``. The clock starts when the first
batch arrives and stops after the last report is decoded. The topic is read
``--passes`` times (default 3), each time by a new consumer; the fastest pass is reported
(one pass of 500,000 samples lasts under a second, so one pass is easily disturbed by
other load on the machine). ``--numpy`` also pulls two columns
(``bytes_sent``, ``bytes_received``) of every report into int64 numpy arrays, as the
platform notes' decoding ceiling does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer


async def consume(bootstrap: str, topic: str, reports: int, with_numpy: bool, timeout_s: float) -> dict:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                         fetch_max_bytes=64 << 20)
    await c.start()
    loads, arr, i64 = orjson.loads, np.array, np.int64
    got = samples = 0
    t0 = cpu0 = None
    deadline = time.monotonic() + timeout_s
    next_print = 0.0
    try:
        while got < reports and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500, max_records=10_000)
            if batch and t0 is None:
                t0, cpu0 = time.perf_counter(), time.process_time()
            for msgs in batch.values():
                for m in msgs:
                    r = loads(m.value)
                    s = r["samples"]
                    samples += len(s)
                    if with_numpy:
                        arr([x["bytes_sent"] for x in s], dtype=i64)
                        arr([x["bytes_received"] for x in s], dtype=i64)
                got += len(msgs)
            now = time.monotonic()
            if now >= next_print:
                next_print = now + 0.25
                print(orjson.dumps({"progress": got}).decode(), flush=True)
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await c.stop()
    if t0 is None:
        t0 = t1 = cpu0 = cpu1 = 0.0
    return {"reports": got, "samples": samples, "seconds": t1 - t0, "cpu_s": cpu1 - cpu0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rawconsume", description=__doc__.splitlines()[0])
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("reports", type=int, help="how many reports to read (all that were produced)")
    ap.add_argument("--numpy", action="store_true", help="also pull two int64 numpy columns per report")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    runs = [asyncio.run(consume(a.bootstrap, a.topic, a.reports, a.numpy, a.timeout)) for _ in range(a.passes)]
    res = min(runs, key=lambda r: r["seconds"] if r["reports"] >= a.reports else float("inf"))
    res["passes"] = [round(r["seconds"], 4) for r in runs]
    print(orjson.dumps(res).decode(), flush=True)
    return 0 if res["reports"] >= a.reports else 1


if __name__ == "__main__":
    sys.exit(main())
