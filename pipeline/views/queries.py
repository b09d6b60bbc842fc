"""The named queries: the SQL behind every console panel and every Grafana panel, one file each.

Each ``schemas/queries/<name>.sql`` holds one SELECT with a header of ``-- key: value``
lines::

    -- title: Traffic between AZs
    -- params: from DateTime, to DateTime
    -- grafana: table
    SELECT ... WHERE window_start >= {from:DateTime} AND window_start < {to:DateTime}

Parameters are ClickHouse's server-side bound parameters (``{name:Type}``); the console
binds them through clickhouse_connect (never by formatting text), and
:func:`grafana_sql` turns the same text into Grafana's ClickHouse-plugin form
(``{from:DateTime}`` -> ``$__fromTime``, ``{to:DateTime}`` -> ``$__toTime``, any other
``{x:String}`` -> ``'${x}'``), so the console and the dashboards run one SQL and cannot
disagree.

Header keys: ``title`` (required), ``params`` (every ``{name:Type}`` of the body, in
order; checked), ``grafana`` (the panel type a dashboard draws it with: ``timeseries``,
``table``, or ``none`` when no dashboard panel uses it), ``grafana_panels`` (a time
series drawn as several panels, one per ``;``-separated group of columns, so that bytes
and counts do not share an axis), ``description`` (optional, repeated lines join). A
time series' first column is ``time`` (what Grafana's plugin expects).

A piece of SQL that several queries share is a *fragment*,
``schemas/queries/fragments/<name>.sql`` (its own ``--`` header lines, then the text), and
``{{name}}`` in a query's body stands for its text; the parameters it binds count as the
query's. ``pair_parts`` is the exact per-pair sums of a range over the rollups.

Examples
--------
>>> q = NamedQuery.parse("demo", "-- title: Demo\\n-- params: from DateTime, n UInt32\\n"
...                      "SELECT * FROM t WHERE ts >= {from:DateTime} LIMIT {n:UInt32}")
>>> q.title, q.params
('Demo', {'from': 'DateTime', 'n': 'UInt32'})
>>> grafana_sql(q.sql)
'SELECT * FROM t WHERE ts >= $__fromTime LIMIT ${n}'
>>> f = {"recent": "ts >= {from:DateTime}"}
>>> NamedQuery.parse("demo", "-- title: Demo\\n-- params: from DateTime\\nSELECT * FROM t WHERE {{recent}}", f).sql
'SELECT * FROM t WHERE ts >= {from:DateTime}'
>>> NamedQuery.parse("demo", "-- title: Demo\\nSELECT * FROM t WHERE {{old}}", f)
Traceback (most recent call last):
...
pipeline.views.queries.QueryError: demo: no fragment 'old' in .../schemas/queries/fragments
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config import SCHEMAS_DIR

__all__ = ["NamedQuery", "load", "get", "run", "grafana_sql", "QUERIES_DIR", "QueryError"]

QUERIES_DIR = SCHEMAS_DIR / "queries"
FRAGMENTS_DIR = QUERIES_DIR / "fragments"

_PARAM = re.compile(r"\{(\w+):([^}]+)\}")
_INCLUDE = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_STRINGY = ("String", "LowCardinality(String)", "Nullable(String)")


class QueryError(ValueError):
    """A named query file that does not follow the format, or a call with the wrong parameters."""


@dataclass(frozen=True)
class NamedQuery:
    name: str
    title: str
    sql: str
    params: dict[str, str] = field(default_factory=dict)
    grafana: str = "none"
    description: str = ""
    #: ``-- grafana_panels: a, b; c``: a time series drawn as one Grafana panel per group of columns
    panels: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def parse(cls, name: str, text: str, fragments: dict[str, str] | None = None) -> NamedQuery:
        header: dict[str, str] = {}
        body: list[str] = []
        for line in text.splitlines():
            m = re.match(r"--\s*(\w+):\s*(.*)$", line) if not body else None
            if m:
                k, v = m.group(1), m.group(2).strip()
                header[k] = f"{header[k]} {v}" if k in header else v
            elif body or (line.strip() and not line.lstrip().startswith("--")):
                body.append(line)
        sql = expand("\n".join(body).strip().rstrip(";").strip(), fragments or {}, name)
        if "title" not in header:
            raise QueryError(f"{name}: no '-- title:' line")
        declared: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in header.get("params", "").split(","))):
            pname, _, ptype = part.partition(" ")
            declared[pname] = ptype.strip()
        used = {n: t for n, t in _PARAM.findall(sql)}
        if used != declared:
            raise QueryError(f"{name}: '-- params:' says {declared}, the SQL binds {used}")
        if not sql.upper().lstrip("( \n").startswith(("SELECT", "WITH")):
            raise QueryError(f"{name}: a named query is one SELECT")
        panels = tuple(tuple(c.strip() for c in g.split(",") if c.strip())
                       for g in header.get("grafana_panels", "").split(";") if g.strip())
        return cls(name, header["title"], sql, declared, header.get("grafana", "none"), header.get("description", ""),
                   panels)

    def bind(self, **values: Any) -> dict[str, Any]:
        """The parameters for clickhouse_connect, checked against the declared ones."""
        missing = set(self.params) - set(values)
        extra = set(values) - set(self.params)
        if missing or extra:
            raise QueryError(f"{self.name}: missing parameters {sorted(missing)}, unknown {sorted(extra)}")
        return dict(values)


def fragment_text(text: str) -> str:
    """A fragment file's SQL: what follows its leading ``--`` header lines."""
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    return textwrap.dedent("\n".join(lines)).strip().rstrip(";")


