"""The ClickHouse tables as the schema steps define them: columns, types, sort key, version column.

The SQL files in ``schemas/clickhouse/`` are the one definition of every table. This
module reads them (pure text, no ClickHouse) so that Python code needing a table's
columns derives them instead of restating them: the sink
(:mod:`pipeline.clickhouse.writer`) takes its column names, order and types, its
dedup key (``ORDER BY``) and its version column (``ReplacingMergeTree(v)``) from here.

The steps are replayed in order: ``CREATE TABLE`` defines a table, and a later
``ALTER TABLE ... ADD|DROP|MODIFY COLUMN`` changes it, so the result is the table a
fully migrated database has. Any other ``ALTER`` of a table's columns (``RENAME
COLUMN``, ...) raises: teach this module first. :func:`describe_differences` compares
a parsed table with ``DESCRIBE TABLE`` on a live database (the tests run it after the
migrations; the sink can run it at start).

Examples
--------
>>> t = parse_create_table('''CREATE TABLE IF NOT EXISTS t
... (
...     k     String                  COMMENT 'a key, (really)',
...     at    DateTime64(3,'UTC'),
...     n     Nullable(UInt32)        DEFAULT NULL,
...     total UInt64                  MATERIALIZED n * 2,
...     INDEX i k TYPE bloom_filter
... )
... ENGINE = ReplacingMergeTree(at)
... ORDER BY (k, n)''')
>>> [(c.name, c.type) for c in t.columns]
[('k', 'String'), ('at', "DateTime64(3, 'UTC')"), ('n', 'Nullable(UInt32)'), ('total', 'UInt64')]
>>> t.insertable, t.order_by, t.version
(('k', 'at', 'n'), ('k', 'n'), 'at')
>>> sorted(tables())[:3]
['deadletter', 'flow_anomalies', 'flow_attributions']
>>> tables()["flow_windows"].version
'closed_at'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.clickhouse.migrations import load_steps

__all__ = ["Column", "Table", "parse_create_table", "apply_alter", "tables", "describe_differences",
           "normalize_type"]

_IDENT = r"(`[^`]+`|\"[^\"]+\"|\w+)"
_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + _IDENT + r"(?:\." + _IDENT + r")?\s*\(",
    re.IGNORECASE,
)
_ALTER_TABLE_RE = re.compile(r"^\s*ALTER\s+TABLE\s+" + _IDENT + r"(?:\." + _IDENT + r")?\s+(.*)$", re.IGNORECASE | re.DOTALL)
# Words that end a column's type in its definition.
_TYPE_END_RE = re.compile(r"\s+(?:DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL|COMMENT|CODEC|TTL|PRIMARY\s+KEY|SETTINGS)\b",
                          re.IGNORECASE)
_KIND_RE = re.compile(r"\b(DEFAULT|MATERIALIZED|ALIAS|EPHEMERAL)\b", re.IGNORECASE)
# Entries of a column list that are not columns.
_NOT_COLUMN_RE = re.compile(r"^(?:INDEX|PROJECTION|CONSTRAINT|PRIMARY\s+KEY)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Column:
    """One column: name, type (as ``DESCRIBE TABLE`` prints it), and how it gets its value.

    ``kind`` is ``''`` (inserted), ``'DEFAULT'`` (inserted, or computed when omitted),
    ``'MATERIALIZED'`` / ``'ALIAS'`` (computed: never inserted) or ``'EPHEMERAL'``.
    """

    name: str
    type: str
    kind: str = ""

    @property
    def insertable(self) -> bool:
        """Whether an INSERT may give this column a value."""
        return self.kind not in ("MATERIALIZED", "ALIAS")


@dataclass(frozen=True)
class Table:
    """A table of the schema: its columns in table order, sort key, version column and engine."""

    name: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    version: str | None = None
    engine: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every column name, in table order."""
        return tuple(c.name for c in self.columns)

    @property
    def insertable(self) -> tuple[str, ...]:
        """The columns an INSERT may fill, in table order."""
        return tuple(c.name for c in self.columns if c.insertable)

    def types(self, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The types of *names* (default: every column), in that order."""
        by_name = {c.name: c.type for c in self.columns}
        return tuple(by_name[n] for n in (names if names is not None else self.names))


def _unquote(name: str) -> str:
    return name[1:-1] if name[:1] in "`\"" and name[-1:] == name[:1] else name


def _blank_literals(sql: str) -> str:
    """*sql* with the inside of '...' literals replaced by spaces (same length), so that
    parentheses and commas inside strings are not mistaken for syntax."""
    return re.sub(r"'(?:[^'\\]|\\.|'')*'", lambda m: "'" + " " * (len(m.group(0)) - 2) + "'", sql)


def _balanced(text: str, start: int) -> int:
    """Index just after the parenthesis that closes the one at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced parentheses in {text[start:start + 60]!r}...")


def _split_top_level(text: str, blank: str) -> list[str]:
    """Split *text* on the commas outside parentheses (found in *blank*, its literal-free twin)."""
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(blank):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return [p.strip() for p in parts if p.strip()]


def normalize_type(text: str) -> str:
    """A type as ClickHouse prints it: one space after each comma, none inside parentheses.

    >>> normalize_type("Map( UInt16 ,UInt64 )"), normalize_type("DateTime64(3,'UTC')")
    ('Map(UInt16, UInt64)', "DateTime64(3, 'UTC')")
    """
    text = re.sub(r"\s+", " ", text.strip())
    text = re.sub(r"\s*,\s*", ", ", text)
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", text))


def _parse_column(definition: str) -> Column:
    """``name Type [DEFAULT ...] [COMMENT '...'] ...`` → :class:`Column`."""
    blank = _blank_literals(definition)
    m = re.match(_IDENT + r"\s+", blank)
    if m is None:
        raise ValueError(f"cannot read a column in {definition!r}")
    rest_blank = blank[m.end():]
    end = _TYPE_END_RE.search(rest_blank)
    type_text = definition[m.end(): m.end() + (end.start() if end else len(rest_blank))]
    kind = _KIND_RE.search(rest_blank[end.start():]) if end else None
    return Column(_unquote(m.group(1)), normalize_type(type_text), kind.group(1).upper() if kind else "")


def _key_parts(expr: str) -> tuple[str, ...]:
    """``(a, b)`` / ``a`` / ``tuple()`` → its parts: column names unquoted, expressions as written."""
    expr = expr.strip()
    if expr.startswith("(") and _balanced(expr, 0) == len(expr):
        expr = expr[1:-1]
    elif re.fullmatch(r"tuple\(\s*\)", expr, re.IGNORECASE):
        return ()
    return tuple(_unquote(p) for p in _split_top_level(expr, _blank_literals(expr)))


def parse_create_table(statement: str) -> Table:
    """A ``CREATE TABLE name (columns) ENGINE = ... ORDER BY ...`` statement → :class:`Table`.

    Comments must be out already (:func:`pipeline.clickhouse.migrations.split_statements`
    keeps them; ``tables`` strips them). The version column is the argument of
    ``ReplacingMergeTree(...)`` (None for other engines); ``order_by`` holds the parts of
    ``ORDER BY`` (column names, or expressions as written).

    >>> parse_create_table("CREATE TABLE t (a UInt8) ENGINE = Memory").engine
    'Memory'
    """
    blank = _blank_literals(statement)
    m = _CREATE_TABLE_RE.match(blank)
    if m is None:
        raise ValueError(f"not a CREATE TABLE with a column list: {statement[:80]!r}")
    name = _unquote(m.group(2) or m.group(1))
    body_end = _balanced(blank, m.end() - 1)
    body, body_blank = statement[m.end(): body_end - 1], blank[m.end(): body_end - 1]
    columns = tuple(_parse_column(part) for part in _split_top_level(body, body_blank) if not _NOT_COLUMN_RE.match(part))
    tail = blank[body_end:]
    engine = re.search(r"ENGINE\s*=\s*(\w+)", tail, re.IGNORECASE)
    version = re.search(r"ENGINE\s*=\s*ReplacingMergeTree\s*\(\s*(\w*)\s*\)", tail, re.IGNORECASE)
    order = re.search(r"\bORDER\s+BY\s+(.+?)\s*(?:\bSETTINGS\b|\bTTL\b|\bPRIMARY\s+KEY\b|\bSAMPLE\s+BY\b|$)",
                      tail, re.IGNORECASE | re.DOTALL)
    return Table(name, columns, _key_parts(statement[body_end + order.start(1): body_end + order.end(1)]) if order else (),
                 (version.group(1) or None) if version else None, engine.group(1) if engine else "")


def apply_alter(table: Table, statement: str) -> Table:
    """*table* after ``ALTER TABLE ... ADD|DROP|MODIFY COLUMN ...`` (several commands, comma-separated).

    >>> t = Table("t", (Column("a", "UInt8"), Column("b", "String")), ("a",))
    >>> t = apply_alter(t, "ALTER TABLE t ADD COLUMN IF NOT EXISTS c UInt32 AFTER a, DROP COLUMN b")
    >>> [(c.name, c.type) for c in apply_alter(t, "ALTER TABLE t MODIFY COLUMN c UInt64").columns]
    [('a', 'UInt8'), ('c', 'UInt64')]
    """
    blank = _blank_literals(statement)
    m = _ALTER_TABLE_RE.match(blank)
    if m is None:
        raise ValueError(f"not an ALTER TABLE: {statement[:80]!r}")
    commands, commands_blank = statement[m.start(3):], m.group(3)
    columns = list(table.columns)
    for command in _split_top_level(commands, commands_blank):
        verb = re.match(r"(ADD|DROP|MODIFY)\s+COLUMN\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?", command, re.IGNORECASE)
        if verb is None:
            if re.search(r"\bCOLUMN\b", command, re.IGNORECASE):
                raise ValueError(f"{table.name}: cannot follow {command!r} (only ADD/DROP/MODIFY COLUMN)")
            continue  # settings, TTL, indexes: no column change
        action, rest = verb.group(1).upper(), command[verb.end():]
        names = [c.name for c in columns]
        if action == "DROP":
            columns = [c for c in columns if c.name != _unquote(rest.strip())]
            continue
        placed = re.search(r"\s+(AFTER\s+" + _IDENT + r"|FIRST)\s*$", rest, re.IGNORECASE)
        col = _parse_column(rest[: placed.start()] if placed else rest)
        if action == "MODIFY":
            columns = [replace(col, kind=col.kind or c.kind) if c.name == col.name else c for c in columns]
        elif col.name not in names:
            at = len(columns) if placed is None else 0 if placed.group(1).upper() == "FIRST" \
                else names.index(_unquote(placed.group(2))) + 1
            columns.insert(at, col)
    return replace(table, columns=tuple(columns))


_LITERAL_OR_COMMENT = re.compile(r"'(?:[^'\\]|\\.|'')*'|`[^`]*`|\"[^\"]*\"|(--|#)[^\n]*|/\*.*?\*/", re.DOTALL)


def _strip_comments(sql: str) -> str:
    r"""*sql* without its comments, read left to right: a quote inside a comment is not a string, and ``--`` inside
    a string is not a comment.

    >>> _strip_comments("-- the pair's windows\nCREATE TABLE t (a String DEFAULT '--x') -- it's\n")
    "\nCREATE TABLE t (a String DEFAULT '--x') \n"
    """
    return _LITERAL_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0)[0] in "'`\"" else "", sql)


