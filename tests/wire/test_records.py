"""The pairs-path records encode to the very bytes the dict-based code wrote (state restore, the
sink and older workers read them) — but for the pairs topic's partials, now arrays, whose earlier
object form still decodes to the same records — and decode back to equal records."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipeline.aggregate.windows import PartitionWindows, WindowAgg
from pipeline.ingest.step import Ingest, deadletter
from pipeline.ingest.validate import Rejection, Validator
from pipeline.wire.contract import schema
from pipeline.wire.records import (
    FlowWindow,
    LatePartial,
    Origin,
    PairsMessage,
    ProgressMark,
    decode_message,
    decode_pairs,
    decode_partial,
    encode,
    encode_state,
    encode_deadletter,
    encode_window,
    encode_mark,
    encode_pairs_message,
    encode_partial,
    pack_ids,
    state_ids,
    unpack_ids,
)
from tests.ingest.test_validate import TOPO
from tests.support.strategies import reports

_OPTS = orjson.OPT_NON_STR_KEYS


def _old_partial(p) -> dict:
    """A partial as ``preagg`` built it before the records (a dict, in this key order)."""
    return {"src": p.src, "dst": p.dst, "ws": p.window_start, "host": p.host, "c": p.counters, "h": p.rtt_hist,
            "x": p.maxima, "top": p.top, "ip": p.ip, "id": p.report_id, "m": p.medians}


@settings(max_examples=100, deadline=None)
@given(reports(max_samples=40))
def test_pairs_messages_keep_their_bytes_and_round_trip(msg):
    res = Ingest(Validator(TOPO), window_s=600, partitions=4).process(orjson.dumps(msg), "r", 2, 9, now=time.time())
    for raw in res.messages.values():
        (m,) = decode_pairs(raw)
        arrays = [[p.src, p.dst, p.window_start, p.host, p.counters, p.rtt_hist, p.maxima, p.top, p.ip, p.report_id,
                   p.medians] for p in m.parts]  # each partial: its fields in order
        assert raw == orjson.dumps({"o": [2, 9], "t": msg["start"], "g": m.grid, "P": arrays}, option=_OPTS)
        assert encode_pairs_message(m) == raw
        assert decode_message(orjson.loads(raw)) == m
        # a worker of an earlier version wrote the partials as objects: they still read the same
        old = orjson.dumps({"o": [2, 9], "t": msg["start"], "g": m.grid, "parts": [_old_partial(p) for p in m.parts]},
                           option=_OPTS)
        assert decode_pairs(b"[" + old + b"," + raw + b"]") == [m, m]
        assert len(raw) < len(old)
        for p in m.parts:
            assert decode_partial(orjson.loads(encode(encode_partial(p)))) == p


def test_marks_keep_their_bytes():
    assert encode_mark(ProgressMark(3, 1000)) == orjson.dumps({"mark": [3, 1000]})
    assert encode_mark(ProgressMark(3, None, idle=50)) == orjson.dumps({"mark": [3, None], "idle": 50})
    assert encode_mark(ProgressMark(3, None, None, 1_700_000_000_123)) == b'{"mark":[3,null],"at":1700000000123}'
    for m in (ProgressMark(3, 1000), ProgressMark(3, None, idle=50), ProgressMark(3, 9, 50, 1_700_000_000_123)):
        assert decode_pairs(encode_mark(m)) == [m]
        assert decode_message(orjson.loads(encode_mark(m))) == m


def test_closed_window_keeps_its_bytes():
    agg = WindowAgg(["s1", "a1", "v"], ["s2", "a2", "v"], 600, [10, 20, 3, 1, 2, 4, 3, 3300], {159: 2, 175: 1},
                    {"h1", "h2"}, instances={"h2": [4, 0, 0, 0, 1, 1, 0, 0], "h1": [6, 20, 3, 1, 1, 3, 3, 3300]})
    rec = agg.record(600)
    assert isinstance(rec, FlowWindow)
    old = {"version": 1, "src_subnet": "s1", "src_az": "a1", "src_vpc": "v", "dst_subnet": "s2", "dst_az": "a2",
           "dst_vpc": "v", "window_start": 600, "window_s": 600, "bytes_sent": 10, "bytes_received": 20,
           "bytes": 30, "retransmissions": 3, "timeouts": 1, "flows": 2, "samples": 4, "hosts": 2,
           "rtt_count": 3, "rtt_sum_us": 3300, "rtt_mean_us": 1100.0, "rtt_p50_us": rec.rtt_p50_us,
           "rtt_p90_us": rec.rtt_p90_us, "rtt_p99_us": rec.rtt_p99_us, "rtt_hist": {"159": 2, "175": 1},
           "closed_at": rec.closed_at}
    # the one field added since: the instances, sorted, each with its counters by name (null: not known)
    inst = [{"instance": "h1", "bytes_sent": 6, "bytes_received": 20, "bytes": 26, "retransmissions": 3,
             "timeouts": 1, "flows": 1, "samples": 3, "rtt_count": 3, "rtt_sum_us": 3300},
            {"instance": "h2", "bytes_sent": 4, "bytes_received": 0, "bytes": 4, "retransmissions": 0, "timeouts": 0,
             "flows": 1, "samples": 1, "rtt_count": 0, "rtt_sum_us": 0}]
    assert encode(rec) == orjson.dumps(old | {"instances": inst}, option=_OPTS)
    agg.instances = None
    unknown = agg.record(600)
    assert encode(unknown) == orjson.dumps(old | {"closed_at": unknown.closed_at, "instances": None}, option=_OPTS)


def _old_deadletter(rej: Rejection, stage, topic, partition, offset, now) -> dict:
    """``ingest.deadletter`` as it was, building the dict."""
    rec = {"version": 1, "reason": rej.reason, "field": rej.field, "detail": rej.detail, "stage": stage,
           "source": {"topic": topic, "partition": partition, "offset": offset},
           "sample_index": rej.sample_index, "samples": rej.samples, "at": now}
    if rej.raw is not None:
        rec["payload_b64"] = base64.b64encode(rej.raw).decode()
    else:
        rec["payload"] = rej.payload
    if len(rec.get("payload_b64", "")) > 256 * 1024 or (
            "payload" in rec and len(orjson.dumps(rec["payload"], option=_OPTS)) > 256 * 1024):
        raw = rej.raw if rej.raw is not None else orjson.dumps(rej.payload, option=_OPTS)
        rec.pop("payload", None)
        rec["payload_b64"] = base64.b64encode(raw[:64 * 1024]).decode()
        rec["payload_truncated"] = True
    return rec


def test_deadletters_keep_their_bytes():
    big = {"samples": ["x" * 1000] * 400}
    for rej in (Rejection("malformed_json", "bad", raw=b"{not json"),
                Rejection("oversize", "too big", raw=b"x" * 300_000),
                Rejection("bad_field", "no", field="start", sample_index=2, samples=3, payload={"a": 1}),
                Rejection("bad_field", "big", payload=big),
                Rejection("schema", "none", payload=None)):
        new = encode_deadletter(deadletter(rej, "ingest", "r", 1, 7, now=5.0))
        assert new == orjson.dumps(_old_deadletter(rej, "ingest", "r", 1, 7, 5.0), option=_OPTS)


def test_late_partial_deadletter_carries_the_partial_as_it_came():
    part = {"src": ["s", "a", "v"], "dst": ["d", "b", "v"], "ws": 0, "host": "h", "c": [1, 0, 0, 0, 1, 2, 1, 900],
            "h": {"157": 1}, "x": [0, 0], "top": [None, None, "10.0.1.4"], "ip": "10.0.0.4", "id": 5, "m": {}}
    pw = PartitionWindows(0, 600, 60, sources=1)
    pw.apply({"mark": [0, 5000]})
    (late,) = pw.apply({"o": [0, 3], "t": 30, "g": 30, "parts": [part]}).late
    assert isinstance(late, LatePartial) and late.origin == Origin(0, 3)
    dl = deadletter(Rejection("late", "closed", samples=2, payload=late.partial), "aggregate", "r", 0, 3, now=1.0)
    assert orjson.loads(encode_deadletter(dl))["payload"] == part


def test_window_state_keeps_its_shape():
    part = {"src": ["s", "a", "v"], "dst": ["d", "b", "v"], "ws": 0, "host": "h", "c": [1, 0, 0, 0, 1, 2, 1, 900],
            "h": {"157": 1}, "x": [3, 0], "top": ["10.0.1.9", None, "10.0.1.4"], "ip": "10.0.0.4", "id": 5,
            "m": {"157": 1}}
    pw = PartitionWindows(0, 600, 60, sources=1)
    pw.apply(PairsMessage(Origin(0, 1), 0, 0, [decode_partial(part)]))
    (state,) = [v for k, v in pw.take_dirty().items() if "__progress__" not in k]
    assert orjson.loads(encode(state)) == {
        "src": ["s", "a", "v"], "dst": ["d", "b", "v"], "ws": 0, "c": [1, 0, 0, 0, 1, 2, 1, 900], "h": {"157": 1},
        "hosts": ["h"], "I": base64.b64encode((5).to_bytes(8, "little")).decode(),
        "iv": {"0": {"h": [[1, 0, 0, 0, 1, 2, 1, 900], {"157": 1}, [3, 0], ["10.0.1.9", None, "10.0.1.4"],
                           "10.0.0.4", {"157": 1}]}},
        "inst": {"h": [1, 0, 0, 0, 1, 2, 1, 900]}}
    assert list(state) == ["src", "dst", "ws", "c", "h", "hosts", "I", "iv", "inst"]
    assert WindowAgg.from_state(orjson.loads(encode(state))).state() == orjson.loads(encode(state)) | {
        "h": {157: 1}, "iv": {0: {"h": [[1, 0, 0, 0, 1, 2, 1, 900], {157: 1}, [3, 0],
                                      ["10.0.1.9", None, "10.0.1.4"], "10.0.0.4", {157: 1}]}}}


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 2**63 - 1), max_size=60))
def test_report_identities_pack_exactly(ids):
    """Every 63-bit identity survives packing, sorted; the packed form is about half the JSON list's size."""
    text = pack_ids(ids)
    assert unpack_ids(orjson.loads(orjson.dumps(text))) == sorted(ids)
    assert state_ids({"I": text}) == state_ids({"ids": sorted(ids)}) == sorted(ids)
    if len(ids) >= 20 and min(ids) >= 2**59:  # typical identities: 18-19 digits
        assert len(orjson.dumps(text)) < 0.6 * len(orjson.dumps(sorted(ids)))


