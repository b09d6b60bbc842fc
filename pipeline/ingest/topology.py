"""Network topology: region → VPCs → AZs → subnets (CIDRs) → instances.

Pure module (no Kafka). Loads the topology YAML used by the simulator and by the
pipeline to place endpoints whose report omits ``subnet``/``az``/``vpc``::

    region: r1
    vpcs:
      - id: vpc-a
        azs:
          - id: az1
            subnets:
              - {id: subnet-1a, cidr: 10.0.0.0/24, instances: 20}

The same mapping may sit under a ``topology:`` key of a scenario file; both forms are
accepted (``topology:`` may also be a path, relative to the scenario file).

Rules
-----
* An AZ id may appear under several VPCs: it is the same zone.
* Ids must be unique: VPC ids, subnet ids (region-wide), an AZ id once per VPC; and an
  id names one kind only (a subnet can't share an id with an AZ or a VPC), because
  traffic scopes are given by bare id. ``external`` is reserved.
* Instances of a subnet are ``<subnet id>/<n>``, n from 0; instance n has the (n+4)th
  address of the CIDR (AWS reserves the first four and the last one), so a subnet holds
  at most ``num_addresses - 5`` instances.
* Subnet CIDRs (IPv4 or IPv6) must not overlap, anywhere in the region.

Examples
--------
>>> t = load_topology('''
... region: r1
... vpcs:
...   - id: vpc-a
...     azs:
...       - id: az1
...         subnets: [{id: subnet-1a, cidr: 10.0.0.0/24, instances: 2}]
...       - id: az2
...         subnets: [{id: subnet-2a, cidr: 10.0.1.0/24, instances: 1}]
... ''')
>>> t.instances["subnet-1a/1"]
Placement(instance='subnet-1a/1', ip='10.0.0.5', subnet='subnet-1a', az='az1', vpc='vpc-a')
>>> t.locate("10.0.1.200")
Location(subnet='subnet-2a', az='az2', vpc='vpc-a')
>>> t.locate("8.8.8.8").subnet
'external'
>>> t.category("az1", "vpc-a", "az2", "vpc-a")
'inter-az'
>>> t.members("az2")
('subnet-2a/0',)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

__all__ = [
    "EXTERNAL",
    "RESERVED_HEAD",
    "Category",
    "Location",
    "Placement",
    "Subnet",
    "Topology",
    "category",
    "load_topology",
    "read_yaml_source",
]

EXTERNAL = "external"
RESERVED_HEAD = 4  # AWS reserves the first 4 addresses of a subnet (and the last one)
Category = Literal["intra-az", "inter-az", "inter-vpc", "external"]


class Location(NamedTuple):
    """Where an address sits: subnet, AZ and VPC ids (all ``external`` outside every CIDR)."""

    subnet: str
    az: str
    vpc: str


class Placement(NamedTuple):
    """One instance: its id, IP address and placement."""

    instance: str
    ip: str
    subnet: str
    az: str
    vpc: str

    @property
    def location(self) -> Location:
        return Location(self.subnet, self.az, self.vpc)


@dataclass(frozen=True, slots=True)
class Subnet:
    """A subnet: id, CIDR, zone, VPC and instance count."""

    id: str
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    az: str
    vpc: str
    n_instances: int

    @property
    def location(self) -> Location:
        return Location(self.id, self.az, self.vpc)

    def instance_ids(self) -> list[str]:
        return [f"{self.id}/{n}" for n in range(self.n_instances)]


EXTERNAL_LOCATION = Location(EXTERNAL, EXTERNAL, EXTERNAL)


def category(src_az: str, src_vpc: str, dst_az: str, dst_vpc: str) -> Category:
    """Traffic category of a (source, destination) placement pair.

    ``external`` if either end is external, else ``inter-vpc`` if the VPCs differ, else
    ``inter-az`` if the zones differ, else ``intra-az``.

    Examples
    --------
    >>> category("az1", "vpc-a", "az1", "vpc-a")
    'intra-az'
    >>> category("az1", "vpc-a", "az1", "vpc-b")
    'inter-vpc'
    >>> category("az1", "vpc-a", "external", "external")
    'external'
    """
    if src_vpc == EXTERNAL or dst_vpc == EXTERNAL or src_az == EXTERNAL or dst_az == EXTERNAL:
        return "external"
    if src_vpc != dst_vpc:
        return "inter-vpc"
    if src_az != dst_az:
        return "inter-az"
    return "intra-az"


def _parse_ip(ip: str) -> tuple[int, int]:
    """(version, integer value) of an IP address string; ValueError if it is not one."""
    try:
        if ":" in ip:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, TypeError):
        raise ValueError(f"not an IP address: {ip!r}") from None


@dataclass(eq=False)
class Topology:
    """A loaded, validated topology. Build it with :func:`load_topology`.

    Attributes: ``region``; ``vpcs`` (VPC id → tuple of its AZ ids); ``azs`` (AZ id →
    tuple of VPC ids it appears in); ``subnets`` (id → :class:`Subnet`); ``instances``
    (id → :class:`Placement`, in file order); ``source`` (where it came from, for messages).
    """

    region: str
    vpcs: dict[str, tuple[str, ...]]
    azs: dict[str, tuple[str, ...]]
    subnets: dict[str, Subnet]
    instances: dict[str, Placement]
    source: str = "<dict>"
    max_cache: int = 1 << 20
    _tables: dict[int, list[tuple[int, dict[int, Location]]]] = field(default_factory=dict, repr=False)
    _cache: dict[str, Location] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_len: dict[tuple[int, int], dict[int, Location]] = {}
        for s in self.subnets.values():
            bits = s.cidr.max_prefixlen
            shift = bits - s.cidr.prefixlen
            by_len.setdefault((s.cidr.version, shift), {})[int(s.cidr.network_address) >> shift] = s.location
        for (version, shift), table in sorted(by_len.items()):  # smallest shift = longest prefix first
            self._tables.setdefault(version, []).append((shift, table))
        for p in self.instances.values():
            if len(self._cache) >= self.max_cache:
                break
            self._cache[p.ip] = Location(p.subnet, p.az, p.vpc)

    # --- hot path -----------------------------------------------------------------
    def locate(self, ip: str) -> Location:
        """Subnet/AZ/VPC of an address by longest-prefix match (IPv4 and IPv6).

        Addresses outside every subnet CIDR give ``Location('external', 'external',
        'external')``; a string that is not an IP address raises ValueError. Results are
        cached in a dict bounded by ``max_cache`` (cleared when full), so a repeated
        address costs one dict lookup.

        Examples
        --------
        >>> t = load_topology({"region": "r", "vpcs": [{"id": "v", "azs": [{"id": "z",
        ...     "subnets": [{"id": "s6", "cidr": "2001:db8::/64", "instances": 1}]}]}]})
        >>> t.locate("2001:db8::4"), t.locate("2001:db9::1").vpc
        (Location(subnet='s6', az='z', vpc='v'), 'external')
        """
        try:
            return self._cache[ip]
        except KeyError:
            pass
        loc = self._lookup(ip)
        cache = self._cache
        if len(cache) >= self.max_cache:
            cache.clear()
        cache[ip] = loc
        return loc

    def _lookup(self, ip: str) -> Location:
        version, value = _parse_ip(ip)
        for shift, table in self._tables.get(version, ()):
            loc = table.get(value >> shift)
            if loc is not None:
                return loc
        return EXTERNAL_LOCATION

    category = staticmethod(category)

    # --- scopes ---------------------------------------------------------------------
    def scope_kind(self, scope: str) -> Literal["instance", "subnet", "az", "vpc"]:
        """What an id names: ``instance``, ``subnet``, ``az`` or ``vpc``; KeyError if nothing."""
        if scope in self.instances:
            return "instance"
        if scope in self.subnets:
            return "subnet"
        if scope in self.azs:
            return "az"
        if scope in self.vpcs:
            return "vpc"
        raise KeyError(scope)

    def members(self, scope: str) -> tuple[str, ...]:
        """Instance ids in a scope (an instance, subnet, AZ or VPC id), in topology order.

        Raises KeyError for an unknown scope. An AZ scope spans every VPC the AZ is in.
        """
        kind = self.scope_kind(scope)
        if kind == "instance":
            return (scope,)
        attr = {"subnet": 2, "az": 3, "vpc": 4}[kind]
        return tuple(p.instance for p in self.instances.values() if p[attr] == scope)

    def __len__(self) -> int:
        return len(self.instances)


# ------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------
_TOP_KEYS = {"region", "vpcs", "description", "name"}
_VPC_KEYS = {"id", "azs", "name", "description"}
_AZ_KEYS = {"id", "subnets", "name", "description"}
_SUBNET_KEYS = {"id", "cidr", "instances", "name", "description"}


def read_yaml_source(source: str | Path | Mapping[str, Any], what: str = "file") -> tuple[Any, str, Path | None]:
    """Read YAML from a path, a YAML string or an already-parsed mapping.

    Returns ``(data, label, path)``: ``label`` names the source in error messages,
    ``path`` is the file (or None). A ``str`` is taken as a path if it has no newline
    and ends in ``.yaml``/``.yml`` or names an existing file; otherwise as YAML text.

    Examples
    --------
    >>> read_yaml_source("a: 1")[:2]
    ({'a': 1}, '<string>')
    """
    if isinstance(source, Mapping):
        return dict(source), "<dict>", None
    path: Path | None = None
    if isinstance(source, Path):
        path = source
    elif isinstance(source, str) and "\n" not in source and (
        source.endswith((".yaml", ".yml")) or Path(source).is_file()
    ):
        path = Path(source)
    if path is not None:
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"{what} {path}: cannot read: {e.strerror or e}") from e
        label = str(path)
    else:
        text, label = str(source), "<string>"
    try:
        return yaml.safe_load(text), label, path
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {label}: invalid YAML: {e}") from e


def load_topology(source: str | Path | Mapping[str, Any] | Topology, *, max_cache: int = 1 << 20) -> Topology:
    """Load and validate a topology from a path, a YAML string or a dict.

    A scenario (a mapping with a ``topology:`` key) is accepted too; its ``topology``
    may be a mapping or a path (relative to the scenario file). A :class:`Topology` is
    returned unchanged. Errors are ``ValueError("topology <source>: <field>: <problem>")``.

    Examples
    --------
    >>> load_topology({"region": "r", "vpcs": [{"id": "v", "azs": [{"id": "z",
    ...     "subnets": [{"id": "s", "cidr": "10.0.0.0/29", "instances": 4}]}]}]})
    Traceback (most recent call last):
    ...
    ValueError: topology <dict>: vpcs[0].azs[0].subnets[0].instances: 4 instances do not fit in 10.0.0.0/29 (max 3: AWS reserves the first 4 addresses and the last one)
    """
    if isinstance(source, Topology):
        return source
    data, label, path = read_yaml_source(source, "topology")
    if isinstance(data, Mapping) and "topology" in data:
        inner = data["topology"]
        if isinstance(inner, str) and "\n" not in inner:
            p = Path(inner)
            if path is not None and not p.is_absolute():
                p = path.parent / p
            return load_topology(p, max_cache=max_cache)
        data, label = inner, f"{label} (topology:)"
    return _build(data, label, max_cache)


class _Reader:
    """Checks on a topology file's parts; every error names the file and the field."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, where: str, msg: str) -> ValueError:
        return ValueError(f"topology {self.label}: {where}: {msg}" if where else f"topology {self.label}: {msg}")

    def mapping(self, obj: Any, where: str, keys: set[str], required: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(obj, Mapping):
            raise self.fail(where or "top level", f"expected a mapping, got {type(obj).__name__}")
        unknown = sorted(set(map(str, obj)) - keys)
        if unknown:
            raise self.fail(where or "top level", f"unknown field(s) {unknown}; allowed: {sorted(keys)}")
        for k in required:
            if k not in obj or obj[k] is None:
                raise self.fail(f"{where}.{k}" if where else k, "missing required field")
        return obj

    def seq(self, obj: Any, where: str) -> list[Any]:
        if not isinstance(obj, list) or not obj:
            raise self.fail(where, "expected a non-empty list")
        return obj

    def ident(self, obj: Any, where: str) -> str:
        if not isinstance(obj, str | int) or isinstance(obj, bool) or not str(obj).strip():
            raise self.fail(where, f"expected a non-empty string id, got {obj!r}")
        s = str(obj)
        if s == EXTERNAL:
            raise self.fail(where, f"'{EXTERNAL}' is reserved")
        if "/" in s:
            raise self.fail(where, f"id {s!r} must not contain '/' (used in instance ids)")
        return s

    def subnet(self, s: Any, sw: str, aid: str, vid: str, subnets: Mapping[str, Subnet],
               where_of: Mapping[str, str]) -> Subnet:
        s = self.mapping(s, sw, _SUBNET_KEYS, ("id", "cidr"))
        sid = self.ident(s["id"], f"{sw}.id")
        if sid in subnets:
            raise self.fail(f"{sw}.id", f"duplicate subnet id {sid!r} (also {where_of[sid]})")
        try:
            net = ipaddress.ip_network(str(s["cidr"]), strict=True)
        except ValueError as e:
            raise self.fail(f"{sw}.cidr", f"invalid CIDR {s['cidr']!r}: {e}") from None
        n = s.get("instances", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise self.fail(f"{sw}.instances", f"expected a non-negative integer, got {n!r}")
        cap = max(net.num_addresses - RESERVED_HEAD - 1, 0)
        if n > cap:
            raise self.fail(
                f"{sw}.instances",
                f"{n} instances do not fit in {net} (max {cap}: AWS reserves the first 4 addresses and the last one)",
            )
        return Subnet(sid, net, aid, vid, n)


def _build(data: Any, label: str, max_cache: int) -> Topology:
    rd = _Reader(label)
    top = rd.mapping(data, "", _TOP_KEYS, ("region", "vpcs"))
    region = rd.ident(top["region"], "region")
    vpcs, azs, subnets, where_of = _read_vpcs(rd, top["vpcs"])
    _check_one_kind_per_id(rd, subnets, azs, vpcs)
    _check_no_overlap(rd, subnets, where_of)
    return Topology(
        region=region,
        vpcs={k: tuple(v) for k, v in vpcs.items()},
        azs={k: tuple(v) for k, v in azs.items()},
        subnets=subnets,
        instances=_place_instances(subnets),
        source=label,
        max_cache=max_cache,
    )


def _read_vpcs(rd: _Reader, raw: Any) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, Subnet], dict[str, str]]:
    """VPC -> AZs, AZ -> VPCs, subnets, and where in the file each id was defined."""
    vpcs: dict[str, list[str]] = {}
    azs: dict[str, list[str]] = {}
    subnets: dict[str, Subnet] = {}
    where_of: dict[str, str] = {}
    for i, v in enumerate(rd.seq(raw, "vpcs")):
        vw = f"vpcs[{i}]"
        v = rd.mapping(v, vw, _VPC_KEYS, ("id", "azs"))
        vid = rd.ident(v["id"], f"{vw}.id")
        if vid in vpcs:
            raise rd.fail(f"{vw}.id", f"duplicate VPC id {vid!r} (also {where_of[vid]})")
        vpcs[vid], where_of[vid] = [], vw
        for j, a in enumerate(rd.seq(v["azs"], f"{vw}.azs")):
            aw = f"{vw}.azs[{j}]"
            a = rd.mapping(a, aw, _AZ_KEYS, ("id", "subnets"))
            aid = rd.ident(a["id"], f"{aw}.id")
            if aid in vpcs[vid]:
                raise rd.fail(f"{aw}.id", f"duplicate AZ id {aid!r} in VPC {vid!r}")
            vpcs[vid].append(aid)
            azs.setdefault(aid, []).append(vid)
            for k, s in enumerate(rd.seq(a["subnets"], f"{aw}.subnets")):
                sw = f"{aw}.subnets[{k}]"
                sn = rd.subnet(s, sw, aid, vid, subnets, where_of)
                subnets[sn.id], where_of[sn.id] = sn, sw
    return vpcs, azs, subnets, where_of


