"""Topology loading, validation and address lookup (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.sim.scenario import DEMO_SCENARIO
from pipeline.ingest.topology import EXTERNAL, Location, Topology, category, load_topology

DATA = Path(__file__).parents[1] / "data"
HTTP = DEMO_SCENARIO
FLEET = DATA / "fleet_1000.yaml"

BASIC = """
region: r1
vpcs:
  - id: vpc-a
    azs:
      - id: az1
        subnets:
          - {id: subnet-1a, cidr: 10.0.0.0/24, instances: 20}
          - {id: subnet-1b, cidr: 10.0.1.0/28, instances: 11}
      - id: az2
        subnets:
          - {id: subnet-2a, cidr: 10.0.2.0/24, instances: 3}
  - id: vpc-b
    azs:
      - id: az1
        subnets:
          - {id: subnet-b1, cidr: "2001:db8:0:1::/64", instances: 2}
"""


@pytest.fixture(scope="module")
def basic() -> Topology:
    return load_topology(BASIC)


def test_instances_named_and_addressed(basic: Topology) -> None:
    assert len(basic) == 20 + 11 + 3 + 2
    p = basic.instances["subnet-1a/0"]
    assert (p.ip, p.subnet, p.az, p.vpc) == ("10.0.0.4", "subnet-1a", "az1", "vpc-a")
    assert basic.instances["subnet-1a/19"].ip == "10.0.0.23"
    assert basic.instances["subnet-1b/10"].ip == "10.0.1.14"  # /28: 16 - 5 = 11 fit
    assert basic.instances["subnet-b1/1"].ip == "2001:db8:0:1::5"
    assert list(basic.instances)[:2] == ["subnet-1a/0", "subnet-1a/1"]


def test_same_az_in_several_vpcs(basic: Topology) -> None:
    assert basic.azs == {"az1": ("vpc-a", "vpc-b"), "az2": ("vpc-a",)}
    assert basic.vpcs == {"vpc-a": ("az1", "az2"), "vpc-b": ("az1",)}
    az1 = basic.members("az1")
    assert len(az1) == 20 + 11 + 2 and "subnet-b1/0" in az1
    assert basic.members("vpc-b") == ("subnet-b1/0", "subnet-b1/1")
    assert basic.members("subnet-1a/3") == ("subnet-1a/3",)
    with pytest.raises(KeyError):
        basic.members("nope")


def test_every_instance_ip_locates_to_itself() -> None:
    for src in (BASIC, HTTP, FLEET):
        t = load_topology(src, max_cache=4)  # tiny cache: exercise the slow path too
        for p in t.instances.values():
            assert t.locate(p.ip) == (p.subnet, p.az, p.vpc) == p.location
            t._cache.clear()
            assert t.locate(p.ip) == p.location
        assert len(t._cache) <= 4


@pytest.mark.parametrize("ip", ["8.8.8.8", "10.0.3.1", "10.0.1.16", "192.168.0.1", "::1", "2001:db8:0:2::4"])
def test_outside_ips_are_external(basic: Topology, ip: str) -> None:
    assert basic.locate(ip) == Location(EXTERNAL, EXTERNAL, EXTERNAL)


def test_lookup_covers_whole_cidr_including_reserved(basic: Topology) -> None:
    assert basic.locate("10.0.0.0").subnet == "subnet-1a"
    assert basic.locate("10.0.0.255").subnet == "subnet-1a"
    assert basic.locate("10.0.1.15").subnet == "subnet-1b"
    assert basic.locate("2001:db8:0:1:ffff:ffff:ffff:ffff").subnet == "subnet-b1"


def test_bad_ip_raises(basic: Topology) -> None:
    for bad in ("10.0.0", "not-an-ip", "10.0.0.256", ""):
        with pytest.raises(ValueError, match="not an IP address"):
            basic.locate(bad)


def test_cache_is_bounded() -> None:
    t = load_topology(BASIC, max_cache=100)
    for i in range(1000):
        t.locate(f"172.16.{i // 250}.{i % 250}")
        assert len(t._cache) <= 100


def test_locate_answers_every_instance_from_the_cache() -> None:
    """Every instance's address resolves to its own subnet, and again from the cache (cost: benchmarks.micro)."""
    t = load_topology(FLEET)
    for _ in range(2):
        for p in t.instances.values():
            assert t.locate(p.ip).subnet == p.subnet


def test_category() -> None:
    assert category("az1", "v", "az1", "v") == "intra-az"
    assert category("az1", "v", "az2", "v") == "inter-az"
    assert category("az1", "v", "az2", "w") == "inter-vpc"
    assert category("az1", "v", "az1", "w") == "inter-vpc"
    assert category(EXTERNAL, EXTERNAL, "az1", "v") == "external"
    assert Topology.category("az1", "v", "az1", "v") == "intra-az"


