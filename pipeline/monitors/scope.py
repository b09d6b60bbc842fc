"""What falls in a monitor: pair windows, and the NHI scopes that touch it.  *pure*

A pair window (reporting side ``src``, remote side ``dst``; each a subnet, its AZ and
VPC) falls in a monitor when ``src`` matches one of its local resources **and** ``dst``
one of its remote resources (or the remote side is ``any``). A resource matches a side
by kind: ``subnet:X`` its subnet, ``az:X`` its AZ, ``vpc:X`` its VPC, ``region:R`` any
side inside the topology (not ``external``) when the topology's region is R (without a
topology, the pipeline's one region: every side inside it).

An NHI scope S (``subnet``, ``az``, ``az_pair`` 'A|B', ``vpc``) *touches* a monitor when
some known subnet pair (a, b), a in the monitor's local side and b in its remote side,
crosses S: a or b is subnet S (kind subnet); az(a) or az(b) is S (az); (az(a), az(b)) is
the AZ pair, either order (az_pair); vpc(a) or vpc(b) is S (vpc). The known subnets are
the topology's, plus the ones seen in windows (``Placements.learn``), plus ``external``
on a remote side of ``any``.

Examples
--------
>>> from pipeline.monitors.definition import parse_monitor
>>> m = parse_monitor({"name": "m", "local": ["subnet:s1"], "remote": ["az:az2"]})
>>> window_in(m, Side("s1", "az1", "v"), Side("s3", "az2", "v"))
True
>>> window_in(m, Side("s3", "az2", "v"), Side("s1", "az1", "v"))  # the other direction: not reported by s1
False
>>> p = Placements({"s1": Side("s1", "az1", "v"), "s2": Side("s2", "az1", "v"), "s3": Side("s3", "az2", "v")})
>>> [s for s in (("az_pair", "az2|az1"), ("az", "az1"), ("subnet", "s2"), ("subnet", "s3"), ("vpc", "v"))
...  if touches(m, *s, p)]
[('az_pair', 'az2|az1'), ('az', 'az1'), ('subnet', 's3'), ('vpc', 'v')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pipeline.ingest.topology import EXTERNAL  # where an address outside every known CIDR is placed
from pipeline.monitors.definition import ANY, Monitor, Resource

__all__ = ["Side", "Placements", "side_matches", "window_in", "touches", "EXTERNAL"]

_OUTSIDE = ("", EXTERNAL)


class Side(NamedTuple):
    """One end of a pair window: subnet, AZ and VPC ids."""

    subnet: str
    az: str
    vpc: str


EXTERNAL_SIDE = Side(EXTERNAL, EXTERNAL, EXTERNAL)


def side_matches(resources: Iterable[Resource], side: Side, region: str | None = None) -> bool:
    """Whether ``side`` matches one of ``resources`` (``region``: the topology's, None without one).

    >>> side_matches([Resource("region", "r1")], Side("s", "a", "v"), "r1"), side_matches(
    ...     [Resource("region", "r1")], EXTERNAL_SIDE, "r1"), side_matches([Resource("region", "r2")], Side("s", "a", "v"), "r1")
    (True, False, False)
    """
    for r in resources:
        if r.kind == "subnet":
            if side.subnet == r.id:
                return True
        elif r.kind == "az":
            if side.az == r.id:
                return True
        elif r.kind == "vpc":
            if side.vpc == r.id:
                return True
        elif r.kind == "region":
            if (region is None or region == r.id) and side.subnet not in _OUTSIDE and side.vpc not in _OUTSIDE:
                return True
    return False


def window_in(m: Monitor, src: Side, dst: Side, region: str | None = None) -> bool:
    """Whether the pair window src -> dst falls in monitor ``m``."""
    if not side_matches(m.local, src, region):
        return False
    return m.remote == ANY or side_matches(m.remote, dst, region)  # type: ignore[arg-type]


class Placements:
    """Subnet -> its :class:`Side` (subnet, AZ, VPC), from the topology and from the windows seen; the region.

    >>> p = Placements(region="r1")
    >>> p.learn(Side("s9", "az9", "v9")); p.learn(EXTERNAL_SIDE)
    >>> sorted(p.subnets)
    ['s9']
    """

    def __init__(self, subnets: Mapping[str, Side] | None = None, region: str | None = None) -> None:
        self.subnets: dict[str, Side] = dict(subnets or {})
        self.region = region
        self._fixed = set(self.subnets)

    @classmethod
    def from_topology(cls, topology: Any | None) -> Placements:
        """From a :class:`pipeline.ingest.topology.Topology` (None: nothing known yet, no region)."""
        if topology is None:
            return cls()
        return cls({s.id: Side(s.id, s.az, s.vpc) for s in topology.subnets.values()}, topology.region)

    def learn(self, side: Side) -> None:
        """Remember where a subnet seen in a window is (the topology's placement wins)."""
        if side.subnet in _OUTSIDE or side.subnet in self._fixed:
            return
        self.subnets[side.subnet] = side

    def matching(self, resources: Iterable[Resource] | str, remote: bool = False) -> list[Side]:
        """The known subnets a side's resources match; a remote ``any`` adds ``external``."""
        if resources == ANY:
            return [*self.subnets.values(), EXTERNAL_SIDE] if remote else list(self.subnets.values())
        rs = list(resources)  # type: ignore[arg-type]
        out = [s for s in self.subnets.values() if side_matches(rs, s, self.region)]
        if remote and any(r.kind != "region" and r.id == EXTERNAL for r in rs):
            out.append(EXTERNAL_SIDE)
        return out


def touches(m: Monitor, scope_kind: str, scope: str, placements: Placements) -> bool:
    """Whether NHI scope (``scope_kind``, ``scope``) touches monitor ``m`` (see the module docstring)."""
    local = placements.matching(m.local)
    remote = placements.matching(m.remote, remote=True)
    if not local or not remote:
        return False
    if scope_kind == "subnet":
        return any(s.subnet == scope for s in local) or any(s.subnet == scope for s in remote)
    if scope_kind == "az":
        return any(s.az == scope for s in local) or any(s.az == scope for s in remote)
    if scope_kind == "vpc":
        return any(s.vpc == scope for s in local) or any(s.vpc == scope for s in remote)
    if scope_kind == "az_pair":
        a, sep, b = scope.partition("|")
        if not sep:
            return False
        la, ra = {s.az for s in local}, {s.az for s in remote}
        return (a in la and b in ra) or (b in la and a in ra)
    return False
