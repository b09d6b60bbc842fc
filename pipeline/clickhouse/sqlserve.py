"""Serve the process's chdb engine over (enough of) ClickHouse's HTTP interface.  *shell*

chdb admits one process per data directory, so the process that owns it (the one
running the ``sink`` role) serves the others: ``flowmon sql`` in another terminal,
dashboards, ``curl``, and any clickhouse_connect client, including
``pipeline.clickhouse.client.connect("http://127.0.0.1:PORT")`` and so :class:`~pipeline.clickhouse.writer.WindowSink`
itself. chdb cannot open ClickHouse's own HTTP listener, hence this small server
(stdlib ``ThreadingHTTPServer`` in a background thread).

What it speaks
--------------
- ``GET /ping`` and ``GET /`` → ``Ok.``
- ``GET|POST /?query=...``, the query in the URL, in the body, or both (URL first,
  then the body, as ClickHouse does); ``multipart/form-data`` bodies with ``query`` and
  ``param_*`` fields (what clickhouse_connect sends for large bound parameters).
- ``database=``, ``default_format=`` (else ``TabSeparated``; a trailing ``FORMAT x`` in
  the query wins), ``param_<name>=`` for server-side ``{name:Type}`` binding; every other
  URL parameter that is not an HTTP-transport one (``session_id``, ``query_id``,
  ``compress``, ``wait_end_of_query``, ``enable_http_compression``, ...) is applied as a
  ClickHouse setting for this query (e.g. ``insert_deduplication_token``).
- ``INSERT ... FORMAT <fmt>`` followed by data in any input format chdb reads (Native
  from clickhouse_connect, CSV, JSONEachRow, ...), streamed into chdb's inserter.
- Request bodies compressed with ``Content-Encoding`` lz4, zstd, gzip, deflate (and br
  when ``brotli`` is installed) — clickhouse_connect compresses its inserts by default.
  Chunked request bodies.
- Responses: the bytes chdb produced in the requested format, uncompressed, with
  ``X-ClickHouse-Format``, ``-Timezone``, ``-Server-Display-Name``, ``-Query-Id``,
  ``-Summary``. Errors: HTTP 500, ``X-ClickHouse-Exception-Code`` and ClickHouse's
  error text (``Code: 60. DB::Exception: Unknown table ... (UNKNOWN_TABLE) (version
  ...)``), which clickhouse_connect raises as a ``DatabaseError``.

Limits
------
- No authentication; user and password are ignored. It binds to 127.0.0.1 by default:
  do not expose it.
- No HTTP sessions: ``session_id`` is ignored, each request runs on a fresh chdb
  connection handle, so ``SET``, ``USE`` and temporary tables do not carry over to the
  next request (put settings in the request's URL parameters, which clickhouse_connect
  does).
- Queries run one at a time (one lock; chdb calls are serialised) and results are
  held in memory before being sent (no streaming, no progress headers): fine for
  dashboards and the sink's batches, not for multi-GB exports.
- GET requests are not made read-only (ClickHouse sets ``readonly=2`` on them).
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
>>> server.write_address_file("flowmon-data/serve.json")  # doctest: +SKIP
>>> # elsewhere: connect(read_address_file("flowmon-data/serve.json")["url"])

Pure helpers:

>>> split_insert(b"INSERT INTO t (a, b) FORMAT CSV\\n1,2\\n")
('INSERT INTO t (a, b)', 'CSV', b'1,2\\n')
>>> split_insert(b"SELECT 1") is None
True
>>> output_format("SELECT 1 FORMAT JSONEachRow;", "TabSeparated"), output_format("SELECT 1", "CSV")
('JSONEachRow', 'CSV')
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
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

__all__ = ["SqlServer", "read_address_file", "split_insert", "output_format", "ServeError"]

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


class ServeError(Exception):
    """A request the server refuses, with the ClickHouse error code to report."""

    def __init__(self, message: str, code: int = 48, name: str = "NOT_IMPLEMENTED"):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code = code


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
    """

    def __init__(
        self,
        client_or_session: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        lock: threading.Lock | None = None,
        display_name: str = "flowmon-chdb",
    ):
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
        self.version, self.timezone = row.split("\t")
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
        """Write ``{"url", "host", "port", "pid", "engine", "started_at"}`` to *path* (atomically).

        :func:`read_address_file` reads it back and checks that the owner is alive.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "pid": os.getpid(),
            "engine": self._conn_str,
            "started_at": time.time(),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, path)
        self._address_files.append(path)
        return path

    # ---- execution ------------------------------------------------------

    def execute(self, req: _Request) -> tuple[bytes, str | None, dict[str, str]]:
        """Run one request on a fresh handle: (body, output format or None, summary)."""
        settings = req.settings
        for name in settings:
            if not _SETTING_NAME_RE.match(name):
                raise ServeError(f"Invalid setting name {name!r}", 115, "UNKNOWN_SETTING")
        insert = split_insert(req.sql)
        t0 = time.perf_counter_ns()
        with self.lock:
            conn = chdb.connect(self._conn_str)
            try:
                if req.params.get("database"):
                    conn.query(f"USE {_quote_identifier(req.params['database'])}", "TabSeparated")
                for name, value in settings.items():
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
                    sql = _decode_sql(req.sql)
                    text = sql if isinstance(sql, str) else sql.decode("utf-8", "replace")
                    fmt = output_format(text, req.params.get("default_format") or "TabSeparated")
                    if fmt.lower() in _NOT_FORMATS:
                        raise ServeError(f"Unknown format {fmt}", 73, "UNKNOWN_FORMAT")
                    res = conn.query(sql, fmt, params=req.bind)
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
        summary.setdefault("read_rows", "0")
        summary.setdefault("read_bytes", "0")
        summary["result_bytes"] = str(len(body))  # (no result_rows: chdb does not say)
        summary["elapsed_ns"] = str(time.perf_counter_ns() - t0)
        return body, fmt_out, summary


def _decode_sql(sql: bytes) -> str | bytes:
    try:
        return sql.decode("utf-8")
    except UnicodeDecodeError:
        return sql  # binary bound values: chdb takes bytes


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
        }
        try:
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
            self._send(500, text.encode("utf-8", "replace"), headers)


def read_address_file(path: str | os.PathLike, check: bool = True, timeout: float = 2.0) -> dict[str, Any] | None:
    """The address a live :class:`SqlServer` wrote to *path*, or None.

    With *check*, None also when the writing process is gone or ``/ping`` does not
    answer (a stale file left by a killed owner).
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