def _check_one_kind_per_id(rd: _Reader, subnets: Mapping[str, Subnet], azs: Mapping[str, Any],
                           vpcs: Mapping[str, Any]) -> None:
    for kind_a, ids_a, kind_b, ids_b in (
        ("subnet", subnets, "AZ", azs), ("subnet", subnets, "VPC", vpcs), ("AZ", azs, "VPC", vpcs)
    ):
        clash = sorted(set(ids_a) & set(ids_b))
        if clash:
            raise rd.fail("ids", f"{kind_a} and {kind_b} share id(s) {clash}; every id must name one thing")


def _check_no_overlap(rd: _Reader, subnets: Mapping[str, Subnet], where_of: Mapping[str, str]) -> None:
    """Overlapping CIDRs: sort by start, compare with the furthest end seen so far."""
    nets = sorted(subnets.values(), key=lambda s: (s.cidr.version, int(s.cidr.network_address)))
    prev: Subnet | None = None
    for s in nets:
        if prev is not None and prev.cidr.version == s.cidr.version and s.cidr.overlaps(prev.cidr):
            raise rd.fail(
                where_of[s.id] + ".cidr",
                f"{s.id} {s.cidr} overlaps {prev.id} {prev.cidr} ({where_of[prev.id]})",
            )
        if prev is None or prev.cidr.version != s.cidr.version or int(s.cidr.broadcast_address) > int(prev.cidr.broadcast_address):
            prev = s


def _place_instances(subnets: Mapping[str, Subnet]) -> dict[str, Placement]:
    """``<subnet>/<n>`` at the subnet's n-th usable address (after the 4 AWS reserves)."""
    instances: dict[str, Placement] = {}
    for s in subnets.values():
        base = int(s.cidr.network_address) + RESERVED_HEAD
        make = ipaddress.IPv4Address if s.cidr.version == 4 else ipaddress.IPv6Address
        for n in range(s.n_instances):
            iid = f"{s.id}/{n}"
            instances[iid] = Placement(iid, str(make(base + n)), s.id, s.az, s.vpc)
    return instances