def test_packed_identities_that_are_not_whole_refuse_to_load():
    with pytest.raises(ValueError, match="not a multiple of 8"):
        unpack_ids(base64.b64encode(b"1234567").decode())
    with pytest.raises(ValueError):
        unpack_ids("not base64!")


def test_window_state_written_with_identities_as_a_list_still_loads():
    """State an earlier worker wrote (identities as a JSON list, open and closed windows) restores the same
    windows: a replayed report is still a duplicate, a new one still counts."""
    part = {"src": ["s", "a", "v"], "dst": ["d", "b", "v"], "ws": 0, "host": "h", "c": [1, 0, 0, 0, 1, 2, 1, 900],
            "h": {"157": 1}, "x": [3, 0], "top": ["10.0.1.9", None, "10.0.1.4"], "ip": "10.0.0.4", "id": 5,
            "m": {"157": 1}}
    pw = PartitionWindows(0, 600, 60, sources=1)
    pw.apply(PairsMessage(Origin(0, 1), 0, 0, [decode_partial(part)]))
    pw.apply(PairsMessage(Origin(0, 2), 600, 600, [decode_partial(part | {"ws": 600, "id": 6})]))
    pw.apply(ProgressMark(0, 700))  # closes the first window
    state = {k: orjson.loads(encode(v)) for k, v in pw.take_dirty().items() if v is not None}
    old = {}
    for k, v in state.items():
        if "I" in v:
            v = dict(v)
            v["ids"] = unpack_ids(v.pop("I"))
        old[k] = v
    assert any(v.get("closed") and v["ids"] == [5] for v in old.values())
    assert any("hosts" in v and v["ids"] == [6] for v in old.values())
    for val in (state, old):
        back = PartitionWindows(0, 600, 60, sources=1)
        for k, v in val.items():
            back.load(k, v)
        assert back.apply(PairsMessage(Origin(0, 3), 600, 600, [decode_partial(part | {"ws": 600, "id": 6})])).duplicates == 1
        assert back.apply(PairsMessage(Origin(0, 4), 0, 0, [decode_partial(part)])).duplicates == 1
        assert back.apply(PairsMessage(Origin(0, 5), 600, 600, [decode_partial(part | {"ws": 600, "id": 7})])).applied == 1


