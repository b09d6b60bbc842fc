"""Saved ClickHouse states of earlier releases, for migration tests (akvorado's testdata/states habit).

A state is what a database of a release holds once its schema steps ran and a little
data landed: the ``create_table_query`` of every table and view (``system.tables``,
ledger included, database name replaced by ``{database}``) in creation order, and
the rows of every table. It lives in ``tests/clickhouse/states/<release>/``:

- ``objects.json`` — ``[{"name", "engine", "create_table_query"}, ...]``;
- ``rows/<table>.jsonl`` — the table's rows, ``JSONEachRow``, sorted;
- ``release.json`` — which release and commit it was made from.

Make one from a commit of this repository (its ``schemas/clickhouse`` steps, then a
few rows written with plain INSERTs, which do not depend on the release's sink)::

    python -m tests.support.chstate da28f4d 0.1.0

:func:`load_state` builds a database from it; :func:`ddl` reads back the normalised
DDL of a database to compare it with a fresh install's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["STATES_DIR", "states", "dump_state", "load_state", "ddl", "table_rows", "SAMPLE_ROWS", "migrated_before"]

#: Where the saved states are.
STATES_DIR = Path(__file__).resolve().parents[1] / "clickhouse" / "states"

#: The rows written into a release's database before it is saved: one INSERT per table,
#: columns named (a table an old release does not have is skipped).
SAMPLE_ROWS: dict[str, str] = {
    "flow_windows": (
        "INSERT INTO flow_windows (version, src_subnet, src_az, src_vpc, dst_subnet, dst_az, dst_vpc, window_start, "
        "window_s, bytes_sent, bytes_received, bytes, retransmissions, timeouts, flows, samples, hosts, rtt_count, "
        "rtt_sum_us, rtt_mean_us, rtt_p50_us, rtt_p90_us, rtt_p99_us, rtt_hist, closed_at) VALUES "
        "(1, 'subnet-1a', 'use1-az1', 'vpc-1', 'subnet-1c', 'use1-az2', 'vpc-1', 1700000400, 600, 420, 10485760, "
        "10486180, 1, 0, 4, 4, 2, 4, 4800, 1200, 1150, 1400, 1400, map(64, 3, 80, 1), fromUnixTimestamp64Milli(1700001060250, 'UTC')), "
        "(1, 'subnet-1c', 'use1-az2', 'vpc-1', 'external', '', '', 1700000400, 600, 7, 9, 16, 0, 0, 1, 1, 1, 0, 0, "
        "0, 0, 0, 0, map(), fromUnixTimestamp64Milli(1700001061000, 'UTC'))"
    ),
    "deadletter": (
        "INSERT INTO deadletter (version, reason, field, detail, stage, source_topic, source_partition, source_offset, "
        "sample_index, samples, payload, payload_encoding, at) VALUES "
        "(1, 'malformed_json', NULL, 'not JSON', 'ingest', 'flow-reports-v1', 0, 9, NULL, 0, 'e30=', 'base64', "
        "fromUnixTimestamp64Milli(1700000000500, 'UTC')), "
        "(1, 'wrong_type', 'samples[0].flows', 'flows must be an integer', 'ingest', 'flow-reports-v1', 3, 11, 0, 1, "
        "'{\"flows\":\"x\"}', 'json', fromUnixTimestamp64Milli(1700000001000, 'UTC'))"
    ),
    "flow_anomalies": (
        "INSERT INTO flow_anomalies (version, alert_id, event, seq, scope, instance, src_subnet, src_az, src_vpc, "
        "dst_subnet, dst_az, dst_vpc, metric, observed, expected, score, severity, first_seen, last_seen, at, "
        "interval_s, window_start, reason, emitted_at) VALUES "
        "(1, '00000000000000a1', 'opened', 0, 'pair', NULL, 'subnet-1a', 'use1-az1', 'vpc-1', 'subnet-1c', "
        "'use1-az2', 'vpc-1', 'retrans_rate', 0.05, 0.001, 9.5, 'critical', 1700000400, 1700000400, 1700000400, 60, "
        "1700000400, NULL, fromUnixTimestamp64Milli(1700000461000, 'UTC')), "
        "(1, '00000000000000a1', 'resolved', 1, 'pair', NULL, 'subnet-1a', 'use1-az1', 'vpc-1', 'subnet-1c', "
        "'use1-az2', 'vpc-1', 'retrans_rate', 0.001, 0.001, 0.1, 'critical', 1700000400, 1700000520, 1700000520, 60, "
        "1700000400, 'normal', fromUnixTimestamp64Milli(1700000581000, 'UTC'))"
    ),
    "flow_attributions": (
        "INSERT INTO flow_attributions (version, alert_id, at, scope, instance, src_subnet, dst_subnet, metric, family, "
        "cause, element_kind, element, confidence, purity, reporters_crossing, reporters_degraded, degraded, "
        "keys_scored, keys_degraded, exonerating, exonerating_reporters, keys_attributed, evidence_level, "
        "attributed_at) VALUES "
        "(1, '00000000000000a1', 1700000400, 'pair', NULL, 'subnet-1a', 'subnet-1c', 'retrans_rate', 'retrans', "
        "'infrastructure', 'az_pair', 'use1-az1|use1-az2', 0.9, 1, 5, 5, ['i-1', 'i-2'], 7, 7, 0, [], 3, 'instance', "
        "fromUnixTimestamp64Milli(1700000431000, 'UTC'))"
    ),
    "nhi": (
        "INSERT INTO nhi (version, scope_kind, scope, status, start, end, element, updated) VALUES "
        "(1, 'az_pair', 'use1-az1|use1-az2', 'degraded', 1700000400, NULL, 'az_pair:use1-az1|use1-az2', fromUnixTimestamp64Milli(1700000431000, 'UTC')), "
        "(1, 'az_pair', 'use1-az1|use1-az2', 'degraded', 1700000400, 1700000520, 'az_pair:use1-az1|use1-az2', "
        "fromUnixTimestamp64Milli(1700000581000, 'UTC'))"
    ),
}


def migrated_before(chdb_dsn: str, step: str, workdir: Path) -> tuple[Any, str]:
    """A new database of the chdb at ``chdb_dsn`` migrated with the schema steps named below ``step`` (e.g.
    ``"009"``) only, as a release before that step left it; returns its client and name."""
    import shutil
    import uuid

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import load_steps, migrate

    steps = workdir / "steps"
    steps.mkdir()
    for s in load_steps():
        if s.name < step:
            shutil.copy(s.path, steps / s.path.name)
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = connect(chdb_dsn, database=name)
    migrate(client, steps)
    return client, name


def states() -> list[Path]:
    """The saved states, oldest release first (directories of :data:`STATES_DIR`)."""
    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.name))

    return sorted((p for p in STATES_DIR.iterdir() if (p / "objects.json").is_file()), key=version)


def _current_database(client: Any) -> str:
    return client.command("SELECT currentDatabase()")


def _objects(client: Any) -> dict[str, dict[str, str]]:
    rows = client.query(
        "SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase()"
    ).result_rows
    return {name: {"name": name, "engine": engine, "create_table_query": q} for name, engine, q in rows}


def _generic(query: str, database: str) -> str:
    """*query* with the database name replaced by ``{database}``."""
    return re.sub(r"(?<![\w.`])`?" + re.escape(database) + r"`?\.", "{database}.", query)


def ddl(client: Any) -> dict[str, str]:
    """``{name: create_table_query}`` of the client's database, database name replaced by ``{database}``."""
    database = _current_database(client)
    return {name: _generic(o["create_table_query"], database) for name, o in _objects(client).items()}


