"""One way to get a ClickHouse client, for the in-process engine (chdb) and for servers.  *shell*

``connect(dsn)`` returns a clickhouse_connect ``Client``; the rest of the pipeline
(migrations, sink, queries) uses only that client API, so the same code runs on
both backends:

- ``chdb://PATH`` — the in-process engine on data directory PATH (relative paths are
  resolved against the working directory; the directory is created). ``chdb://memory``
  is a throw-away in-memory engine. ``?database=NAME`` picks a database.
- ``http(s)://user:pass@host:port/db`` — a ClickHouse server, or the read-only SQL
  endpoint (:mod:`pipeline.clickhouse.sqlserve`) of the process that owns a chdb
  directory, its token as the password (``password=`` keyword, or in the DSN).

Rules of the in-process engine that callers must respect
--------------------------------------------------------
* **One process per data directory.** chdb locks the directory; a second process
  fails with "Cannot lock file". Only one flowmon process may run the ``sink`` role on
  a chdb DSN; the others reach its data through the owner's
  :class:`pipeline.clickhouse.sqlserve.SqlServer` (``http://127.0.0.1:PORT``).
* **One data directory per process at a time.** While any chdb client of the process
  is open, opening another path raises :class:`ChdbPathConflict` (ClickHouse's
  "EmbeddedServer already initialized with path ..."). Closing every client releases
  the engine and another path may then be opened. Tests therefore share one
  directory per pytest process and isolate themselves with one database each
  (``connect(dsn, database=...)``).
* **Synchronous.** Every call blocks; async code runs it in a thread executor.
  A chdb client serialises its own calls (one lock per client); separate clients on
  the same directory may be used from separate threads.
* ``DateTime`` columns take ``datetime`` objects or integer Unix seconds (not strings);
  ``DateTime64(3)`` takes ``datetime`` or integer milliseconds. chdb drops the zone of
  ``DateTime('UTC')`` columns in results (they decode in the server timezone, the
  host's); read ``toUnixTimestamp(col)`` when the host may not be in UTC.

Examples
--------
>>> parse_chdb_dsn("chdb:///var/lib/flowmon/chdb?database=flowmon")
('/var/lib/flowmon/chdb', 'flowmon')
>>> parse_chdb_dsn("chdb://memory")
(':memory:', None)
>>> is_chdb("chdb://./flowmon-data/chdb"), is_chdb("http://localhost:8123")
(True, False)
"""

from __future__ import annotations

import os
import re
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

__all__ = ["connect", "is_chdb", "parse_chdb_dsn", "chdb_path_in_use", "ChdbPathConflict", "ChdbLocked"]

# chdb clients made by connect(), with their data path: lets a caller (a test fixture,
# the CLI) find which directory this process's engine is pinned to.
_chdb_clients: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()

_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ChdbPathConflict(RuntimeError):
    """This process already hosts the chdb engine on another data directory."""


class ChdbLocked(RuntimeError):
    """Another process owns the chdb data directory ("Cannot lock file")."""


def is_chdb(dsn: str) -> bool:
    """True for ``chdb:`` DSNs (the in-process engine)."""
    return dsn.strip().lower().startswith("chdb:")


def parse_chdb_dsn(dsn: str) -> tuple[str, str | None]:
    """``chdb://PATH[?database=NAME]`` → (absolute path or ``':memory:'``, database or None).

    ``chdb://./rel``, ``chdb://rel/dir`` and ``chdb:///abs/dir`` are all paths (unlike
    clickhouse_connect's own DSN parsing, where the first component would be a host).

    >>> parse_chdb_dsn("chdb:///tmp/x")[0]
    '/tmp/x'
    >>> parse_chdb_dsn("chdb://:memory:?database=d")
    (':memory:', 'd')
    """
    if not is_chdb(dsn):
        raise ValueError(f"not a chdb DSN: {dsn!r}")
    rest = dsn.strip()[len("chdb:") :]
    rest = rest[2:] if rest.startswith("//") else rest
    location, _, query = rest.partition("?")
    location = unquote(location)
    database = None
    for key, values in parse_qs(query).items():
        if key == "database":
            database = values[-1]
        else:
            raise ValueError(f"unsupported chdb DSN option {key!r} in {dsn!r} (only database=)")
    if location in ("", "memory", ":memory:"):
        return ":memory:", database
    return str(Path(location).expanduser().resolve()), database


def chdb_path_in_use() -> str | None:
    """The chdb data path of a still-open client made by :func:`connect` in this process, or None.

    >>> chdb_path_in_use() is None or chdb_path_in_use().startswith(("/", ":memory:"))
    True
    """
    for client, path in list(_chdb_clients.items()):
        if not _chdb_client_closed(client):
            return path
    return None