def expand(sql: str, fragments: dict[str, str], name: str) -> str:
    """``sql`` with every ``{{fragment}}`` replaced by its text (fragments do not nest)."""

    def sub(m: re.Match) -> str:
        try:
            text = fragments[m.group(1)]
        except KeyError:
            raise QueryError(f"{name}: no fragment {m.group(1)!r} in {FRAGMENTS_DIR}") from None
        column = m.start() - (sql.rfind("\n", 0, m.start()) + 1)  # its lines line up under the placeholder
        return text.replace("\n", "\n" + " " * column)

    return _INCLUDE.sub(sub, sql)


@cache
def load(directory: Path = QUERIES_DIR) -> dict[str, NamedQuery]:
    """Every named query of ``directory``, by name (the file's stem), its fragments expanded."""
    frags = {p.stem: fragment_text(p.read_text()) for p in sorted((Path(directory) / "fragments").glob("*.sql"))}
    return {p.stem: NamedQuery.parse(p.stem, p.read_text(), frags) for p in sorted(Path(directory).glob("*.sql"))}


def get(name: str) -> NamedQuery:
    try:
        return load()[name]
    except KeyError:
        raise QueryError(f"no named query {name!r} in {QUERIES_DIR}") from None


def run(client: Any, name: str, **values: Any) -> list[dict[str, Any]]:
    """Run named query ``name`` with bound ``values``; rows as dicts."""
    q = get(name)
    result = client.query(q.sql, parameters=q.bind(**values))
    cols = result.column_names
    return [dict(zip(cols, row)) for row in result.result_rows]


def grafana_sql(sql: str) -> str:
    """The same query in the Grafana ClickHouse plugin's terms (macros and template variables)."""

    def sub(m: re.Match) -> str:
        pname, ptype = m.group(1), m.group(2)
        if pname == "from" and ptype.startswith("DateTime"):
            return "$__fromTime"
        if pname == "to" and ptype.startswith("DateTime"):
            return "$__toTime"
        return f"'${{{pname}}}'" if ptype in _STRINGY else f"${{{pname}}}"

    return _PARAM.sub(sub, sql)
