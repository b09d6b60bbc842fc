"""Apply the ClickHouse schema: the ordered steps of ``schemas/clickhouse/NNN_<what>.sql``.  *shell*

Each step is a file of ``;``-separated statements, each safe to rerun
(``CREATE ... IF NOT EXISTS``). A step is applied when it is not recorded in the
``schema_migrations`` ledger, or when one of the objects it creates is missing
(dropped by hand, or a database restored without them). Running :func:`migrate`
twice applies 0 steps the second time (akvorado's habit). Applied steps are
recorded with the checksum of their file; a recorded step whose file changed since
is reported in a warning and not rerun: never edit an applied step, add a new one.

Everything happens in the client's current database (``connect(dsn, database=...)``),
so one ClickHouse (or one chdb directory) can hold several independent databases.

Examples
--------
Pure helpers (the ``migrate`` call itself needs ClickHouse: see tests/clickhouse/test_migrate.py and test_upgrade.py):

>>> split_statements("CREATE TABLE a (x String DEFAULT ';'); -- done; really\\nSELECT 1;")
["CREATE TABLE a (x String DEFAULT ';')", '-- done; really\\nSELECT 1']
>>> created_objects("CREATE VIEW IF NOT EXISTS v AS SELECT 1")
['v']
>>> [s.name for s in load_steps()][:2]
['001_flow_windows', '002_deadletter']
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import SCHEMAS_DIR

__all__ = ["Step", "load_steps", "migrate", "pending_steps", "applied_steps", "split_statements", "created_objects",
           "dropped_objects", "LEDGER"]

log = logging.getLogger(__name__)

#: The ledger table. Part of the migrator rather than a step: it must exist before
#: the first step is looked up.
LEDGER = "schema_migrations"
_LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER}
(
    name       String                COMMENT 'step file name without .sql',
    checksum   String                COMMENT 'sha256 of the step file when applied',
    applied_at DateTime64(3, \'UTC\')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY name
"""

_STEP_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_CREATE_RE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+|LIVE\s+|WINDOW\s+)?"
    r"(?:TABLE|VIEW|DICTIONARY)\s+(?:IF\s+NOT\s+EXISTS\s+)?((?:`[^`]+`|\"[^\"]+\"|[\w]+)(?:\.(?:`[^`]+`|\"[^\"]+\"|[\w]+))?)",
    re.IGNORECASE,
)

_DROP_RE = re.compile(
    r"^\s*DROP\s+(?:TABLE|VIEW|DICTIONARY)\s+(?:IF\s+EXISTS\s+)?((?:`[^`]+`|\"[^\"]+\"|[\w]+)(?:\.(?:`[^`]+`|\"[^\"]+\"|[\w]+))?)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Step:
    """One schema step: its name (file name without ``.sql``), statements and checksum."""

    name: str
    statements: tuple[str, ...]
    checksum: str
    path: Path

    @property
    def objects(self) -> list[str]:
        """Names of the tables/views this step creates and keeps (checked in ``system.tables``).

        A table the step creates and drops again (a copy swapped in with ``EXCHANGE TABLES``) is not one.
        """
        dropped = {name for stmt in self.statements for name in dropped_objects(stmt)}
        return [name for stmt in self.statements for name in created_objects(stmt) if name not in dropped]


def split_statements(sql: str) -> list[str]:
    """Split SQL text on ``;`` outside quotes and comments; drop empty and comment-only parts.

    Handles ``'...'`` strings (with ``\\'`` and ``''`` escapes), `````...````` and ``"..."``
    identifiers, ``-- ...`` / ``# ...`` line comments and ``/* ... */`` block comments.

    >>> split_statements("SELECT 'a;b' /* ; */; ; -- only a comment;")
    ["SELECT 'a;b' /* ; */"]
    """
    out: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'`\"":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote = escaped quote
                        j += 2
                        continue
                    break
                j += 1
            buf.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i) or ch == "#":
            j = sql.find("\n", i)
            j = n if j < 0 else j
            buf.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
        elif ch == ";":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if _strip_comments(s).strip()]


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith(("--", "#")))


