"""One pass of a do-nothing-but-decode consumer on a framework, for ``benchmarks.floor``.

    python -m benchmarks.floorconsume faust-batch|faust-event|quix BOOTSTRAP PREFIX PARTITIONS REPORTS GROUP

Reads the reports topic of topic prefix ``PREFIX`` (``Topics.from_settings``) from its
beginning in consumer group ``GROUP`` (a new one per process, i.e. per pass), ``orjson.loads`` every
value and counts its samples, until ``REPORTS`` reports have been decoded. Same output as
``benchmarks.rawconsume``: JSON lines ``{"progress": reports}`` about 4 times a second, then
one ``{"reports", "samples", "seconds", "cpu_s"}`` line. The clock (wall and
``time.process_time``, all threads of the process) starts when the first message reaches the
user code and stops after the last report is decoded.

- ``faust-batch``: the pipeline's own Faust app (``pipeline.runtime.app.create_app``: the
  settings a worker runs with, raw value serializer) and one agent doing
  ``async for events in stream.take_events(500, within=0.05)`` (as the ingest agent does),
  decoding ``event.value``;
- ``faust-event``: the same app, the agent iterating ``async for value in stream``;
- ``quix``: quixstreams ``Application`` (consumer group, ``auto_offset_reset="earliest"``,
  no changelog topics), a topic with the ``bytes`` deserializers and
  ``sdf.apply(decode)``; stopped by ``app.run(count=REPORTS)`` (quixstreams' own stop
  condition: after that many outputs).

After the result line a Faust process keeps running: ``benchmarks.floor`` stops it with
SIGTERM (as ``flowmon worker`` is stopped).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

KINDS = ("faust-batch", "faust-event", "quix")
#: librdkafka group timeouts like the Faust app's here (session 4 s, rebalance 4 s, heartbeat 1 s; librdkafka's
#: rebalance timeout is max.poll.interval.ms): with its defaults (45 s, 300 s) the first assignment took ~23 s on Tansu
QUIX_JOIN = {"session.timeout.ms": 4000, "max.poll.interval.ms": 4000, "heartbeat.interval.ms": 1000}


class _Count:
    """Reports/samples decoded, the clock, and the progress lines (shared by every consumer kind)."""

    def __init__(self, reports: int) -> None:
        self.want = reports
        self.got = self.samples = 0
        self.t0 = self.cpu0 = self.t1 = self.cpu1 = 0.0
        self.next_print = 0.0
        self.done = False

    def start(self) -> None:
        if not self.t0:
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def add(self, reports: int, samples: int) -> None:
        self.got += reports
        self.samples += samples
        now = time.monotonic()
        if self.got >= self.want and not self.done:
            self.t1, self.cpu1 = time.perf_counter(), time.process_time()
            self.done = True
            print(orjson.dumps(self.result()).decode(), flush=True)
        elif now >= self.next_print:
            self.next_print = now + 0.25
            print(orjson.dumps({"progress": self.got}).decode(), flush=True)

    def result(self) -> dict[str, Any]:
        return {"reports": self.got, "samples": self.samples, "seconds": self.t1 - self.t0,
                "cpu_s": self.cpu1 - self.cpu0}


def run_faust(kind: str, bootstrap: str, prefix: str, partitions: int, reports: int, group: str,
              workdir: Path) -> None:
    import faust

    from pipeline.config import Settings
    from pipeline.runtime.app import create_app

    s = Settings(broker=bootstrap, topic_prefix=prefix, app_id=group, partitions=partitions, data_dir=workdir,
                 session_timeout_s=4, rebalance_timeout_s=4, heartbeat_s=1)  # benchmarks' fast joins (_common)
    flow = create_app(s, bootstrap)
    count = _Count(reports)
    loads = orjson.loads

    if kind == "faust-batch":
        @flow.app.agent(flow.reports, name="floor")
        async def floor(stream: Any) -> None:
            async for events in stream.take_events(500, within=0.05):
                count.start()
                n = 0
                for event in events:
                    n += len(loads(event.value)["samples"])
                count.add(len(events), n)
    else:
        @flow.app.agent(flow.reports, name="floor")
        async def floor(stream: Any) -> None:  # noqa: F811 - one of the two is defined
            async for value in stream:
                count.start()
                count.add(1, len(loads(value)["samples"]))

    faust.Worker(flow.app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


def run_quix(bootstrap: str, prefix: str, partitions: int, reports: int, group: str, workdir: Path) -> None:
    from quixstreams import Application

    from pipeline.config import Settings
    from pipeline.runtime.topics import Topics

    topic_name = Topics.from_settings(Settings(topic_prefix=prefix, partitions=partitions)).reports
    app = Application(broker_address=bootstrap, consumer_group=group,
                      auto_offset_reset="earliest", loglevel="WARNING", use_changelog_topics=False,
                      auto_create_topics=False, state_dir=workdir / "quix-state",
                      consumer_extra_config=QUIX_JOIN)
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="bytes")
    count = _Count(reports)
    loads = orjson.loads

    def decode(value: bytes) -> Any:
        if not count.t0:
            count.start()
        r = loads(value)
        count.add(1, len(r["samples"]))
        return r

    sdf = app.dataframe(topic)
    sdf = sdf.apply(decode)
    app.run(count=reports, collect=False)
    if not count.done:  # run() returned early (stopped from outside): say how far it got
        count.t1, count.cpu1 = time.perf_counter(), time.process_time()
        print(orjson.dumps(count.result()).decode(), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.floorconsume", description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("bootstrap")
    ap.add_argument("prefix", help="topic prefix of the reports topic (benchmarks.floor made it)")
    ap.add_argument("partitions", type=int)
    ap.add_argument("reports", type=int, help="how many reports to read (all that were produced)")
    ap.add_argument("group", help="consumer group (Faust: app id) of this pass")
    a = ap.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="flowmon-floor-") as tmp:
        if a.kind == "quix":
            run_quix(a.bootstrap, a.prefix, a.partitions, a.reports, a.group, Path(tmp))
        else:
            run_faust(a.kind, a.bootstrap, a.prefix, a.partitions, a.reports, a.group, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