def test_pairs_values_msgspec_does_not_expect_decode_the_general_way():
    """``decode_pairs`` decodes with msgspec's types; a value it does not expect (a float where the ingest
    stage writes integers, a mark's idle clock as a float) is decoded by the general path, to the same
    records ``decode_message`` makes; a data message's absent ``g`` is its start, a null one stays null."""
    p = [["s", "a", "v"], ["d", "b", "v"], 0, "h", [1, 0, 0, 0, 1, 2, 1, 900], {"157": 1}, [3, 0],
         ["10.0.1.9", None, None], "10.0.0.4", 5, {"157": 1}]
    floaty = [*p[:4], [1, 0, 0, 0, 1, 2, 1, 900.5], *p[5:]]
    for msgs in ([{"o": [0, 1], "t": 30, "g": 30, "P": [p]}],
                 [{"o": [0, 1], "t": 30, "g": 30, "P": [floaty]}],  # not msgspec's types: the general path
                 [{"mark": [0, 60], "idle": 99.5}, {"o": [0, 2], "t": 30, "P": [p]}],
                 [{"mark": [0, 60], "idle": 99.5, "at": 1_700_000_000_123}],
                 [{"o": [0, 3], "t": 30, "g": None, "P": [p]}]):
        raw = orjson.dumps(msgs)
        assert decode_pairs(raw) == [decode_message(m) for m in orjson.loads(raw)]
    (m,) = decode_pairs(orjson.dumps([{"o": [0, 2], "t": 30, "P": [p]}]))
    assert m.grid == 30 and m.parts[0].rtt_hist == {157: 1} and m.parts[0].counters == [1, 0, 0, 0, 1, 2, 1, 900]
    (m,) = decode_pairs(orjson.dumps([{"o": [0, 3], "t": 30, "g": None, "P": [p]}]))
    assert m.grid is None
    (m,) = decode_pairs(orjson.dumps([{"o": [0, 1], "t": 30, "g": 30, "P": [floaty]}]))
    assert m.parts[0].counters[7] == 900.5
    assert decode_pairs(b'{"mark":[3,null],"idle":7}') == [ProgressMark(3, None, 7)]


