"""A monitor's definition: its name, its local resources and its remote resources.  *pure*

A monitor is a named scope. ``local``: where the reporting agents are, a list of
resources ``kind:id`` with kind ``subnet``, ``az``, ``vpc`` or ``region``; ``remote``:
the same, or ``any`` (everything, including remotes outside the topology, subnet
``external``). A pair window falls in a monitor when its reporting side matches one of
the local resources and its remote side one of the remote resources (``monitors.scope``).

Definitions come from a YAML/JSON mapping (a file, the CLI's options, the monitors
topic) and are checked here; every error is one line naming the monitor and the field.
On the monitors topic a definition is the JSON of :meth:`Monitor.to_wire`
(``schemas/wire/flow_monitor.v1.json``), keyed by the monitor's name.

Examples
--------
>>> m = parse_monitor({"name": "web-to-db", "local": ["subnet:web-a", {"az": "az1"}], "remote": ["vpc:vpc-db"]})
>>> m.local, m.remote
((Resource(kind='subnet', id='web-a'), Resource(kind='az', id='az1')), (Resource(kind='vpc', id='vpc-db'),))
>>> m.to_wire()
{'version': 1, 'name': 'web-to-db', 'local': ['subnet:web-a', 'az:az1'], 'remote': ['vpc:vpc-db'], 'description': ''}
>>> Monitor.from_json(m.to_json()) == m
True
>>> parse_monitor({"name": "all-out", "local": "region:eu-west-1", "remote": "any"}).remote
'any'
>>> parse_monitor({"name": "Bad Name", "local": ["subnet:a"], "remote": "any"})
Traceback (most recent call last):
...
pipeline.monitors.definition.MonitorError: monitor 'Bad Name': name: expected 1 to 64 of a-z 0-9 - _
>>> parse_monitor({"name": "m", "local": ["zone:a"], "remote": "any"})
Traceback (most recent call last):
...
pipeline.monitors.definition.MonitorError: monitor 'm': local[0]: unknown kind 'zone' (expected subnet, az, vpc or region)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Union

import orjson

from pipeline.wire.contract import WIRE_VERSION

__all__ = ["KINDS", "ANY", "Resource", "Monitor", "MonitorError", "parse_resource", "parse_monitor",
           "parse_monitors", "check_topology", "NAME_RE"]

#: Resource kinds, in the order they are listed.
KINDS = ("subnet", "az", "vpc", "region")
#: The remote side that matches everything.
ANY = "any"
NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
_FIELDS = {"name", "local", "remote", "description", "version"}
_ID_MAX = 256


class MonitorError(ValueError):
    """A definition that cannot be a monitor; the message is one line naming the monitor and the field."""


class Resource(NamedTuple):
    """One resource of a monitor: ``kind`` (subnet, az, vpc, region) and its ``id``."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


Remote = Union[tuple[Resource, ...], Literal["any"]]


@dataclass(frozen=True)
class Monitor:
    """A named scope: ``local`` resources (reporting side), ``remote`` resources or ``'any'``."""

    name: str
    local: tuple[Resource, ...]
    remote: Remote
    description: str = ""

    @property
    def remote_any(self) -> bool:
        return self.remote == ANY

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready definition (the monitors topic's value)."""
        return {"version": WIRE_VERSION, "name": self.name, "local": [str(r) for r in self.local],
                "remote": ANY if self.remote == ANY else [str(r) for r in self.remote],
                "description": self.description}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_wire())

    @classmethod
    def from_json(cls, data: bytes | str) -> Monitor:
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MonitorError(f"monitor definition: not JSON: {exc}") from None
        return parse_monitor(d)

    def describe(self) -> str:
        """One line: ``local -> remote``.

        >>> parse_monitor({"name": "m", "local": ["subnet:a", "az:z"], "remote": "any"}).describe()
        'subnet:a, az:z -> any'
        """
        remote = ANY if self.remote == ANY else ", ".join(map(str, self.remote))
        return f"{', '.join(map(str, self.local))} -> {remote}"


def parse_resource(item: Any, where: str = "resource", fail: Any = MonitorError) -> Resource:
    """``'kind:id'``, ``{kind: id}`` or ``{kind: k, id: i}`` -> :class:`Resource`.

    >>> parse_resource("az:use1-az1"), parse_resource({"kind": "vpc", "id": "v"})
    (Resource(kind='az', id='use1-az1'), Resource(kind='vpc', id='v'))
    >>> parse_resource("subnet")
    Traceback (most recent call last):
    ...
    pipeline.monitors.definition.MonitorError: resource: 'subnet': expected kind:id, e.g. subnet:subnet-1a
    """
    if isinstance(item, str):
        kind, sep, ident = item.partition(":")
        if not sep:
            raise fail(f"{where}: {item!r}: expected kind:id, e.g. subnet:subnet-1a")
    elif isinstance(item, Mapping) and set(map(str, item)) == {"kind", "id"}:
        kind, ident = item["kind"], item["id"]
    elif isinstance(item, Mapping) and len(item) == 1:
        ((kind, ident),) = item.items()
    else:
        raise fail(f"{where}: expected kind:id or {{kind: id}}, got {item!r}")
    kind, ident = str(kind).strip(), ident
    if kind not in KINDS:
        raise fail(f"{where}: unknown kind {kind!r} (expected subnet, az, vpc or region)")
    if not isinstance(ident, str | int) or isinstance(ident, bool) or not str(ident).strip():
        raise fail(f"{where}: {kind}: expected a non-empty id, got {ident!r}")
    ident = str(ident).strip()
    if len(ident) > _ID_MAX or any(c.isspace() or c in ",|" for c in ident):
        raise fail(f"{where}: {kind}: {ident[:80]!r} is not an id (no spaces, commas or '|'; at most {_ID_MAX})")
    return Resource(kind, ident)