def table_rows(client: Any, table: str) -> list[str]:
    """The rows of *table*, one ``JSONEachRow`` line each, sorted (a stable order to compare)."""
    raw = client.raw_query(f"SELECT * FROM `{table}` FORMAT JSONEachRow",
                           settings={"output_format_json_quote_64bit_integers": 0}).decode()
    return sorted(line for line in raw.splitlines() if line.strip())


def dump_state(client: Any, directory: Path, order: list[str], release: dict[str, Any]) -> None:
    """Save the client's database to *directory*: its objects (in *order*, then any other) and table rows."""
    database = _current_database(client)
    objects = _objects(client)
    names = [n for n in order if n in objects] + sorted(n for n in objects if n not in order)
    (directory / "rows").mkdir(parents=True, exist_ok=True)
    saved = []
    for name in names:
        o = objects[name]
        saved.append({**o, "create_table_query": _generic(o["create_table_query"], database)})
        if o["engine"] != "View":
            lines = table_rows(client, name)
            (directory / "rows" / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    (directory / "objects.json").write_text(json.dumps(saved, indent=1) + "\n")
    (directory / "release.json").write_text(json.dumps(release, indent=1) + "\n")


def load_state(client: Any, directory: Path) -> dict[str, list[str]]:
    """Build the saved state in the client's (empty) database; returns the rows loaded, per table."""
    database = _current_database(client)
    loaded: dict[str, list[str]] = {}
    for o in json.loads((directory / "objects.json").read_text()):
        client.command(o["create_table_query"].replace("{database}", f"`{database}`"))
        rows_file = directory / "rows" / f"{o['name']}.jsonl"
        if o["engine"] != "View" and rows_file.is_file():
            data = rows_file.read_text()
            if data.strip():
                client.raw_insert(o["name"], insert_block=data.encode(), fmt="JSONEachRow")
            loaded[o["name"]] = sorted(line for line in data.splitlines() if line.strip())
    return loaded


def _make(commit: str, release: str) -> Path:  # pragma: no cover - run by hand, once per release
    import uuid

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import LEDGER, load_steps, migrate
    from pipeline.config import REPO_ROOT

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True, text=True).stdout

    full = git("rev-parse", commit).strip()
    out = STATES_DIR / release
    with tempfile.TemporaryDirectory() as tmp:
        steps = Path(tmp) / "steps"
        steps.mkdir()
        for name in git("ls-tree", "--name-only", full, "schemas/clickhouse/").split():
            (steps / Path(name).name).write_bytes(
                subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{full}:{name}"], check=True,
                               capture_output=True).stdout)
        order = [LEDGER] + [o for s in load_steps(steps) for o in s.objects]
        database = f"state_{uuid.uuid4().hex[:12]}"
        client = connect(f"chdb://{tmp}/chdb", database=database)
        try:
            migrate(client, steps)
            present = {n for n in order}
            for table, insert in SAMPLE_ROWS.items():
                if table in present:
                    client.command(insert)
            dump_state(client, out, order, {"release": release, "commit": full,
                                            "steps": [s.name for s in load_steps(steps)]})
        finally:
            client.close()
    return out


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.support.chstate COMMIT RELEASE   (e.g. da28f4d 0.1.0)")
    print(_make(sys.argv[1], sys.argv[2]))