def test_an_open_window_keeps_names_and_addresses_once():
    """Partials decoded from separate messages carry separate string objects; what a window keeps of
    them (the reporter's name, its address, the top remotes) is one object per distinct value."""
    def value(rid: int, t: int) -> bytes:
        p = [["s", "a", "v"], ["d", "b", "v"], 0, "host-" + "x" * 20, [1, 0, 0, 0, 1, 2, 1, 900], {"157": 1}, [3, 0],
             ["10.0.1." + "9" * 2, None, None], "10.0.0." + "4" * 2, rid, {"157": 1}]
        return orjson.dumps([{"o": [0, rid], "t": t, "g": t, "P": [p]}])

    pw = PartitionWindows(0, 600, 60, sources=1, interval_lateness_s=300)  # no interval handed over yet
    for rid, t in ((1, 0), (2, 30), (3, 60)):
        for msg in decode_pairs(value(rid, t)):
            pw.apply(msg)
    (agg,) = pw.open.values()
    entries = [hosts[h] for hosts in agg.intervals.values() for h in hosts]
    names = [h for hosts in agg.intervals.values() for h in hosts]
    assert len(entries) >= 2  # (the first interval may have been handed over already)
    assert len({id(n) for n in names}) == 1 and len({id(e[4]) for e in entries}) == 1
    assert len({id(e[3][0]) for e in entries}) == 1


