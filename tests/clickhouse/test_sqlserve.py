"""pipeline.clickhouse.sqlserve: the chdb owner's read-only ClickHouse-compatible HTTP endpoint, with real clients.

curl-style requests (urllib), clickhouse_connect.get_client(host, port, password=token),
``flowmon sql`` in another process, and the pipeline's own code over ``http://``
(connect + reads) against the owner's chdb. And what the endpoint refuses: writes,
settings changes, reaching files/URLs/servers, requests without the token, requests
from web pages; each refusal leaves the owner's data as it was.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib

import clickhouse_connect
import lz4.frame
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.clickhouse.client import chdb_path_in_use, connect
from pipeline.clickhouse.migrations import migrate
from pipeline.clickhouse.sqlserve import SqlServer, endpoint_client, read_address_file
from pipeline.clickhouse.writer import WindowSink
from pipeline.config import REPO_ROOT
from tests.support.records import example_window

@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """The process owning the chdb directory, serving it."""
    path = chdb_path_in_use() or str(tmp_path_factory.getbasetemp() / "chdb")
    client = connect(f"chdb://{path}")
    server = SqlServer(client).start()
    yield client, server
    server.stop()
    client.close()


@pytest.fixture
def database(owner):
    client, _ = owner
    name = f"t_{uuid.uuid4().hex[:12]}"
    client.command(f"CREATE DATABASE {name}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def table(owner, database):
    """``<database>.t`` with two rows, made by the owner (the endpoint cannot write)."""
    client, _ = owner
    client.command(f"CREATE TABLE {database}.t (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    client.command(f"INSERT INTO {database}.t VALUES (1, 'one'), (2, 'two')")
    return f"{database}.t"


@pytest.fixture
def remote(owner, database):
    """A plain clickhouse_connect HTTP client on the endpoint with the token as its password."""
    _, server = owner
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, password=server.token, database=database)
    yield c
    c.close()


def request(server, path: str, data: bytes | None = None, headers: dict | None = None, token: bool = True):
    """(status, headers, body) of one HTTP request; the token goes as X-ClickHouse-Key unless token=False."""
    h = dict(headers or {})
    if token:
        h.setdefault("X-ClickHouse-Key", server.token)
    req = urllib.request.Request(f"{server.url}{path}", data=data, headers=h, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as ex:
        return ex.code, dict(ex.headers), ex.read()


def get(server, path: str, **kw):
    return request(server, path, **kw)


def q(sql: str) -> str:
    return "/?query=" + urllib.parse.quote(sql)


def rows_of(owner, table: str) -> list:
    client, _ = owner
    return client.query(f"SELECT * FROM {table} ORDER BY a").result_rows


# ---- what it serves ------------------------------------------------------------------------


def test_curl_style_requests(owner):
    _, server = owner
    status, headers, body = get(server, "/?query=SELECT+1")
    assert (status, body) == (200, b"1\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"
    assert get(server, "/ping", token=False)[2] == b"Ok.\n"  # health checks need no token
    assert get(server, "/", token=False)[2] == b"Ok.\n"
    assert get(server, q("SELECT number AS n FROM numbers(3) FORMAT JSONEachRow"))[2] == b'{"n":0}\n{"n":1}\n{"n":2}\n'
    assert get(server, "/?query=SELECT+%7Bx%3AUInt8%7D*2&param_x=21")[2] == b"42\n"  # {x:UInt8}*2
    assert get(server, "/?query=SELECT+1&default_format=CSVWithNames")[2] == b'"1"\n1\n'
    # query in a POST body, and URL + body concatenated as ClickHouse does
    assert request(server, "/", data=b"SELECT 'posted'")[2] == b"posted\n"
    assert request(server, "/?query=SELECT", data=b"2+2")[2] == b"4\n"
    # the other ways a ClickHouse client sends its password
    basic = "Basic " + base64.b64encode(f"default:{server.token}".encode()).decode()
    assert get(server, q("SELECT 5"), token=False, headers={"Authorization": basic})[:3:2] == (200, b"5\n")
    assert get(server, q("SELECT 6"), token=False, headers={"Authorization": f"Bearer {server.token}"})[2] == b"6\n"
    # reading statements other than SELECT
    assert get(server, q("EXISTS TABLE system.one"))[2] == b"1\n"
    assert get(server, q("SHOW DATABASES"))[0] == 200
    assert get(server, q("DESCRIBE TABLE system.one"))[2].startswith(b"dummy\tUInt8")
    assert get(server, q("EXPLAIN SELECT 1"))[0] == 200
    assert get(server, q("SELECT * FROM (WITH 2 AS x SELECT x * y FROM (SELECT 3 AS y) UNION ALL SELECT 1) ORDER BY 1"))[2] == b"1\n6\n"
    assert get(server, q("SELECT count() FROM view(SELECT * FROM numbers(4)) /* ; */ -- ;"))[2] == b"4\n"


def test_curl_style_error(owner):
    _, server = owner
    status, headers, body = get(server, "/?query=SELECT+*+FROM+no_such_table")
    assert status == 500
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"UNKNOWN_TABLE" in body


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                                ("lz4", lz4.frame.compress)])
def test_compressed_request_bodies(owner, encoding, compress):
    _, server = owner
    status, _, body = request(server, "/", data=compress(b"SELECT 'squeezed'"), headers={"Content-Encoding": encoding})
    assert (status, body) == (200, b"squeezed\n")


def test_clickhouse_connect_client(remote, table):
    assert remote.server_version
    assert remote.query("SELECT 1 AS x, 'a' AS s").result_rows == [(1, "a")]
    assert remote.command("SELECT currentDatabase()") == table.split(".")[0]
    assert remote.query("SELECT a, s FROM t ORDER BY a").result_rows == [(1, "one"), (2, "two")]
    # server-side binding ({name:Type} -> param_name URL parameters) and client-side binding
    assert remote.query("SELECT s FROM t WHERE a = {a:UInt32}", parameters={"a": 2}).result_rows == [("two",)]
    assert remote.query("SELECT s FROM t WHERE s IN %(names)s ORDER BY a", parameters={"names": ["one", "two"]}).result_rows == [("one",), ("two",)]
    df = remote.query_df("SELECT a, s, toUnixTimestamp(toDateTime(1700000000 + a, 'UTC')) AS ts FROM t ORDER BY a")
    assert df["a"].tolist() == [1, 2] and df["s"].tolist() == ["one", "two"] and df["ts"].tolist() == [1_700_000_001, 1_700_000_002]
    assert remote.query("SELECT map(1, 2), map()").result_rows == [({1: 2}, {})]
    assert remote.command("SELECT 1 WHERE 0") == ""  # a result set, empty
    # a bound value too large for the URL goes as multipart/form-data
    assert remote.query("SELECT length({v:String})", parameters={"v": "z" * 6000}).result_rows == [(6000,)]


def test_client_errors_are_readable(remote):
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as info:
        remote.query("SELECT * FROM no_such_table")
    assert "Code: 60" in str(info.value)
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR") as info:
        remote.command("SELEC 1")
    assert "formatQuery" not in str(info.value)  # ClickHouse's words about the user's text, not our wrapper
    assert remote.command("SELECT 2") == 2  # the connection is still usable


def test_concurrent_clients(owner):
    _, server = owner
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            c = endpoint_client({"port": server.port, "token": server.token})
            for i in range(20):
                assert c.command(f"SELECT {k} * 100 + {i}") == k * 100 + i
            c.close()
        except BaseException as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert errors == []


def test_pipeline_code_over_http_dsn(owner, database):
    """The owner migrates and writes in-process; connect('http://...') reads THROUGH the server, and cannot write."""
    client, server = owner
    local = connect(f"chdb://{chdb_path_in_use()}", database=database)
    migrate(local)
    windows = [example_window(src_subnet=f"s{i}", bytes=i, closed_at=1_700_001_060 + i) for i in range(100)]
    assert WindowSink(local).write_windows(windows) == 100
    http = connect(f"{server.url}/{database}", password=server.token)  # the database exists: no CREATE asked
    assert http.command("SELECT currentDatabase()") == database
    assert http.query("SELECT count(), sum(bytes) FROM flow_windows FINAL").result_rows == [(100, sum(range(100)))]
    assert http.query("SELECT sum(bytes) FROM flow_windows_final").result_rows == [(sum(range(100)),)]
    # (refused by the server, or already by clickhouse_connect: it sees the server's settings are read-only)
    with pytest.raises(DatabaseError, match="(?i)readonly"):
        WindowSink(http).write_windows([example_window(src_subnet="intruder", closed_at=1_700_009_999)])
    assert client.command(f"SELECT count() FROM {database}.flow_windows") == 100
    http.close()
    local.close()


# ---- what it refuses -------------------------------------------------------------------------

WRITES = [
    "DROP TABLE {t}",
    "DROP DATABASE {db}",
    "TRUNCATE TABLE {t}",
    "INSERT INTO {t} VALUES (3, 'three')",
    "INSERT INTO {t} SELECT 4, 'four'",
    "ALTER TABLE {t} DELETE WHERE 1",
    "ALTER TABLE {t} UPDATE s = 'x' WHERE 1",
    "ALTER TABLE {t} ADD COLUMN z UInt8",
    "DELETE FROM {t} WHERE 1",
    "CREATE TABLE {db}.u (a UInt8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE u (a UInt8)",
    "RENAME TABLE {t} TO {db}.u",
    "DETACH TABLE {t}",
    "OPTIMIZE TABLE {t} FINAL",
    "SET max_threads = 1",
    "SET readonly = 0",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 SETTINGS max_threads = 1",
    "SYSTEM FLUSH LOGS",
    "KILL QUERY WHERE 1",
    "USE system",
    "SELECT 1; DROP TABLE {t}",
    "SELECT 1;\nTRUNCATE TABLE {t}",
    "/* hi */ dRoP   tAbLe {t}",
    "EXPLAIN SELECT 1; DROP TABLE {t}",
]


@pytest.mark.parametrize("how", ["GET", "POST text/plain", "clickhouse_connect"])
def test_writes_and_settings_are_refused(owner, table, remote, how):
    """DDL, DML, SET/SETTINGS, SYSTEM, KILL, several statements: refused over GET, a text/plain POST (what
    a web page can send) and a real client; the table keeps its rows and columns."""
    _, server = owner
    db = table.split(".")[0]
    for template in WRITES:
        sql = template.format(t=table, db=db)
        if how == "GET":
            status, headers, body = get(server, q(sql))
            assert status == 500, (sql, body)
            assert headers["X-ClickHouse-Exception-Code"] in ("164", "62"), (sql, body)  # READONLY, SYNTAX_ERROR
        elif how == "POST text/plain":
            status, headers, body = request(server, "/", data=sql.encode(), headers={"Content-Type": "text/plain"})
            assert status == 500 and headers["X-ClickHouse-Exception-Code"] in ("164", "62"), (sql, body)
        else:
            with pytest.raises(DatabaseError, match=r"READONLY|Multi-statements"):
                remote.command(sql)
        assert rows_of(owner, table) == [(1, "one"), (2, "two")], sql
    # a streamed INSERT ... FORMAT with its data in the body, and URL settings
    status, headers, _ = request(server, q(f"INSERT INTO {table} FORMAT CSV"), data=b"9,nine\n")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert get(server, q("SELECT getSetting('max_threads')") + "&max_threads=3")[1]["X-ClickHouse-Exception-Code"] == "164"
    assert get(server, q("SELECT 1") + "&readonly=0")[1]["X-ClickHouse-Exception-Code"] == "164"
    with pytest.raises(DatabaseError, match="READONLY"):
        remote.insert("t", [[5, "five"]], column_names=["a", "s"])
    client, _ = owner
    assert client.query(f"DESCRIBE TABLE {table}").result_rows[0][:2] == ("a", "UInt32")
    assert [r[0] for r in client.query(f"DESCRIBE TABLE {table}").result_rows] == ["a", "s"]
    # the owner's own handle is not read-only: the endpoint's mode stays on its handles
    client.command(f"INSERT INTO {table} VALUES (3, 'three')")
    assert rows_of(owner, table)[-1] == (3, "three")


@pytest.fixture
def listener():
    """A TCP port that records whether anything connected to it (a would-be target of url()/remote())."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.3)
    yield sock
    sock.close()