def test_sources_path_str_dict_scenario(tmp_path: Path) -> None:
    d = yaml.safe_load(BASIC)
    a, b, c = load_topology(d), load_topology(BASIC), load_topology({"topology": d, "traffic": []})
    f = tmp_path / "topo.yaml"
    f.write_text(BASIC)
    e, g = load_topology(f), load_topology(str(f))
    s = tmp_path / "scen.yaml"
    s.write_text("seed: 1\ntopology: topo.yaml\n")  # topology by path, relative to the scenario
    h = load_topology(s)
    assert all(x.instances == a.instances for x in (b, c, e, g, h))
    assert load_topology(a) is a
    assert str(f) in e.source
    assert len(load_topology(HTTP)) == 4
    assert len(load_topology(FLEET)) >= 1000


# --- errors --------------------------------------------------------------------------
def _topo(*subnets: dict, azs: list | None = None) -> dict:
    return {"region": "r", "vpcs": [{"id": "v", "azs": azs or [{"id": "z", "subnets": list(subnets)}]}]}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (_topo({"id": "a", "cidr": "10.0.0.0/24"}, {"id": "b", "cidr": "10.0.0.128/25"}),
         r"subnets\[1\]\.cidr: b 10\.0\.0\.128/25 overlaps a 10\.0\.0\.0/24"),
        (_topo({"id": "a", "cidr": "10.0.0.0/16"}, {"id": "b", "cidr": "10.1.0.0/24"}, {"id": "c", "cidr": "10.0.9.0/24"}),
         "c 10.0.9.0/24 overlaps a 10.0.0.0/16"),
        (_topo({"id": "a", "cidr": "10.0.0.0/24"}, {"id": "a", "cidr": "10.0.1.0/24"}),
         r"subnets\[1\]\.id: duplicate subnet id 'a'"),
        (_topo({"id": "a"}), r"subnets\[0\]\.cidr: missing required field"),
        (_topo({"id": "a", "cidr": "10.0.0.0/33"}), r"cidr: invalid CIDR '10\.0\.0\.0/33'"),
        (_topo({"id": "a", "cidr": "10.0.0.1/24"}), "has host bits set"),
        (_topo({"id": "a", "cidr": "10.0.0.0/28", "instances": 12}), "12 instances do not fit in 10.0.0.0/28 .max 11"),
        (_topo({"id": "a", "cidr": "10.0.0.0/24", "instances": -1}), "instances: expected a non-negative integer"),
        (_topo({"id": "a", "cidr": "10.0.0.0/24", "instance": 3}), r"unknown field\(s\) \['instance'\]"),
        (_topo({"id": "z", "cidr": "10.0.0.0/24"}), r"subnet and AZ share id\(s\) \['z'\]"),
        (_topo({"id": "external", "cidr": "10.0.0.0/24"}), "'external' is reserved"),
        (_topo({"id": "a/b", "cidr": "10.0.0.0/24"}), "must not contain '/'"),
        (_topo(azs=[{"id": "z", "subnets": [{"id": "a", "cidr": "10.0.0.0/24"}]},
                    {"id": "z", "subnets": [{"id": "b", "cidr": "10.0.1.0/24"}]}]), "duplicate AZ id 'z' in VPC 'v'"),
        (_topo(azs=[{"id": "z"}]), r"azs\[0\]\.subnets: missing required field"),
        (_topo(azs=[{"id": "z", "subnets": []}]), r"azs\[0\]\.subnets: expected a non-empty list"),
        ({"region": "r", "vpcs": [{"id": "v", "azs": [{"id": "z", "subnets": [{"id": "a", "cidr": "10.0.0.0/24"}]}]},
                                  {"id": "v", "azs": [{"id": "y", "subnets": [{"id": "b", "cidr": "10.0.1.0/24"}]}]}]},
         r"vpcs\[1\]\.id: duplicate VPC id 'v'"),
        ({"vpcs": []}, "region: missing required field"),
        ({"region": "r"}, "vpcs: missing required field"),
        ([1, 2], "top level: expected a mapping"),
    ],
)
def test_bad_topologies(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as ei:
        load_topology(data if isinstance(data, dict) else yaml.safe_dump(data))
    assert str(ei.value).startswith("topology ")


def test_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(_topo({"id": "a", "cidr": "10.0.0.0/24"}, {"id": "b", "cidr": "10.0.0.0/25"})))
    with pytest.raises(ValueError, match=rf"topology {f}: vpcs\[0\]\.azs\[0\]\.subnets\[1\]\.cidr: .*overlaps"):
        load_topology(f)
    f.write_text("region: r\nvpcs: [\n")
    with pytest.raises(ValueError, match=rf"topology {f}: invalid YAML"):
        load_topology(f)
    with pytest.raises(ValueError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")
    s = tmp_path / "scen.yaml"
    s.write_text(yaml.safe_dump({"topology": _topo({"id": "a"})}))
    with pytest.raises(ValueError, match=rf"topology {s} \(topology:\): .*cidr: missing required field"):
        load_topology(s)