def _states_of_a_small_fleet() -> list[dict]:
    """Every state a pairs partition writes (windows, detector keys, progress) over 12 minutes of the test
    fleet: hundreds of hosts' windows and keys, learned statistics (floats of every size), alerts."""
    from pipeline.detect.detection import Detection
    from pipeline.runtime.restore import PartitionState
    from pathlib import Path

    from pipeline.sim.simulator import Simulator

    sim = Simulator.from_scenario(Path(__file__).parents[1] / "data" / "fleet_1000.yaml", seed=2)
    core = Ingest(Validator(sim.topology), 600, 1)
    ps = PartitionState(PartitionWindows(0, 600, 60, 1, grid_s=30), Detection(interval_s=30, window_s=600))
    raws = [orjson.dumps(r) for r in sim.reports(12 * 60)]
    states: list[dict] = []
    for i in range(0, len(raws), 500):
        res = core.process_batch([(r, 0, i + j) for j, r in enumerate(raws[i:i + 500])], "r", time.time() + 10**9)
        for payload in res.messages.get(0, []):
            for msg in decode_pairs(payload):
                ps.step.apply(msg)
        states += [v for v in list(ps.detection.take_dirty().values()) + list(ps.windows.take_dirty().values()) if v]
    return states


def test_state_values_encode_to_what_orjson_wrote():
    """The state topic's values are written by msgspec (``encode_state``, about half the time) where they were
    by orjson (``encode``): each decodes to the very same value, floats to the bit (NaN and infinities to
    null in both), so a state written by either restores the same."""
    edge = {"f": [0.1, 1e300, -1e-300, 5e-324, 1.7976931348623157e308, -0.0, 123456789012345680.0, 1.0, 2.5e-05],
            "n": [float("nan"), float("inf"), -float("inf")], "k": {1: 2, -3: [4]}, "s": "é\"\\\n\u2028\x00",
            "i": [2**63 - 1, -2**63, 0], "t": (1, None, True)}
    states = _states_of_a_small_fleet()
    assert len(states) > 1000 and any("I" in s for s in states) and any("model" in s for s in states)
    for value in [edge, *states]:
        got, want = orjson.loads(encode_state(value)), orjson.loads(encode(value))
        assert got == want
        assert orjson.dumps(got) == orjson.dumps(want)  # floats equal to the bit, the same key order


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(1, 40), st.sampled_from([1_000, 4_000, 20_000, 1_000_000]))
def test_a_window_above_the_message_limit_goes_in_parts_holding_each_instance_once(n, name_len, limit):
    """A closed window whose record with its instances is above ``limit`` goes as several records: each is the
    whole window (every other field equal, valid against the topic's schema) with a run of the instances, in
    order, every instance in exactly one; each within ``limit``. (Before, the record went without its instances
    and that window had no instance rows in ClickHouse.)"""
    inst = {f"{i:0{name_len}d}": [i + 1, 2 * i, i % 3, i % 2, 1, 1 + i % 4, i % 5, 900 * (i % 5)] for i in range(n)}
    agg = WindowAgg(["s1", "a1", "v"], ["s2", "a2", "v"], 600, [sum(c[k] for c in inst.values()) for k in range(8)],
                    {159: 2}, set(inst), instances=inst)
    rec = agg.record(600)
    whole = orjson.loads(encode(rec))
    msgs = encode_window(rec, limit)
    got = [orjson.loads(m) for m in msgs]
    validate = Draft202012Validator(schema("flow_window")).validate
    for g in got:
        validate(g)
    if len(encode(rec)) <= limit:
        assert got == [whole]
        return
    assert len(msgs) > 1
    assert [(g["instances_part"], g["instances_parts"]) for g in got] == [(i, len(msgs)) for i in range(len(msgs))]
    assert [e for g in got for e in g["instances"]] == whole["instances"]  # each once, in order
    assert all(g["instances"] for g in got)
    for g in got:
        assert {k: v for k, v in g.items() if not k.startswith("instances")} == \
               {k: v for k, v in whole.items() if k != "instances"}
    assert all(len(m) <= limit for m in msgs)