def _connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except (TimeoutError, socket.timeout):
        return False
    conn.close()
    return True


def test_files_urls_and_other_servers_are_refused(owner, remote, listener, tmp_path):
    _, server = owner
    port = listener.getsockname()[1]
    outfile = tmp_path / "written.txt"
    reaching = [
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT file('/etc/hostname')",
        "select `file`('/etc/hostname')",
        "SELECT * FROM `file` /* x */ ('/etc/hostname', 'LineAsString')",
        "SELECT * FROM fIlE('/etc/hostname', 'LineAsString')",
        "SELECT * FROM\n-- comment )\nfile('/etc/hostname', 'LineAsString')",
        "SELECT file({p:String})",
        "SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString'))",
        "WITH h AS (SELECT * FROM file('/etc/hostname', 'LineAsString')) SELECT * FROM h",
        "SELECT * FROM view(SELECT * FROM file('/etc/hostname', 'LineAsString'))",
        "SELECT 1 WHERE 'x' IN (SELECT line FROM file('/etc/hostname', 'LineAsString'))",
        "DESCRIBE file('/etc/hostname', 'CSVWithNames')",
        "DESC TABLE file('/etc/hostname', 'LineAsString')",
        "EXPLAIN PLAN SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM filesystem('/etc')",
        f"SELECT * FROM url('http://127.0.0.1:{port}/x.csv', 'CSV', 'a String')",
        f"DESCRIBE url('http://127.0.0.1:{port}/x.csv', 'CSV')",
        f"SELECT * FROM URL('http://127.0.0.1:{port}/x.csv', 'CSV', 'a String')",
        f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
        f"SELECT * FROM remoteSecure('127.0.0.1:{port}', system.one)",
        f"SELECT * FROM s3('http://127.0.0.1:{port}/b/x.csv', 'CSV', 'a String')",
        f"DESCRIBE s3('http://127.0.0.1:{port}/b/x.csv', 'CSV')",
        f"SELECT * FROM mysql('127.0.0.1:{port}', 'db', 't', 'u', 'p')",
        f"SELECT * FROM postgresql('127.0.0.1:{port}', 'db', 't', 'u', 'p')",
        "SELECT * FROM executable('cat /etc/hostname', 'TSV', 'a String')",
        "SELECT * FROM python(sys)",
        "SELECT * FROM cluster('default', system.one)",
        "SELECT * FROM format(TSV, 'a String', 'x')",
        f"SELECT 1 INTO OUTFILE '{outfile}'",
        f"SELECT 1 into/**/outfile '{outfile}' FORMAT CSV",
        f"SHOW TABLES INTO OUTFILE '{outfile}'",
        f"EXPLAIN SELECT 1 INTO OUTFILE '{outfile}'",
        f"SELECT 1 INTO OUTFILE '{outfile}' AND STDOUT",
    ]
    for sql in reaching:
        status, headers, body = get(server, q(sql) + "&param_p=%2Fetc%2Fhostname")
        assert status == 500, (sql, body)
        assert headers["X-ClickHouse-Exception-Code"] == "164", (sql, body)  # READONLY
        assert body.startswith(b"Code: 164. DB::Exception: flowmon's SQL endpoint is read-only: "), (sql, body)
        assert body.count(b"\n") == 1  # the refusal, one line, and nothing else
        with pytest.raises(DatabaseError, match="READONLY"):
            remote.command(sql, parameters={"p": "/etc/hostname"})
    # a second statement would run unvetted (and chdb runs them all): the text must be one statement
    for sql in ["SELECT 1; SELECT file('/etc/hostname')", "SELECT 1;\nSELECT * FROM file('/etc/hostname', 'LineAsString')",
                f"SELECT 1; SELECT * FROM url('http://127.0.0.1:{port}/x.csv', 'CSV', 'a String')"]:
        status, headers, body = get(server, q(sql))
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "62"), (sql, body)
        assert body.startswith(b"Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed)"), body
    assert not outfile.exists()
    assert not _connected(listener)
    # a scalar named like a table function stays usable
    assert get(server, q("SELECT format('{}-{}', 'a', 'b')"))[2] == b"a-b\n"


