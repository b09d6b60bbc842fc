"""pipeline.clickhouse.sqlserve: the chdb owner's ClickHouse-compatible HTTP endpoint, with real clients.

curl-style requests (urllib), clickhouse_connect.get_client(host, port), and the
pipeline's own code over ``http://`` (connect + migrate + WindowSink) writing into
the owner's chdb: the same client code runs for both DSN kinds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.clickhouse.client import chdb_path_in_use, connect
from pipeline.config import REPO_ROOT
from pipeline.clickhouse.migrations import migrate
from pipeline.clickhouse.writer import WindowSink
from tests.support.records import example_window
from pipeline.clickhouse.sqlserve import SqlServer, read_address_file


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
def remote(owner, database):
    """A plain clickhouse_connect HTTP client on the endpoint, defaults untouched."""
    _, server = owner
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database=database)
    yield c
    c.close()


def get(server, path: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(f"{server.url}{path}", timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as ex:
        return ex.code, dict(ex.headers), ex.read()


def test_curl_style_requests(owner):
    _, server = owner
    status, headers, body = get(server, "/?query=SELECT+1")
    assert (status, body) == (200, b"1\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"
    assert get(server, "/ping")[2] == b"Ok.\n"
    assert get(server, "/")[2] == b"Ok.\n"
    q = urllib.parse.quote("SELECT number AS n FROM numbers(3) FORMAT JSONEachRow")
    assert get(server, f"/?query={q}")[2] == b'{"n":0}\n{"n":1}\n{"n":2}\n'
    assert get(server, "/?query=SELECT+%7Bx%3AUInt8%7D*2&param_x=21")[2] == b"42\n"  # {x:UInt8}*2
    assert get(server, "/?query=SELECT+1&default_format=CSVWithNames")[2] == b'"1"\n1\n'
    # query in a POST body, and URL + body concatenated as ClickHouse does
    req = urllib.request.Request(f"{server.url}/", data=b"SELECT 'posted'", method="POST")
    assert urllib.request.urlopen(req, timeout=10).read() == b"posted\n"
    req = urllib.request.Request(f"{server.url}/?query=SELECT", data=b"2+2", method="POST")
    assert urllib.request.urlopen(req, timeout=10).read() == b"4\n"


def test_curl_style_error(owner):
    _, server = owner
    status, headers, body = get(server, "/?query=SELECT+*+FROM+no_such_table")
    assert status == 500
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"UNKNOWN_TABLE" in body


def test_curl_style_insert_and_settings(owner, database):
    client, server = owner
    client.command(f"CREATE TABLE {database}.t (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    q = urllib.parse.quote(f"INSERT INTO {database}.t FORMAT CSV")
    req = urllib.request.Request(f"{server.url}/?query={q}", data=b"1,one\n2,two\n", method="POST")
    assert urllib.request.urlopen(req, timeout=10).status == 200
    assert client.query(f"SELECT * FROM {database}.t ORDER BY a").result_rows == [(1, "one"), (2, "two")]
    # URL parameters that are settings apply to that query only
    assert get(server, "/?query=SELECT+getSetting('max_threads')&max_threads=3")[2] == b"3\n"
    assert get(server, "/?query=SELECT+1&no_such_setting=1")[0] == 500


def test_clickhouse_connect_client(remote, database):
    assert remote.server_version
    assert remote.query("SELECT 1 AS x, 'a' AS s").result_rows == [(1, "a")]
    assert remote.command("SELECT currentDatabase()") == database
    remote.command("CREATE TABLE t (a UInt32, s LowCardinality(String), d DateTime('UTC'), m Map(UInt16, UInt64)) ENGINE = MergeTree ORDER BY a")
    assert remote.command("SELECT count() FROM t") == 0
    remote.insert("t", [[1, "x", 1_700_000_000, {1: 2}], [2, "y", 1_700_000_600, {}]], column_names=["a", "s", "d", "m"])
    # server-side binding ({name:Type} -> param_name URL parameters) and client-side binding
    assert remote.query("SELECT s FROM t WHERE a = {a:UInt32}", parameters={"a": 2}).result_rows == [("y",)]
    assert remote.query("SELECT s FROM t WHERE s IN %(names)s ORDER BY a", parameters={"names": ["x", "y"]}).result_rows == [("x",), ("y",)]
    df = remote.query_df("SELECT a, s, toUnixTimestamp(d) AS ts FROM t ORDER BY a")
    assert df["a"].tolist() == [1, 2] and df["s"].tolist() == ["x", "y"] and df["ts"].tolist() == [1_700_000_000, 1_700_000_600]
    assert remote.query("SELECT m FROM t ORDER BY a").result_columns == [[{1: 2}, {}]]
    assert remote.command("SELECT 1 WHERE 0") == ""  # a result set, empty
    # a bound value too large for the URL goes as multipart/form-data
    big = "z" * 6000
    assert remote.query("SELECT length({v:String})", parameters={"v": big}).result_rows == [(6000,)]


def test_client_errors_are_readable(remote):
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as info:
        remote.query("SELECT * FROM no_such_table")
    assert "Code: 60" in str(info.value)
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR"):
        remote.command("SELEC 1")
    assert remote.command("SELECT 2") == 2  # the connection is still usable


@pytest.mark.parametrize("compress", [True, "lz4", "zstd", "gzip", False])
def test_insert_compressions(owner, database, compress):
    _, server = owner
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database=database, compress=compress)
    c.command("CREATE TABLE IF NOT EXISTS t (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
    n = 140_000  # two insert blocks (131,072 rows each at most here): two compressed frames
    c.insert("t", [list(range(n)), [f"row {i}" for i in range(n)]], column_names=["a", "s"], column_oriented=True)
    assert c.query("SELECT count(), sum(a) FROM t").result_rows == [(n, n * (n - 1) // 2)]
    c.close()


def test_concurrent_clients(owner, database):
    _, server = owner
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
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
    assert errors == []


def test_pipeline_code_over_http_dsn(owner, database):
    """connect('http://...') + migrate + WindowSink write THROUGH the server into the owner's chdb."""
    client, server = owner
    http = connect(f"{server.url}/{database}")
    assert http.command("SELECT currentDatabase()") == database
    assert migrate(http) != []
    assert migrate(http) == []
    windows = [example_window(src_subnet=f"s{i}", bytes=i, closed_at=1_700_001_060 + i) for i in range(100)]
    sink = WindowSink(http)
    for _ in range(3):
        assert sink.write_windows(windows) == 100
    sink.write_windows([dict(windows[0], closed_at=1_700_009_999)])  # re-emitted in another batch
    # read back in the owner, through its own chdb client
    assert client.command(f"SELECT count() FROM {database}.flow_windows") == 101  # 3 identical batches landed once
    assert client.query(f"SELECT count(), sum(bytes) FROM {database}.flow_windows FINAL").result_rows == [(100, sum(range(100)))]
    assert http.query("SELECT sum(bytes) FROM flow_windows_final").result_rows == [(sum(range(100)),)]
    http.close()


def test_address_file_and_a_second_process(owner, database, tmp_path):
    """Another process cannot open the directory, but finds the owner through the address file."""
    client, server = owner
    client.command(f"CREATE TABLE {database}.t (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.command(f"INSERT INTO {database}.t VALUES (7)")
    address = server.write_address_file(tmp_path / "serve.json")
    info = read_address_file(address)
    assert info is not None and info["port"] == server.port and info["pid"] == os.getpid()
    script = f"""
import sys
from pipeline.clickhouse.client import ChdbLocked, connect
from pipeline.clickhouse.sqlserve import read_address_file
try:
    connect("chdb://" + {info["engine"]!r})
    sys.exit("opened a directory another process owns")
except ChdbLocked as ex:
    print("locked:", "another process owns it" in str(ex))
c = connect(read_address_file({str(address)!r})["url"], database={database!r})
print("value:", c.command("SELECT a FROM t"))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "locked: True" in out.stdout and "value: 7" in out.stdout


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