def created_objects(statement: str) -> list[str]:
    """The unquoted name of the table/view/dictionary a CREATE statement makes ([] otherwise).

    >>> created_objects("-- a comment\\nCREATE TABLE IF NOT EXISTS `flow_windows` (x UInt8) ENGINE = Memory")
    ['flow_windows']
    >>> created_objects("INSERT INTO t VALUES (1)")
    []
    """
    m = _CREATE_RE.match(_strip_comments(statement))
    if not m:
        return []
    return [m.group(1).split(".")[-1].strip('`"')]


def dropped_objects(statement: str) -> list[str]:
    """The unquoted name of the table/view a DROP statement removes ([] otherwise).

    >>> dropped_objects("DROP TABLE IF EXISTS flow_windows_by_day")
    ['flow_windows_by_day']
    >>> dropped_objects("SELECT 1")
    []
    """
    m = _DROP_RE.match(_strip_comments(statement))
    return [m.group(1).split(".")[-1].strip('`"')] if m else []


def load_steps(directory: Path | None = None) -> list[Step]:
    """Read the ordered steps from *directory* (default ``SCHEMAS_DIR / "clickhouse"``).

    >>> steps = load_steps()
    >>> steps[0].objects
    ['flow_windows', 'flow_windows_final']
    >>> all(len(s.checksum) == 64 for s in steps)
    True
    """
    directory = Path(directory) if directory is not None else SCHEMAS_DIR / "clickhouse"
    steps: list[Step] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _STEP_RE.match(path.name)
        if not m:
            raise ValueError(f"{path}: schema steps are named NNN_<what>.sql (lowercase)")
        if m.group(1) in seen:
            raise ValueError(f"{path}: step number {m.group(1)} already used by {seen[m.group(1)]}")
        seen[m.group(1)] = path.name
        text = path.read_text(encoding="utf-8")
        steps.append(
            Step(
                name=path.stem,
                statements=tuple(split_statements(text)),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
                path=path,
            )
        )
    return steps


def _existing_objects(client: Any) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
    return {r[0] for r in rows}


def applied_steps(client: Any) -> dict[str, str]:
    """Recorded steps of the client's database: ``{name: checksum}`` ({} before the first run)."""
    if LEDGER not in _existing_objects(client):
        return {}
    rows = client.query(f"SELECT name, checksum FROM {LEDGER} FINAL").result_rows
    return {name: checksum for name, checksum in rows}


def pending_steps(client: Any, directory: Path | None = None) -> list[str]:
    """The steps :func:`migrate` would apply (not recorded, or objects missing); changes nothing, so a
    worker that does not migrate (``FLOWMON_MIGRATE=false``) can refuse an outdated schema."""
    recorded = applied_steps(client)
    existing = _existing_objects(client)
    return [st.name for st in load_steps(directory)
            if st.name not in recorded or any(o not in existing for o in st.objects)]


def migrate(client: Any, directory: Path | None = None) -> list[str]:
    """Apply, in order, every step not yet recorded (or whose objects are missing).

    Parameters
    ----------
    client
        A clickhouse_connect client (``pipeline.clickhouse.client.connect``): chdb or HTTP.
    directory
        Where the steps are; default ``SCHEMAS_DIR / "clickhouse"``.

    Returns
    -------
    The names of the steps applied, e.g. ``['001_flow_windows', ...]``; ``[]`` when
    the schema is up to date.
    """
    steps = load_steps(directory)
    client.command(_LEDGER_DDL)
    recorded = applied_steps(client)
    existing = _existing_objects(client)
    applied: list[str] = []
    for step in steps:
        missing = [o for o in step.objects if o not in existing]
        if step.name in recorded and not missing:
            if recorded[step.name] != step.checksum:
                log.warning(
                    "schema step %s changed since it was applied (checksum %s… now %s…); it is not rerun: "
                    "put schema changes in a new step",
                    step.name,
                    recorded[step.name][:12],
                    step.checksum[:12],
                )
            continue
        if step.name in recorded:
            log.warning("schema step %s is recorded but %s missing: applying it again", step.name, ", ".join(missing))
        t0 = time.perf_counter()
        for statement in step.statements:
            client.command(statement)
        client.insert(
            LEDGER,
            [[step.name], [step.checksum], [int(time.time() * 1000)]],
            column_names=["name", "checksum", "applied_at"],
            column_oriented=True,
        )
        existing.update(step.objects)
        applied.append(step.name)
        log.info("applied schema step %s (%d statements, %.0f ms)", step.name, len(step.statements), (time.perf_counter() - t0) * 1e3)
    return applied
