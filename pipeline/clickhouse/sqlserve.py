"""Serve the process's chdb engine over (enough of) ClickHouse's HTTP interface, read-only.  *shell*

chdb admits one process per data directory, so the process that owns it (the one
running the ``sink`` role) serves the others: ``flowmon sql`` in another terminal,
dashboards, ``curl``, and any clickhouse_connect client, including
``pipeline.clickhouse.client.connect("http://default:TOKEN@127.0.0.1:PORT")``. The owner
writes through its own in-process client, never through this endpoint, so the endpoint
only reads. chdb cannot open ClickHouse's own HTTP listener, hence this small server
(stdlib ``ThreadingHTTPServer`` in a background thread).

What it speaks
--------------
- ``GET /ping`` and ``GET /`` → ``Ok.`` (no token needed, nothing read).
- ``GET|POST /?query=...``, the query in the URL, in the body, or both (URL first,
  then the body, as ClickHouse does); ``multipart/form-data`` bodies with ``query`` and
  ``param_*`` fields (what clickhouse_connect sends for large bound parameters).
- ``database=``, ``default_format=`` (else ``TabSeparated``; a trailing ``FORMAT x`` in
  the query wins), ``param_<name>=`` for server-side ``{name:Type}`` binding; every other
  URL parameter that is not an HTTP-transport one (``session_id``, ``query_id``,
  ``compress``, ``wait_end_of_query``, ...) is a ClickHouse setting, which the read-only
  mode refuses unless it keeps the current value (clickhouse_connect sees the settings
  as read-only and does not send them).
- Request bodies compressed with ``Content-Encoding`` lz4, zstd, gzip, deflate (and br
  when ``brotli`` is installed). Chunked request bodies.
- Responses: the bytes chdb produced in the requested format, uncompressed, with
  ``X-ClickHouse-Format``, ``-Timezone``, ``-Server-Display-Name``, ``-Query-Id``,
  ``-Summary``. Errors: ClickHouse's error text (``Code: 60. DB::Exception: Unknown
  table ... (UNKNOWN_TABLE) (version ...)``) with ``X-ClickHouse-Exception-Code``, which
  clickhouse_connect raises as a ``DatabaseError``: HTTP 500 for a query ClickHouse or
  the endpoint refuses, 401/403 for a missing/wrong token or a browser's request.

Security
--------
- **A token.** Every query needs the secret the server drew at :meth:`SqlServer.start`
  (``secrets.token_urlsafe(32)``), sent the ways a ClickHouse client sends a password:
  the password of HTTP basic auth (any user name; clickhouse_connect's
  ``password=``, Grafana's password field, ``curl -u default:TOKEN``), the
  ``X-ClickHouse-Key`` header, or ``Authorization: Bearer``. Not in the URL
  (``password=`` there is refused: URLs end up in logs and shell histories). The owner
  writes it only to the address file (:meth:`SqlServer.write_address_file`), created
  with mode 0600, so only the owner's user can read it: ``read_address_file(path)["token"]``.
  Without it: HTTP 401 (``REQUIRED_PASSWORD``); a wrong one: 403 (``AUTHENTICATION_FAILED``).
- **Read-only.** Each request runs on a fresh chdb handle with ``readonly = 1`` (ClickHouse
  itself then refuses DDL, INSERT/ALTER/TRUNCATE/DROP, ``SET`` and ``SETTINGS`` changes,
  and the table functions that reach files, URLs, other servers or the Python process:
  ``file``, ``url``, ``s3``, ``remote``, ``mysql``, ``executable``, ``python``, ...).
  Before it runs, ClickHouse's own parser vets the query (:func:`vet_ast`): exactly one
  statement (chdb would run several), a SELECT / SHOW / DESCRIBE / EXISTS / EXPLAIN
  only (no ``KILL``, ``SYSTEM``, ``USE``, ...), no ``INTO OUTFILE`` (chdb writes that
  file even in read-only mode), no ``file()`` function (chdb reads any path with it),
  and no table function outside a small list of generators (``numbers``,
  ``generateRandom``, ``values``, ``view``, ``merge``, ...) anywhere, also under
  ``DESCRIBE``/``EXPLAIN`` (ClickHouse's read-only check does not cover
  ``DESCRIBE url(...)``). Refusals are ``Code: 164 ... (READONLY)``.
- **No browsers.** A request with an ``Origin`` header or a ``Sec-Fetch-Site`` other
  than ``none`` (what a web page's fetch, form or image sends) is refused with 403
  before anything else; no CORS headers are ever sent.
- It binds to 127.0.0.1 by default. Anyone holding the token reads every table (and
  ``system.*``); the data directory's own permissions are not changed.

Limits
------
- No HTTP sessions: ``session_id`` is ignored, each request runs on a fresh chdb
  connection handle.
- Queries run one at a time (one lock; chdb calls are serialised) and results are
  held in memory before being sent (no streaming, no progress headers): fine for
  dashboards and ``flowmon sql``, not for multi-GB exports.
- Each query costs two extra parser round trips in chdb (``formatQuery`` and
  ``EXPLAIN AST``, well under a millisecond each).
- Responses are never compressed (``Accept-Encoding`` is ignored; the client accepts
  that). ClickHouse's own block compression (``compress=1``/``decompress=1``) and
  external data (``*_structure`` files) are refused with NOT_IMPLEMENTED.
- Native output is the client-protocol-0 variant (``client_protocol_version`` is
  ignored), as chdb produces it; clickhouse_connect's probe detects this and adapts.

Examples
--------
The owner of the chdb directory (see tests/clickhouse/test_sqlserve.py for runnable ones):

>>> from pipeline.clickhouse.client import connect  # doctest: +SKIP
>>> server = SqlServer(connect("chdb://./flowmon-data/chdb")).start()  # doctest: +SKIP
>>> server.write_address_file("flowmon-data/sql-endpoint.json")  # doctest: +SKIP
>>> # elsewhere: endpoint_client(read_address_file("flowmon-data/sql-endpoint.json"))

Pure helpers:

>>> split_insert(b"INSERT INTO t (a, b) FORMAT CSV\\n1,2\\n")
('INSERT INTO t (a, b)', 'CSV', b'1,2\\n')
>>> split_insert(b"SELECT 1") is None
True
>>> output_format("SELECT 1 FORMAT JSONEachRow;", "TabSeparated"), output_format("SELECT 1", "CSV")
('JSONEachRow', 'CSV')
>>> request_token({"Authorization": "Basic ZGVmYXVsdDpzM2NyZXQ="}), request_token({"X-ClickHouse-Key": "k"})
('s3cret', 'k')
>>> browser_request({"Origin": "https://example.org"})
'a request from a web page (Origin: https://example.org)'
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
import zlib
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

__all__ = [
    "SqlServer", "read_address_file", "endpoint_client", "split_insert", "output_format", "request_token",
    "browser_request", "vet_ast", "writes_outfile", "ServeError",
]  # fmt: skip

log = logging.getLogger(__name__)

# URL parameters of the HTTP transport: never applied as settings.
_TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "role",
        "query_id", "session_id", "session_timeout", "session_check", "compress", "decompress",
        "buffer_size", "wait_end_of_query", "client_protocol_version",
        "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "enable_http_compression", "http_zlib_compression_level",
        "cancel_http_readonly_queries_on_client_close", "http_response_buffer_size",
        "http_wait_end_of_query", "add_http_cors_header",
    }
)  # fmt: skip
# Output formats of chdb's Python layer that are not ClickHouse formats.
_NOT_FORMATS = frozenset({"dataframe", "datastore", "arrowtable", "debug"})
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING_FORMAT_RE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
# INSERT INTO <no quotes> FORMAT <name>[spaces][newline]<data>. A quote before FORMAT
# means something else (a table function with string arguments, VALUES, ...): no match,
# and the text then runs as one query with its data inline.
_INSERT_RE = re.compile(
    rb"^\s*(INSERT\s+INTO\s+[^'\"]*?)\s+FORMAT\s+(\w+)[ \t]*(?:\r?\n)?", re.IGNORECASE | re.DOTALL
)
_LEADING_NOISE_RE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "VALUES"})
_CODE_RE = re.compile(r"Code:\s*(\d+)")
_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}


# What the endpoint runs (the top node of ClickHouse's ``EXPLAIN AST``): reading statements only.
_READ_STATEMENTS = frozenset(
    {
        "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery",
        "ShowTables", "ShowColumns", "ShowIndexes", "ShowFunctions", "ShowEngineQuery", "ShowProcesslistQuery",
        "ShowCreateTableQuery", "ShowCreateViewQuery", "ShowCreateDatabaseQuery", "ShowCreateDictionaryQuery",
        "DescribeQuery", "ExistsTableQuery", "ExistsDatabaseQuery", "ExistsViewQuery", "ExistsDictionaryQuery",
        "Explain",
    }
)  # fmt: skip
# Table functions a query may use: generators and views of this engine's own tables, all of
# which ClickHouse itself allows in read-only mode (system.table_functions.allow_readonly).
# Every other one (file, url, s3, remote, mysql, executable, python, ...) is refused
# wherever it appears, even where ClickHouse's read-only check does not look (DESCRIBE).
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "generaterandom", "generateseries", "generate_series", "primes", "values",
        "sqlstandardvalues", "null", "view", "viewifpermitted", "merge", "mergetreeindex", "mergetreeprojection",
    }
)  # fmt: skip
# Functions that reach outside the engine although they are not table functions.
DENIED_FUNCTIONS = frozenset({"file"})  # file(path): any file of the host in chdb (clickhouse-local rules)
_AST_NODE_RE = re.compile(r"^( *)(\S+)(?: (\S+))?")
_QUOTED_RE = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_OUTFILE_RE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FORMAT_QUERY_SCOPE = " In scope SELECT formatQuery("


class ServeError(Exception):
    """A request the server refuses, with the ClickHouse error code and HTTP status to report."""

    def __init__(self, message: str, code: int = 48, name: str = "NOT_IMPLEMENTED", status: int = 500):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code
        self.status = status


def _readonly(reason: str) -> ServeError:
    return ServeError(f"flowmon's SQL endpoint is read-only: {reason}", 164, "READONLY")


def request_token(headers: Any) -> str | None:
    """The secret a request carries, as ClickHouse clients send a password; None without one.

    ``X-ClickHouse-Key``, the password of ``Authorization: Basic`` (any user), or
    ``Authorization: Bearer``. *headers* is any mapping with ``.get``.

    >>> request_token({"Authorization": "Bearer abc"}), request_token({}), request_token({"Authorization": "Basic !!"})
    ('abc', None, None)
    """
    key = headers.get("X-ClickHouse-Key")
    if key:
        return key
    scheme, _, value = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def browser_request(headers: Any) -> str | None:
    """Why a request looks like it comes from a web page in a browser, or None.

    Browsers add ``Origin`` to cross-origin and POST requests and ``Sec-Fetch-Site`` to
    all requests (``none`` when the user typed the address); curl and database clients
    send neither.

    >>> browser_request({"Sec-Fetch-Site": "cross-site"}), browser_request({"Sec-Fetch-Site": "none"}), browser_request({})
    ('a request from a web page (Sec-Fetch-Site: cross-site)', None, None)
    """
    origin = headers.get("Origin")
    if origin is not None:
        return f"a request from a web page (Origin: {origin[:100]})"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "none":
        return f"a request from a web page (Sec-Fetch-Site: {site[:40]})"
    return None


def vet_ast(rows: list[str], table_functions: frozenset[str] = frozenset()) -> None:
    """Refuse (:class:`ServeError`, READONLY) a statement by its ``EXPLAIN AST`` rows.

    *rows* are the lines of ClickHouse's AST dump (one node per line, indented one space
    per level: ``Function file (children 1)``). *table_functions* are the engine's table
    function names (lower case): those outside :data:`SAFE_TABLE_FUNCTIONS` are refused
    wherever a function of that name appears.

    >>> vet_ast(["SelectWithUnionQuery (children 1)", " ExpressionList (children 1)", "  SelectQuery (children 1)"])
    >>> vet_ast(["KillQueryQuery Literal_UInt64_1 ASYNC (children 1)", " Literal UInt64_1"])
    Traceback (most recent call last):
    ...
    pipeline.clickhouse.sqlserve.ServeError: Code: 164. DB::Exception: flowmon's SQL endpoint is read-only: it runs SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN only, not KillQueryQuery. (READONLY)
    >>> vet_ast(["DescribeQuery (children 1)", " TableExpression (children 1)", "  Function url (children 1)"], frozenset({"url"}))
    Traceback (most recent call last):
    ...
    pipeline.clickhouse.sqlserve.ServeError: Code: 164. DB::Exception: flowmon's SQL endpoint is read-only: table function url() reaches outside its tables. (READONLY)
    """
    nodes = [(len(m.group(1)), m.group(2), m.group(3) or "") for m in map(_AST_NODE_RE.match, rows) if m]
    if not nodes:
        raise _readonly("empty query")
    depth0, kind, _ = nodes[0]
    if kind not in _READ_STATEMENTS:
        raise _readonly(f"it runs SELECT, SHOW, DESCRIBE, EXISTS and EXPLAIN only, not {kind}")
    if kind == "Explain":  # what is explained must be a reading statement too
        inner = next((k for d, k, _ in nodes[1:] if d == depth0 + 1 and k not in ("Set", "Literal", "Identifier")), None)
        if inner is not None and inner not in _READ_STATEMENTS:
            raise _readonly(f"it explains reading statements only, not {inner}")
    for depth, node, _ in nodes[1:]:
        if depth == depth0 + 1 and node == "Literal":  # a top-level literal: INTO OUTFILE 'path'
            raise _readonly("INTO OUTFILE writes a file on the server")
    for index, (depth, node, name) in enumerate(nodes):
        if node != "Function":
            continue
        lower = name.lower()
        under_table = index > 0 and nodes[index - 1][1] == "TableExpression" and nodes[index - 1][0] == depth - 1
        if lower in DENIED_FUNCTIONS:
            raise _readonly(f"function {name}() reads the server's files")
        if (under_table or lower in table_functions) and lower not in SAFE_TABLE_FUNCTIONS:
            raise _readonly(f"table function {name}() reaches outside its tables")


def writes_outfile(formatted: str) -> bool:
    """Whether ClickHouse's ``formatQuery`` text of a statement has ``INTO OUTFILE``.

    >>> writes_outfile("SELECT 1\\nINTO OUTFILE 'x'"), writes_outfile("SELECT 'INTO OUTFILE' AS `into outfile`")
    (True, False)
    """
    return _OUTFILE_RE.search(_QUOTED_RE.sub("''", formatted)) is not None


def split_insert(sql: bytes) -> tuple[str, str, bytes] | None:
    """``INSERT INTO t (cols) FORMAT fmt\\n<data>`` → (statement, fmt, data); None otherwise.

    The data starts after the format name, its spaces, and at most one newline
    (ClickHouse's rule), so binary formats are cut exactly.

    >>> split_insert(b"insert into `db`.`t` (`a`) FORMAT Native\\n\\x01\\x02")
    ('insert into `db`.`t` (`a`)', 'Native', b'\\x01\\x02')
    """
    m = _INSERT_RE.match(sql)
    if not m:
        return None
    return m.group(1).decode("utf-8"), m.group(2).decode("ascii"), sql[m.end() :]


def output_format(sql: str, default: str) -> str:
    """The output format of *sql*: its trailing ``FORMAT x`` clause, else *default*."""
    m = _TRAILING_FORMAT_RE.search(sql[-200:])
    return m.group(1) if m else default


def _produces_result(sql: str) -> bool:
    head = _LEADING_NOISE_RE.sub("", sql[:4096], count=1)
    word = re.match(r"\w+", head)
    if word is None:
        return False
    first = word.group(0).upper()
    return first in _RESULT_KEYWORDS or (first != "INSERT" and _TRAILING_FORMAT_RE.search(sql[-200:]) is not None)


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "lz4":
        import lz4.frame

        out, rest = [], data
        while rest:  # clickhouse_connect sends one frame per block
            d = lz4.frame.LZ4FrameDecompressor()
            out.append(d.decompress(rest))
            rest = d.unused_data if d.eof else b""
        return b"".join(out)
    if encoding == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  # Python 3.14
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.decompress(data)  # all concatenated frames
    if encoding == "br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            raise ServeError("Content-Encoding br needs the brotli package") from None
        return brotli.decompress(data)
    raise ServeError(f"Unsupported Content-Encoding {encoding!r}")


def _engine_target(client_or_session: Any) -> str:
    """The chdb connection string of a chdb-backed clickhouse_connect client, a chdb Session, or a path."""
    if isinstance(client_or_session, (str, os.PathLike)):
        text = os.fspath(client_or_session)
        return text if text.startswith((":memory:", "file:")) else os.path.realpath(text)
    uri, path = getattr(client_or_session, "uri", None), getattr(client_or_session, "path", None)
    if isinstance(uri, str) and uri.startswith("chdb://") and isinstance(path, str):
        # A clickhouse_connect ChdbClient: its public ``path`` is the location as given,
        # which its backend resolves like a path argument (realpath unless :memory:/file:).
        return _engine_target(path)
    # chdb.session.Session keeps its connection string in a private attribute only
    # (chdb has no public accessor); isolated here, the one private read of this module.
    conn_str = getattr(client_or_session, "_conn_str", None)
    if not isinstance(conn_str, str):
        raise TypeError(
            f"SqlServer needs a chdb-backed clickhouse_connect client, a chdb Session or a data path, "
            f"not {type(client_or_session).__name__}"
        )
    return conn_str


class _Request:
    """A parsed ClickHouse HTTP request."""

    def __init__(self, sql: bytes, params: dict[str, str], bind: dict[str, str]):
        self.sql = sql
        self.params = params
        self.bind = bind

    @property
    def settings(self) -> dict[str, str]:
        return {k: v for k, v in self.params.items() if k not in _TRANSPORT_PARAMS and not k.startswith("param_")}


class SqlServer:
    """A ClickHouse-compatible HTTP endpoint for the chdb engine this process owns.

    Parameters
    ----------
    client_or_session
        The owner's chdb-backed clickhouse_connect client (``connect("chdb://...")``),
        a ``chdb.session.Session``, or the data path itself. The server opens its own
        connection handles on the same engine (one per request), so the owner's
        client keeps its own session state.
    host, port
        Where to listen; ``port=0`` picks a free port (read it from ``.port``).
    lock
        The lock serialising chdb calls (a fresh one by default). Pass a shared lock
        if other threads of the owner must not run chdb queries concurrently.
    display_name
        Reported in ``X-ClickHouse-Server-Display-Name``.

    Every query needs :attr:`token` (drawn anew by each :meth:`start`), which
    :meth:`write_address_file` hands to the owner's other processes; see the module notes.
    """

    def __init__(
        self,
        client_or_session: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lock: threading.Lock | None = None,
        display_name: str = "flowmon-chdb",
        writable: bool = False,
    ):
        #: ``writable=True`` (never from flowmon's commands or settings) serves as a ClickHouse *server* would:
        #: INSERT, DDL and settings allowed, the token still required. Tests use it to put a real engine behind
        #: a network hop (the sink writing over ``http://`` to a server that goes away).
        self.writable = writable
        self._conn_str = _engine_target(client_or_session)
        self.host = host
        self._requested_port = port
        self.lock = lock or threading.Lock()
        self.display_name = display_name
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._anchor: Any = None
        self._address_files: list[Path] = []
        self.version = ""
        self.timezone = "UTC"
        self.token = ""
        self._table_functions: frozenset[str] = frozenset()
        self.queries = 0
        self.errors = 0

    # ---- lifecycle ------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("SqlServer not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://host:port`` (after :meth:`start`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SqlServer:
        """Open an anchor handle on the engine, bind, and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        # The anchor keeps the engine up between requests even if the owner closes its
        # clients, so each request's handle opens in ~0.1 ms.
        self._anchor = chdb.connect(self._conn_str)
        with self.lock:
            row = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().strip()
            # Table-function names that are not also plain functions (``format`` is both).
            names = self._anchor.query(
                "SELECT lower(name) FROM system.table_functions "
                "WHERE lower(name) NOT IN (SELECT lower(name) FROM system.functions)", "TabSeparated"
            ).bytes().decode().split()
        self.version, self.timezone = row.split("\t")
        self._table_functions = frozenset(names)
        self.token = secrets.token_urlsafe(32)
        handler = type("_BoundHandler", (_Handler,), {"server_ref": self})
        self._httpd = ThreadingHTTPServer((self.host, self._requested_port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"sqlserve:{self.port}", daemon=True)
        self._thread.start()
        log.info("SQL endpoint for chdb %s at %s", self._conn_str, self.url)
        return self

    def stop(self) -> None:
        """Stop serving, remove the address files this server wrote, release the anchor handle."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for path in self._address_files:
            try:
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
            except (OSError, ValueError):
                pass
        self._address_files.clear()
        if self._anchor is not None:
            with self.lock:
                self._anchor.close()
            self._anchor = None

    def __enter__(self) -> SqlServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def write_address_file(self, path: str | os.PathLike) -> Path:
        """Write ``{"url", "host", "port", "user", "token", "pid", "engine", "started_at"}`` to *path*.

        The file holds the token, so it is born with mode 0600 (created so, never
        chmod-ed after) and moved into place atomically. :func:`read_address_file` reads
        it back and checks that the owner is alive; :func:`endpoint_client` connects.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "user": "default",
            "token": self.token,
            "pid": os.getpid(),
            "engine": self._conn_str,
            "started_at": time.time(),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # a leftover of a killed process with our pid
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, path)
        self._address_files.append(path)
        return path

    # ---- execution ------------------------------------------------------

    def execute(self, req: _Request) -> tuple[bytes, str | None, dict[str, str]]:
        """Vet and run one request on a fresh read-only handle: (body, output format or None, summary)."""
        settings = req.settings
        for name in settings:
            if not _SETTING_NAME_RE.match(name):
                raise ServeError(f"Invalid setting name {name!r}", 115, "UNKNOWN_SETTING")
        if self.writable:
            return self._execute_writable(req)
        if split_insert(req.sql) is not None:
            raise _readonly("INSERT is refused (the owner writes in-process)")
        try:
            text = req.sql.decode("utf-8")
        except UnicodeDecodeError:
            raise ServeError("The query is not valid UTF-8", 36, "BAD_ARGUMENTS") from None
        t0 = time.perf_counter_ns()
        with self.lock:
            conn = chdb.connect(self._conn_str)
            try:
                conn.query("SET readonly = 1", "TabSeparated")  # first: nothing runs on the handle before it
                if req.params.get("database"):
                    conn.query(f"USE {_quote_identifier(req.params['database'])}", "TabSeparated")
                for name, value in settings.items():  # ClickHouse refuses any change from here on
                    conn.query(f"SET {name} = {_quote_value(value)}", "TabSeparated")
                self._vet(conn, text, req.bind)
                fmt = output_format(text, req.params.get("default_format") or "TabSeparated")
                if fmt.lower() in _NOT_FORMATS:
                    raise ServeError(f"Unknown format {fmt}", 73, "UNKNOWN_FORMAT")
                res = conn.query(text, fmt, params=req.bind)
                body = res.bytes() or b""
                fmt_out = fmt if (body or _produces_result(text)) else None
                summary = {
                    "read_rows": str(res.rows_read()),
                    "read_bytes": str(res.bytes_read()),
                    "written_rows": "0",
                    "written_bytes": "0",
                }
            finally:
                conn.close()
        summary["result_bytes"] = str(len(body))  # (no result_rows: chdb does not say)
        summary["elapsed_ns"] = str(time.perf_counter_ns() - t0)
        return body, fmt_out, summary

    def _execute_writable(self, req: _Request) -> tuple[bytes, str | None, dict[str, str]]:
        """``writable=True``: run the request as a ClickHouse server would (INSERT data streamed in)."""
        insert = split_insert(req.sql)
        t0 = time.perf_counter_ns()
        with self.lock:
            conn = chdb.connect(self._conn_str)
            try:
                if req.params.get("database"):
                    conn.query(f"USE {_quote_identifier(req.params['database'])}", "TabSeparated")
                for name, value in req.settings.items():
                    conn.query(f"SET {name} = {_quote_value(value)}", "TabSeparated")
                if insert is not None:
                    statement, fmt, data = insert
                    with conn.send_insert(statement, fmt) as inserter:
                        if data:
                            inserter.append(data)
                        res = inserter.finish()
                    summary = {"written_rows": str(res.rows_written), "written_bytes": str(res.bytes_written)}
                    body, fmt_out = b"", None
                else:
                    text = req.sql.decode("utf-8", "replace")
                    fmt = output_format(text, req.params.get("default_format") or "TabSeparated")
                    res = conn.query(text, fmt, params=req.bind)
                    body = res.bytes() or b""
                    fmt_out = fmt if (body or _produces_result(text)) else None
                    summary = {"read_rows": str(res.rows_read()), "read_bytes": str(res.bytes_read()),
                               "written_rows": "0", "written_bytes": "0"}
            finally:
                conn.close()
        summary["result_bytes"] = str(len(body))
        summary["elapsed_ns"] = str(time.perf_counter_ns() - t0)
        return body, fmt_out, summary

    def _vet(self, conn: Any, text: str, bind: dict[str, str]) -> None:
        """Refuse what a read-only endpoint must not run, by ClickHouse's own parser (see :func:`vet_ast`)."""
        # 1. Exactly one statement: chdb runs every statement of a text, and EXPLAIN AST
        #    below would run the ones after the first. The text goes in as a string literal.
        try:
            formatted = conn.query(f"SELECT formatQuery({_quote_value(text)})", "TabSeparatedRaw").bytes().decode()
        except Exception as ex:  # a syntax error, several statements: ClickHouse's words, without the wrapper
            raise RuntimeError(_without_format_query_scope(str(ex))) from None
        if writes_outfile(formatted):
            raise _readonly("INTO OUTFILE writes a file on the server")
        # 2. The statement's syntax tree: its kind, its functions, an INTO OUTFILE literal.
        rows = conn.query(f"EXPLAIN AST {text}", "TabSeparated", params=bind).bytes().decode().split("\n")
        vet_ast([row for row in rows if row], self._table_functions)


def _without_format_query_scope(message: str) -> str:
    """ClickHouse's error about the text given to ``formatQuery``, without naming the wrapper query.

    >>> _without_format_query_scope("Code: 62. DB::Exception: Syntax error: x: In scope SELECT formatQuery('y'). (SYNTAX_ERROR)")
    'Code: 62. DB::Exception: Syntax error: x. (SYNTAX_ERROR)'
    """
    idx = message.find(_FORMAT_QUERY_SCOPE)
    if idx < 0:
        return message
    end = message.rfind(". (")
    return message[:idx].rstrip(" :.") + (message[end:] if end > idx else "")


def _error_text(ex: BaseException, version: str) -> tuple[int, str]:
    message = str(ex)
    idx = message.find("Code: ")
    message = message[idx:] if idx > 0 else message
    message = message.strip() or type(ex).__name__
    m = _CODE_RE.search(message)
    code = int(m.group(1)) if m else 1001  # STD_EXCEPTION
    if not m:
        message = f"Code: {code}. DB::Exception: {message}. (STD_EXCEPTION)"
    if "(version " not in message:
        message = f"{message} (version {version})"
    return code, message + "\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clickhouse_connect's connection pool
    disable_nagle_algorithm = True
    server_version = "flowmon-sqlserve"
    server_ref: SqlServer  # set on the bound subclass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s - " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _gate(self) -> None:
        """Refuse a browser's request, and a query without the token (pings need none).

        Nothing of a refused request's body is read: the connection closes after the answer.
        """
        srv = self.server_ref
        reason = browser_request(self.headers)
        if reason is not None:
            raise ServeError(f"{reason} is refused", 497, "ACCESS_DENIED", status=403)
        url = urlsplit(self.path)
        if url.path.rstrip("/") in ("/ping", "/replicas_status"):
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        no_body = self.headers.get("Content-Length", "0").strip() == "0" and "Transfer-Encoding" not in self.headers
        if url.path in ("", "/") and not params.get("query") and no_body:
            return  # GET / : Ok.
        if "password" in params:
            raise ServeError("the token goes in the X-ClickHouse-Key header or as the basic-auth password, "
                             "not in the URL", 516, "AUTHENTICATION_FAILED", status=403)
        token = request_token(self.headers)
        if token is None:
            raise ServeError("flowmon's SQL endpoint needs the token of its address file (sql-endpoint.json) as "
                             "the password or the X-ClickHouse-Key header", 194, "REQUIRED_PASSWORD", status=401)
        if not hmac.compare_digest(token.encode("utf-8", "replace"), srv.token.encode()):
            raise ServeError("wrong token: read it again from the address file (sql-endpoint.json), the SQL "
                             "endpoint draws a new one when it starts", 516, "AUTHENTICATION_FAILED", status=403)

    def _parse(self) -> _Request | None:
        url = urlsplit(self.path)
        params: dict[str, str] = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._read_body()
        if url.path.rstrip("/") == "/ping" or url.path.rstrip("/") == "/replicas_status":
            return None
        if url.path not in ("", "/"):
            raise ServeError(f"There is no handle {url.path}", 1002, "UNKNOWN_HANDLER")
        if params.get("compress") in ("1", "true") or params.get("decompress") in ("1", "true"):
            raise ServeError("ClickHouse block compression (compress/decompress=1) is not supported")
        body = _decompress(body, self.headers.get("Content-Encoding", ""))
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            msg = BytesParser(policy=policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body
            )
            body = b""
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    raise ServeError("External data is not supported")
                value = part.get_payload(decode=True) or b""
                if name == "query":
                    body = value
                elif name:
                    params[name] = value.decode("utf-8")
        if any(k.endswith("_structure") or k.endswith("_types") for k in params):
            raise ServeError("External data is not supported")
        url_query = params.get("query", "").encode("utf-8")
        sql = url_query + b"\n" + body if url_query and body else (url_query or body)
        if not sql.strip():
            return None  # GET / : Ok.
        bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        return _Request(sql, params, bind)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        srv = self.server_ref
        query_id = ""
        common = {
            "X-ClickHouse-Server-Display-Name": srv.display_name,
            "X-ClickHouse-Timezone": srv.timezone,
            "X-Content-Type-Options": "nosniff",
        }
        body_read = False
        try:
            self._gate()
            body_read = True
            req = self._parse()
            if req is None:
                self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8", **common})
                return
            query_id = req.params.get("query_id") or str(uuid.uuid4())
            body, fmt, summary = srv.execute(req)
            srv.queries += 1
            headers = {**common, "X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Summary": json.dumps(summary)}
            if fmt is not None:
                headers["X-ClickHouse-Format"] = fmt
                headers["Content-Type"] = _CONTENT_TYPES.get(fmt.lower(), "application/octet-stream")
            else:
                headers["Content-Type"] = "text/plain; charset=UTF-8"
            self._send(200, body, headers)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as ex:  # every query error goes back to the client, ClickHouse-style
            srv.errors += 1
            code, text = _error_text(ex, srv.version)
            log.debug("query failed: %s", text.strip())
            headers = {**common, "X-ClickHouse-Exception-Code": str(code), "Content-Type": "text/plain; charset=UTF-8"}
            if query_id:
                headers["X-ClickHouse-Query-Id"] = query_id
            status = getattr(ex, "status", 500)
            if status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="flowmon SQL endpoint", charset="UTF-8"'
            if not body_read:  # the body of a refused request stays unread: end the connection
                headers["Connection"] = "close"
                self.close_connection = True
            self._send(status, text.encode("utf-8", "replace"), headers)


def read_address_file(path: str | os.PathLike, check: bool = True, timeout: float = 2.0) -> dict[str, Any] | None:
    """The address (and token) a live :class:`SqlServer` wrote to *path*, or None.

    None also when the file cannot be read (it is its owner's, mode 0600). With *check*,
    None when the writing process is gone or ``/ping`` does not answer (a stale file left
    by a killed owner). Connect with :func:`endpoint_client`.
    """
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not check:
        return info
    try:
        os.kill(int(info["pid"]), 0)
    except (KeyError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # alive, another user's
    import urllib.request

    try:
        with urllib.request.urlopen(f"{info['url']}/ping", timeout=timeout) as resp:  # noqa: S310 (loopback URL we wrote)
            return info if resp.status == 200 else None
    except OSError:
        return None


def endpoint_client(info: dict[str, Any], **kwargs: Any) -> Any:
    """A clickhouse_connect client on the endpoint an address file describes, its token as the password.

    *info* is what :func:`read_address_file` returns; *kwargs* go to
    ``clickhouse_connect.get_client`` (e.g. ``database=``).
    """
    import clickhouse_connect

    return clickhouse_connect.get_client(
        host=info.get("host") or "127.0.0.1",
        port=int(info["port"]),
        username=info.get("user") or "default",
        password=info.get("token") or "",
        **kwargs,
    )