@cache
def _tables_cached(directory: str | None) -> dict[str, Table]:
    result: dict[str, Table] = {}
    for step in load_steps(Path(directory) if directory else None):
        for statement in step.statements:
            sql = _strip_comments(statement)
            if _CREATE_TABLE_RE.match(_blank_literals(sql)):
                table = parse_create_table(sql)
                result.setdefault(table.name, table)  # IF NOT EXISTS: the first definition stands
            elif (m := _ALTER_TABLE_RE.match(_blank_literals(sql))) is not None:
                name = _unquote(m.group(2) or m.group(1))
                if name in result:
                    result[name] = apply_alter(result[name], sql)
    return result


def tables(directory: Path | None = None) -> dict[str, Table]:
    """Every table the schema steps create, as a fully migrated database has it (views excluded).

    *directory* defaults to ``schemas/clickhouse``; the result is cached.
    """
    return dict(_tables_cached(str(directory) if directory is not None else None))


def describe_differences(client: Any, table: Table, names: tuple[str, ...] | None = None) -> list[str]:
    """Where ``DESCRIBE TABLE`` on *client*'s database differs from *names* of *table* (default: every column).

    Compares names, order and types of the described columns that an INSERT may fill
    with the given ones; ``[]`` when they agree. Each difference is one readable line.
    """
    names = table.names if names is None else names
    want = list(zip(names, table.types(names)))
    rows = client.query(f"DESCRIBE TABLE `{table.name}`").result_rows
    got = [(r[0], r[1]) for r in rows if r[2] not in ("MATERIALIZED", "ALIAS")]
    if got == want:
        return []
    problems = []
    got_types, want_types = dict(got), dict(want)
    for n, t in want:
        if n not in got_types:
            problems.append(f"{table.name}.{n}: written as {t}, missing from the table")
        elif got_types[n] != t:
            problems.append(f"{table.name}.{n}: written as {t}, the table has {got_types[n]}")
    problems += [f"{table.name}.{n}: in the table ({t}), not written" for n, t in got if n not in want_types]
    if not problems:
        problems.append(f"{table.name}: columns in another order: table {[n for n, _ in got]}, written {list(names)}")
    return problems
