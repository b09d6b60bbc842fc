"""The console's pages over HTTP (FastAPI's TestClient on the real app and a real chdb database): what a
user who types a wrong URL, or runs it without data or without ClickHouse, sees."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from pipeline.console.app import create_app


@pytest.fixture(scope="module")
def fault(fault_db):
    client, res = fault_db
    return TestClient(create_app(lambda: client)), res


def _one_line_error(resp, status: int) -> str:
    assert resp.status_code == status, resp.text[-500:]
    m = re.search(r'<p class="error" id="error">(.*?)</p>', resp.text, re.S)
    assert m and "\n" not in m.group(1).strip() and "Traceback" not in resp.text
    return m.group(1)


def test_every_page_answers(fault):
    tc, res = fault
    alert = next(e["alert_id"] for e in res.events if e["event"] == "opened")
    for url in ("/", "/insights", "/insights?metric=rtt&category=inter-az&n=3", "/alerts", f"/alerts/{alert}",
                f"/path?alert={alert}", "/path?src=subnet-1a&dst=subnet-2a", "/?range=7d", "/ping"):
        r = tc.get(url)
        assert r.status_code == 200, (url, r.text[-300:])


def test_mistakes_get_one_line(fault):
    tc, _ = fault
    assert "not a duration" in _one_line_error(tc.get("/?range=5 hours"), 400)
    assert "must be after" in _one_line_error(tc.get("/?from=2025-11-25T02:00&to=2025-11-25T01:00"), 400)
    assert "give both" in _one_line_error(tc.get("/?from=2025-11-25T02:00"), 400)
    assert "not a time" in _one_line_error(tc.get("/?from=yesterday&to=today"), 400)
    assert "category" in _one_line_error(tc.get("/insights?category=everything"), 400)
    assert "metric" in _one_line_error(tc.get("/insights?metric=latency"), 400)
    assert "no alert" in _one_line_error(tc.get("/alerts/0000000000000000"), 404)
    assert "give a pair" in _one_line_error(tc.get("/path"), 400)


def test_parameters_are_bound_never_spliced(fault_db, fault):
    """A quote in a URL parameter is data, not SQL: no windows for that 'subnet', and the table is intact."""
    client, _ = fault_db
    tc, _ = fault
    before = client.command("SELECT count() FROM flow_windows")
    evil = "subnet-1a' OR 1=1 --"
    assert "no windows" in _one_line_error(tc.get("/path", params={"src": evil, "dst": "x"}), 404)
    assert tc.get("/alerts/x'; DROP TABLE flow_windows; --").status_code == 404
    assert client.command("SELECT count() FROM flow_windows") == before


def test_read_only(fault):
    tc, _ = fault
    assert tc.post("/", data={"query": "DROP TABLE flow_windows"}).status_code == 405
    assert tc.delete("/alerts/x").status_code == 405


def test_assets_are_local(fault):
    tc, _ = fault
    page = tc.get("/").text
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', page)
    assert external == [], f"the console must work offline: {external}"
    js = tc.get("/static/plotly/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000 and b"plotly" in js.content[:2000].lower()
    assert tc.get("/static/console.css").status_code == 200


def test_share_link_is_absolute_and_reproduces_the_numbers(fault):
    tc, _ = fault
    page = tc.get("/?range=24h").text
    link = re.search(r'id="share" href="\?([^"]+)"', page).group(1).replace("&amp;", "&")
    assert re.fullmatch(r"from=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ&to=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", link)
    total = re.search(r'id="total-bytes">([^<]+)<', page).group(1)
    assert re.search(r'id="total-bytes">([^<]+)<', tc.get("/?" + link).text).group(1) == total


def test_auto_refresh_only_while_windows_land(chdb_dsn):
    """Refresh is on when the newest window is recent (a worker lands data), off for old data."""
    import uuid

    from pipeline.clickhouse.client import connect
    from pipeline.clickhouse.migrations import migrate
    from pipeline.clickhouse.writer import WindowSink
    from tests.support.records import example_window

    db = f"console_{uuid.uuid4().hex[:10]}"
    c = connect(chdb_dsn, database=db)
    try:
        migrate(c)
        tc = TestClient(create_app(lambda: c))
        page = tc.get("/").text
        assert "no windows in this range yet" in page and 'http-equiv="refresh"' not in page
        now = int(time.time()) // 600 * 600
        WindowSink(c).write_windows([example_window(window_start=now - 86400, closed_at=time.time())])
        assert 'http-equiv="refresh"' not in tc.get("/").text  # a backfill of yesterday: not live
        WindowSink(c).write_windows([example_window(window_start=now - 600, closed_at=time.time())])
        assert 'http-equiv="refresh"' in tc.get("/").text
        assert 'http-equiv="refresh"' not in tc.get("/?refresh=off").text
        assert 'http-equiv="refresh"' not in tc.get(f"/?from={now - 7200}&to={now}").text  # a fixed range
    finally:
        c.command(f"DROP DATABASE IF EXISTS {db}", use_database=False)
        c.close()


def test_clickhouse_down_is_one_line():
    """No ClickHouse where the console looks: each page says so in one line (503), and the console keeps serving."""
    import socket

    from pipeline.clickhouse.client import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    tc = TestClient(create_app(lambda: connect(f"http://default:x@127.0.0.1:{port}"), where=f"127.0.0.1:{port}"))
    msg = _one_line_error(tc.get("/"), 503)
    assert "ClickHouse did not answer" in msg and f"127.0.0.1:{port}" in msg
    assert tc.get("/ping").status_code == 200
