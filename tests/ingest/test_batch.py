"""Many reports at once (``Ingest.process_batch``) give exactly what one at a time (``process``) gives.

The worker's ingest reader uses the batch path; ``process`` is the reference, and the slow
path the batch path falls back to for anything not plainly good. Every mix of good,
near-valid and garbage reports must come out the same: the same pairs messages per
partition in the same order (histogram keys and the order of one message's partials aside,
which follow the placement cache), the same dead letters, counts and event times.
"""

from __future__ import annotations

import copy
import json
import time

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.step import Ingest
from pipeline.ingest.validate import Validator
from pipeline.wire.records import PairsMessage, decode_pairs
from tests.ingest.test_validate import TOPO
from tests.support.strategies import arbitrary_bytes, near_valid, reports

NOW = time.time()


def _variant(draw, msg: dict) -> dict:
    """Good reports in the other forms the schema allows: ``report_id``, ``1.0`` for ``1``, flat."""
    msg = copy.deepcopy(msg)
    kind = draw(st.sampled_from(["plain", "plain", "report_id", "float", "flat", "resent"]))
    if kind == "report_id":
        msg["report_id"] = draw(st.sampled_from(["r1", "r2", "x" * 10]))
    elif kind == "float":
        msg["samples"][0]["flows"] = float(msg["samples"][0]["flows"])
    elif kind == "flat":
        sample = msg.pop("samples")[0]
        msg.update(sample)
    return msg


@st.composite
def mixed(draw) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["good", "good", "good", "near", "bytes", "dup"]))
        if kind == "good":
            out.append(orjson.dumps(_variant(draw, draw(reports(max_samples=12)))))
        elif kind == "near":
            out.append(json.dumps(draw(near_valid())).encode())  # json: integers beyond 64 bits too
        elif kind == "bytes":
            out.append(draw(arbitrary_bytes))
        elif out:
            out.append(out[draw(st.integers(0, len(out) - 1))])
    return out


def _normal(messages: dict[int, list[bytes]]) -> dict:
    out = {}
    for p, payloads in messages.items():
        msgs = []
        for raw in payloads:
            (m,) = decode_pairs(raw)
            assert isinstance(m, PairsMessage)
            msgs.append((m.origin, m.start, m.grid, sorted((tuple(x.dst), x) for x in m.parts)))
        out[p] = msgs
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixed(), st.integers(1, 40), st.integers(1, 8))
def test_batch_equals_one_at_a_time(raws, chunk, partitions):
    one = Ingest(Validator(TOPO), window_s=600, partitions=partitions)
    many = Ingest(Validator(TOPO), window_s=600, partitions=partitions)
    many.validator.CHUNK_SAMPLES = chunk  # several column sets and splits, even in a small batch
    records = [(raw, i % 3, 100 + i) for i, raw in enumerate(raws)]
    expected: dict[int, list[bytes]] = {}
    deadletters, starts, accepted, rejected = [], [], 0, 0
    for raw, part, off in records:
        res = one.process(raw, "r", part, off, NOW)
        for p, payload in res.messages.items():
            expected.setdefault(p, []).append(payload)
        deadletters += res.deadletters
        starts.append(res.start)
        accepted += res.accepted
        rejected += res.rejected
    got = many.process_batch(records, "r", NOW)
    assert _normal(got.messages) == _normal(expected)
    assert got.deadletters == deadletters
    assert (got.starts, got.accepted, got.rejected) == (starts, accepted, rejected)


def test_batch_of_good_reports_takes_the_columnar_path_and_keeps_wire_bytes():
    """Good reports with more than ``SMALL`` samples: byte-identical messages (the numpy paths sort alike)."""
    msgs = [{"version": 1, "instance": f"s-1a/{i}", "start": int(NOW // 3600 * 3600 - 7200), "interval_s": 30,
             "local": {"ip": f"10.0.0.{i + 4}", "subnet": "s-1a", "az": "az-1a", "vpc": "vpc-a"},
             "samples": [{"remote": {"ip": f"10.0.{j % 3}.{j + 4}"}, "bytes_sent": 10 * j, "bytes_received": j,
                          "retransmissions": j % 4, "timeouts": j % 2, "flows": 1, "rtt_us": [1000 + j, 900]}
                         for j in range(20)]} for i in range(30)]
    records = [(orjson.dumps(m), 0, i) for i, m in enumerate(msgs)]
    many = Ingest(Validator(TOPO), window_s=600, partitions=4)
    batches, slow = many.validator.check_many([r[0] for r in records], NOW)
    assert slow == [] and sum(len(b.rows) for b in batches) == 30
    one = Ingest(Validator(TOPO), window_s=600, partitions=4)
    expected: dict[int, list[bytes]] = {}
    for raw, part, off in records:
        for p, payload in one.process(raw, "r", part, off, NOW).messages.items():
            expected.setdefault(p, []).append(payload)
    got = many.process_batch(records, "r", NOW)
    assert got.messages == expected and got.accepted == 600
