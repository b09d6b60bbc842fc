"""The ingest reader's fallback when the core fails on a batch: one report at a time, none lost.

A bug in ``Ingest.process_batch`` must neither stop the worker nor lose the batch: the reader
runs each report through ``Ingest.process`` alone, and a report that fails there too becomes an
``internal_error`` dead letter carrying its bytes. The failing core here stands for such a bug
(there is no input that makes the real one raise, which is the point of the property tests).
"""

from __future__ import annotations

import base64
import time
from types import SimpleNamespace

import orjson

from pipeline.ingest.step import Ingest
from pipeline.ingest.validate import Validator
from pipeline.runtime.agents.ingest import ReportsReader
from tests.ingest.test_validate import TOPO, good

POISON = b'{"poison": true}'


class BuggyIngest(Ingest):
    def process_batch(self, records, topic, now):
        raise RuntimeError("a bug in the batch path")

    def process(self, raw, topic, partition, offset, now):
        if raw == POISON:
            raise ZeroDivisionError("a bug on one report")
        return super().process(raw, topic, partition, offset, now)


def test_a_failing_batch_is_retried_report_by_report():
    now = time.time()
    reports = [orjson.dumps(good() | {"instance": f"s-1a/{i}"}) for i in range(3)]
    chunk = [(reports[0], 0, 10), (POISON, 0, 11), (reports[1], 1, 5), (reports[2], 0, 12)]
    ctx = SimpleNamespace(topics=SimpleNamespace(reports="flow-reports-v1"),
                          core=BuggyIngest(Validator(TOPO), window_s=600, partitions=4))
    got = ReportsReader(ctx)._one_by_one(chunk, now)

    ok = [c for c in chunk if c[0] != POISON]
    expected = Ingest(Validator(TOPO), window_s=600, partitions=4).process_batch(ok, "flow-reports-v1", now)
    assert got.messages == expected.messages and got.accepted == expected.accepted == 6
    assert got.starts == [expected.starts[0], None, *expected.starts[1:]] and None not in expected.starts
    (dl,) = got.deadletters
    assert (dl.reason, dl.stage, dl.source.partition, dl.source.offset) == ("internal_error", "ingest", 0, 11)
    assert "ZeroDivisionError" in dl.detail and base64.b64decode(dl.payload_b64) == POISON