def _chdb_client_closed(client: Client) -> bool:
    """Whether a chdb client made by :func:`connect` has been closed.

    The one place that reads clickhouse_connect internals (its chdb backend's
    ``_closed`` flag): clickhouse_connect 1.12 has no public "is closed" for a client,
    and ``client.ping()`` would run a query (and wait behind a long one in another
    thread) rather than say whether the handle was released. Unknown layout → closed.
    """
    return bool(getattr(getattr(client, "_backend", None), "_closed", True))


def _lock_owner(path: str) -> str | None:
    """After a failed open: None if PATH/status is not locked, else its owner's "PID: n" line.

    ClickHouse flock()s ``status`` for the life of the engine; chdb only prints
    "Cannot lock file" to stderr and raises a bare "Error initializing EmbeddedServer".
    """
    import fcntl

    status = Path(path) / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = status.read_text(errors="replace")
            return next((line.strip() for line in text.splitlines() if line.startswith("PID")), "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def connect(dsn: str, database: str | None = None, *, create_database: bool = True, timeout_s: float | None = None,
            **kwargs: Any) -> Client:
    """A clickhouse_connect client for *dsn* (``chdb://PATH`` or ``http(s)://...``).

    Parameters
    ----------
    dsn
        ``chdb://PATH[?database=NAME]`` or ``http(s)://user:pass@host:port[/db]``.
    database
        Database to work in (overrides the DSN's); ``None`` = the DSN's, else ``default``.
    create_database
        Create that database if it does not exist (``CREATE DATABASE IF NOT EXISTS``; not
        asked of a server where it exists, so read-only servers work).
    timeout_s
        On a server: seconds to wait for the answer to one request before the call fails
        (``send_receive_timeout``; ``None``: clickhouse_connect's 300). A server that hangs, or a
        network partition, resets nothing, so without it a call waits the whole 5 minutes.
        Ignored for chdb, whose calls run in process.
    kwargs
        Passed to ``clickhouse_connect.get_client`` (e.g. ``settings=``).

    HTTP clients are made without a session id (``autogenerate_session_id=False``): the
    pipeline needs no session state, and a session-less client can be shared by the
    threads of an executor (a session admits one query at a time).

    Examples
    --------
    Opening chdb pins this process to the directory (see the module notes), so the
    example is not run here; tests/clickhouse/test_sink.py runs it.

    >>> is_chdb("chdb://./flowmon-data/chdb")
    True
    >>> client = connect("chdb://./flowmon-data/chdb", database="flowmon")  # doctest: +SKIP
    >>> client.command("SELECT 1")  # doctest: +SKIP
    1
    """
    if is_chdb(dsn):
        path, dsn_db = parse_chdb_dsn(dsn)
        database = database or dsn_db
        if path != ":memory:":
            os.makedirs(path, exist_ok=True)
        try:
            client = clickhouse_connect.get_client(interface="chdb", path=path, **kwargs)
        except ProgrammingError as ex:
            text = str(ex)
            if "already initialized with path" in text:
                raise ChdbPathConflict(
                    f"cannot open chdb at {path}: {text}. A process hosts one chdb data directory at a time: "
                    "reuse that directory (one database per purpose) or close all its clients first."
                ) from ex
            owner = _lock_owner(path) if path != ":memory:" else None
            if owner is not None:
                raise ChdbLocked(
                    f"cannot open chdb at {path}: another process owns it ({owner or 'status file locked'}). "
                    "Reach that process through its SQL endpoint (pipeline.clickhouse.sqlserve address file) instead."
                ) from ex
            raise
        _chdb_clients[client] = path
    else:
        # The database is taken out of the DSN: the client's handshake would otherwise
        # query in it before it could be created.
        parts = urlsplit(dsn)
        dsn_db = unquote(parts.path.strip("/").split("/")[0]) or None
        database = database or dsn_db
        kwargs.setdefault("autogenerate_session_id", False)
        if timeout_s is not None:
            kwargs["send_receive_timeout"] = timeout_s
        client = clickhouse_connect.get_client(dsn=urlunsplit(parts._replace(path="")), **kwargs)
    if database:
        if not _DB_NAME_RE.match(database):
            client.close()
            raise ValueError(f"database name must be an identifier: {database!r}")
        # (asked first: a read-only server, such as a chdb owner's SQL endpoint, refuses any CREATE)
        if create_database and not client.command(f"EXISTS DATABASE `{database}`", use_database=False):
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`", use_database=False)
        client.database = database
    return client