def test_token_required(owner):
    _, server = owner
    status, headers, body = get(server, q("SELECT 1"), token=False)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "194") and b"REQUIRED_PASSWORD" in body
    assert b"\n" not in body.strip()  # one line
    status, headers, body = get(server, q("SELECT 1"), token=False, headers={"X-ClickHouse-Key": "guess"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516") and b"AUTHENTICATION_FAILED" in body
    basic = "Basic " + base64.b64encode(b"default:guess").decode()
    assert get(server, q("SELECT 1"), token=False, headers={"Authorization": basic})[0] == 403
    assert get(server, q("SELECT 1") + f"&password={server.token}", token=False)[0] == 403  # not in URLs
    assert request(server, "/", data=b"SELECT 1", token=False, headers={"Content-Type": "text/plain"})[0] == 401
    get_with_body = urllib.request.Request(f"{server.url}/", data=b"SELECT 1", method="GET")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(get_with_body, timeout=30)
    assert info.value.code == 401
    form = urllib.parse.urlencode({"query": "DROP TABLE x"}).encode()
    assert request(server, "/", data=form, token=False,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 401
    for kwargs in ({}, {"password": "guess"}):
        with pytest.raises(DatabaseError, match="REQUIRED_PASSWORD|AUTHENTICATION_FAILED"):
            clickhouse_connect.get_client(host="127.0.0.1", port=server.port, **kwargs)
    # a token belongs to one start of the server
    with SqlServer(owner[0]) as second:
        assert second.token and second.token != server.token
        assert get(second, q("SELECT 1"), headers={"X-ClickHouse-Key": server.token}, token=False)[0] == 403


def test_browser_requests_are_refused(owner):
    """What a web page open in a local browser can send: refused even with the token, and no CORS headers."""
    _, server = owner
    cases = [
        ("GET", q("SELECT 1"), {"Origin": "https://evil.example"}),
        ("POST", "/", {"Origin": "null", "Content-Type": "text/plain"}),
        ("POST", "/", {"Origin": "http://127.0.0.1:8080", "Content-Type": "application/x-www-form-urlencoded"}),
        ("GET", q("SELECT 1"), {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}),
        ("GET", q("SELECT 1"), {"Sec-Fetch-Site": "same-site"}),
        ("GET", "/ping", {"Origin": "https://evil.example"}),
    ]
    for method, path, headers in cases:
        status, got, body = request(server, path, data=b"SELECT 1" if method == "POST" else None, headers=headers)
        assert (status, got["X-ClickHouse-Exception-Code"]) == (403, "497"), (path, headers, body)
        assert b"ACCESS_DENIED" in body and b"web page" in body
        assert not any(k.lower().startswith("access-control-") for k in got)
    # the address typed into the browser by its user (Sec-Fetch-Site: none) is not a web page's request
    assert get(server, q("SELECT 7"), headers={"Sec-Fetch-Site": "none"})[2] == b"7\n"


# ---- the address file and the other processes ------------------------------------------------


def test_address_file_is_private_and_carries_the_token(owner, tmp_path):
    _, server = owner
    old = os.umask(0)  # even with a permissive umask: the file is born 0600
    try:
        path = server.write_address_file(tmp_path / "sql-endpoint.json")
        path = server.write_address_file(path)  # rewritten over an existing file
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    info = read_address_file(path)
    assert info["token"] == server.token and info["port"] == server.port and info["pid"] == os.getpid()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert endpoint_client(info).command("SELECT 8") == 8


def test_address_file_and_a_second_process(owner, table, tmp_path):
    """Another process cannot open the directory, but finds the owner (and its token) through the address file."""
    client, server = owner
    database = table.split(".")[0]
    address = server.write_address_file(tmp_path / "serve.json")
    info = read_address_file(address)
    assert info is not None
    script = f"""
import sys
from pipeline.clickhouse.client import ChdbLocked, connect
from pipeline.clickhouse.sqlserve import endpoint_client, read_address_file
try:
    connect("chdb://" + {info["engine"]!r})
    sys.exit("opened a directory another process owns")
except ChdbLocked as ex:
    print("locked:", "another process owns it" in str(ex))
c = endpoint_client(read_address_file({str(address)!r}), database={database!r})
print("value:", c.command("SELECT s FROM t WHERE a = 2"))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "locked: True" in out.stdout and "value: two" in out.stdout


def test_flowmon_sql_uses_the_token(owner, table, tmp_path):
    """`flowmon sql` in another process reads through the endpoint; a write is one readable line and exit 4."""
    _, server = owner
    server.write_address_file(tmp_path / "sql-endpoint.json")
    env = dict(os.environ, FLOWMON_DATA_DIR=str(tmp_path))

    def flowmon_sql(sql: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "sql", sql, "--format", "TSV"], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=60)

    out = flowmon_sql(f"SELECT a, s FROM {table} ORDER BY a")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1\tone\n2\ttwo\n"
    out = flowmon_sql(f"DROP TABLE {table}")
    assert out.returncode == 4  # a ClickHouse error (the exit-status table)
    assert len(out.stderr.splitlines()) == 1
    assert "READONLY" in out.stdout + out.stderr and "Traceback" not in out.stdout + out.stderr
    assert rows_of(owner, table) == [(1, "one"), (2, "two")]


def test_stop_removes_its_address_file(owner, tmp_path):
    client, _ = owner
    with SqlServer(client) as second:  # a second server on the same engine, e.g. after a restart
        path = second.write_address_file(tmp_path / "serve.json")
        assert read_address_file(path)["url"] == second.url
        assert get(second, "/?query=SELECT+3")[2] == b"3\n"
    assert not path.exists()


def test_stale_address_file(tmp_path):
    path = tmp_path / "serve.json"
    assert read_address_file(path) is None
    path.write_text(json.dumps({"url": "http://127.0.0.1:9", "port": 9, "pid": 2**22 + 12345}))
    assert read_address_file(path) is None
    assert read_address_file(path, check=False)["port"] == 9


def test_refuses_non_chdb_clients():
    with pytest.raises(TypeError, match="chdb-backed"):
        SqlServer(object())