def _resources(raw: Any, where: str, fail: Any, allow_any: bool) -> Remote:
    items = [raw] if isinstance(raw, str | Mapping) else raw
    if not allow_any and isinstance(items, list | tuple) and any(isinstance(i, str) and i.strip() == ANY for i in items):
        raise fail(f"{where}: 'any' is for the remote side; local lists where the reporting agents are")
    if not isinstance(items, list | tuple) or not items:
        raise fail(f"{where}: expected a non-empty list of kind:id" + (" or 'any'" if allow_any else ""))
    if allow_any and any(isinstance(i, str) and i.strip() == ANY for i in items):
        if len(items) > 1:
            raise fail(f"{where}: 'any' already matches everything; give it alone")
        return ANY
    return tuple(dict.fromkeys(parse_resource(i, f"{where}[{n}]", fail) for n, i in enumerate(items)))


def parse_monitor(d: Any, where: str = "") -> Monitor:
    """A mapping (``name``, ``local``, ``remote``, optional ``description``) -> :class:`Monitor`.

    ``where`` prefixes the messages (a file and an index). Duplicate resources are dropped.
    """
    label = where or "monitor"
    if not isinstance(d, Mapping):
        raise MonitorError(f"{label}: expected a mapping with name, local, remote; got {type(d).__name__}")
    name = d.get("name")
    label = f"{where + ': ' if where else ''}monitor {name!r}" if isinstance(name, str) else label

    def fail(msg: str) -> MonitorError:
        return MonitorError(f"{label}: {msg}")

    unknown = sorted(set(map(str, d)) - _FIELDS)
    if unknown:
        raise fail(f"unknown field(s) {unknown}; allowed: description, local, name, remote")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise fail("name: expected 1 to 64 of a-z 0-9 - _" if name is not None else "name: missing")
    if d.get("version", 1) != 1:
        raise fail(f"version: {d.get('version')!r}: this flowmon reads version 1")
    for key in ("local", "remote"):
        if d.get(key) is None:
            raise fail(f"{key}: missing")
    description = d.get("description") or ""
    if not isinstance(description, str):
        raise fail("description: expected text")
    local = _resources(d["local"], "local", fail, allow_any=False)
    remote = _resources(d["remote"], "remote", fail, allow_any=True)
    assert local != ANY
    return Monitor(name, local, remote, description)  # type: ignore[arg-type]


def parse_monitors(data: Any, label: str = "monitors file") -> list[Monitor]:
    """A file's monitors: a YAML list of definitions, or ``{monitors: [...]}``; names must be unique.

    >>> [m.name for m in parse_monitors({"monitors": [{"name": "a", "local": "az:z", "remote": "any"}]})]
    ['a']
    >>> parse_monitors([{"name": "a", "local": "az:z", "remote": "any"}] * 2, "m.yaml")
    Traceback (most recent call last):
    ...
    pipeline.monitors.definition.MonitorError: m.yaml: monitors[1]: monitor 'a' defined twice
    """
    if isinstance(data, Mapping) and set(map(str, data)) == {"monitors"}:
        data = data["monitors"]
    if not isinstance(data, list) or not data:
        raise MonitorError(f"{label}: expected a non-empty list of monitors (or monitors: [...])")
    out: dict[str, Monitor] = {}
    for i, d in enumerate(data):
        m = parse_monitor(d, f"{label}: monitors[{i}]")
        if m.name in out:
            raise MonitorError(f"{label}: monitors[{i}]: monitor {m.name!r} defined twice")
        out[m.name] = m
    return list(out.values())


def check_topology(m: Monitor, subnets: Iterable[str], azs: Iterable[str], vpcs: Iterable[str],
                   region: str) -> None:
    """Refuse resources the topology does not have (``external`` is allowed on the remote side: outside it).

    >>> m = parse_monitor({"name": "m", "local": ["subnet:s1"], "remote": ["az:nowhere"]})
    >>> check_topology(m, ["s1"], ["az1"], ["v"], "r1")
    Traceback (most recent call last):
    ...
    pipeline.monitors.definition.MonitorError: monitor 'm': remote[0]: no az 'nowhere' in the topology (it has az1)
    """
    known = {"subnet": set(subnets), "az": set(azs), "vpc": set(vpcs), "region": {region}}
    sides = [("local", m.local)] + ([] if m.remote == ANY else [("remote", m.remote)])
    for side, resources in sides:
        for i, r in enumerate(resources):
            if r.id in known[r.kind] or (side == "remote" and r.kind != "region" and r.id == "external"):
                continue
            have = sorted(known[r.kind])
            listed = ", ".join(have[:8]) + (f", … ({len(have)} in all)" if len(have) > 8 else "")
            raise MonitorError(f"monitor {m.name!r}: {side}[{i}]: no {r.kind} {r.id!r} in the topology "
                               f"(it has {listed or 'none'})")
