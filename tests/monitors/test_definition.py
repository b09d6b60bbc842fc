"""Monitor definitions: parsing, one-line errors naming the field, JSON round trip, the wire schema, the topology."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from pipeline.ingest.topology import load_topology
from pipeline.monitors.definition import (ANY, Monitor, MonitorError, Resource, check_topology, parse_monitor,
                                          parse_monitors)
from pipeline.sim.scenario import DEMO_SCENARIO
from pipeline.wire.contract import schema

VALIDATOR = Draft202012Validator(schema("flow_monitor"))


def test_forms_of_a_resource_and_dedup():
    m = parse_monitor({"name": "m-1_x", "local": ["subnet:a", {"az": "z"}, {"kind": "vpc", "id": "v"}, "subnet:a"],
                       "remote": ["region:r1"], "description": "d"})
    assert m.local == (Resource("subnet", "a"), Resource("az", "z"), Resource("vpc", "v"))
    assert m.remote == (Resource("region", "r1"),) and m.description == "d"
    assert parse_monitor({"name": "m", "local": "az:z", "remote": ["any"]}).remote == ANY


@pytest.mark.parametrize("d, message", [
    ({"local": ["az:z"], "remote": "any"}, "monitor: name: missing"),
    ({"name": "UPPER", "local": ["az:z"], "remote": "any"}, "monitor 'UPPER': name: expected 1 to 64 of a-z 0-9 - _"),
    ({"name": "x" * 65, "local": ["az:z"], "remote": "any"}, "name: expected 1 to 64"),
    ({"name": "m", "remote": "any"}, "monitor 'm': local: missing"),
    ({"name": "m", "local": ["az:z"]}, "monitor 'm': remote: missing"),
    ({"name": "m", "local": [], "remote": "any"}, "monitor 'm': local: expected a non-empty list of kind:id"),
    ({"name": "m", "local": "any", "remote": "any"}, "monitor 'm': local: 'any' is for the remote side"),
    ({"name": "m", "local": ["az:z", "any"], "remote": "any"}, "monitor 'm': local: 'any' is for the remote side"),
    ({"name": "m", "local": ["az:z"], "remote": ["any", "az:y"]}, "remote: 'any' already matches everything"),
    ({"name": "m", "local": ["az:z", "zone:q"], "remote": "any"}, "monitor 'm': local[1]: unknown kind 'zone'"),
    ({"name": "m", "local": ["az:"], "remote": "any"}, "monitor 'm': local[0]: az: expected a non-empty id"),
    ({"name": "m", "local": ["az:a b"], "remote": "any"}, "local[0]: az: 'a b' is not an id"),
    ({"name": "m", "local": ["az"], "remote": "any"}, "local[0]: 'az': expected kind:id"),
    ({"name": "m", "local": ["az:z"], "remote": "any", "colour": 1}, "monitor 'm': unknown field(s) ['colour']"),
    ({"name": "m", "local": ["az:z"], "remote": "any", "version": 2}, "version: 2"),
    ("m", "monitor: expected a mapping"),
])
def test_errors_are_one_line_naming_the_field(d, message):
    with pytest.raises(MonitorError) as e:
        parse_monitor(d)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_json_round_trip_and_wire_schema():
    for d in ({"name": "a", "local": ["subnet:s"], "remote": "any"},
              {"name": "b", "local": ["region:r", "az:z"], "remote": ["vpc:v", "subnet:external"], "description": "x"}):
        m = parse_monitor(d)
        assert Monitor.from_json(m.to_json()) == m
        assert list(VALIDATOR.iter_errors(m.to_wire())) == []
    # what the parser refuses, the schema refuses too
    for bad in ({"version": 1, "name": "B", "local": ["az:z"], "remote": "any", "description": ""},
                {"version": 1, "name": "b", "local": ["zone:z"], "remote": "any", "description": ""},
                {"version": 1, "name": "b", "local": ["az:z"], "remote": [], "description": ""}):
        assert list(VALIDATOR.iter_errors(bad)), bad
        with pytest.raises(MonitorError):
            parse_monitor(bad)


def test_a_file_of_monitors():
    ms = parse_monitors({"monitors": [{"name": "a", "local": "az:z", "remote": "any"},
                                      {"name": "b", "local": "az:z", "remote": "subnet:s"}]})
    assert [m.name for m in ms] == ["a", "b"]
    with pytest.raises(MonitorError, match=r"f.yaml: monitors\[1\]: monitor 'a': remote\[0\]: unknown kind"):
        parse_monitors([{"name": "a", "local": "az:z", "remote": "any"},
                        {"name": "a", "local": "az:z", "remote": "x:y"}], "f.yaml")
    with pytest.raises(MonitorError, match="expected a non-empty list"):
        parse_monitors({"other": []}, "f.yaml")


def test_checked_against_the_topology():
    t = load_topology(DEMO_SCENARIO)

    def check(d):
        check_topology(parse_monitor(d), t.subnets, t.azs, t.vpcs, t.region)

    check({"name": "ok", "local": ["subnet:subnet-1a", "az:az-1c", "vpc:vpc-a", "region:ap-northeast-1"],
           "remote": ["subnet:external", "az:az-1d"]})
    check({"name": "ok", "local": ["subnet:subnet-1a"], "remote": "any"})
    with pytest.raises(MonitorError, match=r"local\[1\]: no subnet 'subnet-9' in the topology \(it has subnet-1a, "):
        check({"name": "m", "local": ["subnet:subnet-1a", "subnet:subnet-9"], "remote": "any"})
    with pytest.raises(MonitorError, match=r"remote\[0\]: no region 'eu-west-1'"):
        check({"name": "m", "local": ["subnet:subnet-1a"], "remote": ["region:eu-west-1"]})
    with pytest.raises(MonitorError, match=r"local\[0\]: no subnet 'external'"):  # the agents are inside it
        check({"name": "m", "local": ["subnet:external"], "remote": "any"})
