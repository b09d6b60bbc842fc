"""The console in a real browser (Debian's headless Chromium through Playwright), on consoles filled by
scenario runs: every page loads without a console error, shows the scenario's numbers, and is
screenshotted (test-artifacts/console/*.png)."""

from __future__ import annotations

import re

import pytest

PAGES = [
    ("reference", "overview", "/"),
    ("reference", "insights", "/insights"),
    ("reference", "path-1a-1a", "/path?src=subnet-1a&dst=subnet-1a"),
    ("fault", "overview", "/"),
    ("fault", "insights-retrans", "/insights?metric=retransmissions&category=inter-az"),
    ("fault", "alerts", "/alerts"),
    ("fault", "monitors", "/monitors"),
    ("fault", "monitor-az1-to-az2", "/monitors/az1-to-az2"),
    ("fault", "alert", None),  # the first infrastructure alert's evidence page
    ("fault", "path", None),  # its path view
]


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def _open(page, url: str) -> None:
    resp = page.goto(url)
    assert resp.status == 200, f"{url}: HTTP {resp.status}"
    page.wait_for_selector("body[data-charts-ready=yes]", timeout=20_000)
    assert page.errors == [], f"{url}: console errors {page.errors}"


def _first_infrastructure_alert(page, base: str) -> str:
    _open(page, base + "/alerts")
    row = page.locator("table#alerts tr.cause-infrastructure").first
    return row.get_attribute("data-alert")


@pytest.mark.parametrize("console,name,url", PAGES, ids=[f"{c}-{n}" for c, n, _ in PAGES])
def test_page_loads_without_errors_and_is_screenshotted(consoles, page, artifacts, console, name, url):
    base = consoles[console]
    if url is None:
        alert = _first_infrastructure_alert(page, base)
        url = f"/alerts/{alert}" if name == "alert" else f"/path?alert={alert}"
    _open(page, base + url)
    assert page.locator("main").inner_text().strip()
    for chart in page.locator("div.chart").all():  # plotly drew every chart (an SVG inside it)
        assert chart.locator("svg.main-svg").count() >= 1
    shot = artifacts / f"{console}-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_reference_windows_are_20_and_10_mb(consoles, page):
    """The reference experiment: 1a→1a carries 20 MB per window (both ends report), 1c→1a 10 MB."""
    base = consoles["reference"]
    for src, dst, mb in (("subnet-1a", "subnet-1a", "20.0 MB"), ("subnet-1c", "subnet-1a", "10.0 MB"),
                         ("subnet-1a", "subnet-1d", "10.0 MB")):
        _open(page, f"{base}/path?src={src}&dst={dst}")
        cells = page.locator("table#pair-windows td.bytes").all_inner_texts()
        assert len(cells) == 12 and set(cells) == {mb}, (src, dst, cells)
        # the chart draws the same numbers (plotly keeps the data on the element)
        ys = page.evaluate("() => document.getElementById('pair-chart').data[0].y")
        assert [round(y, 1) for y in ys] == [float(mb.split()[0])] * 12
    _open(page, base + "/")
    assert page.locator("td.cell[data-src=az-1a][data-dst=az-1a]").get_attribute("data-status") == "healthy"
    assert page.locator("#open-alerts").inner_text() == "0"


def test_insights_rank_pairs_and_instances(consoles, page, fault_db):
    """Top pairs and top instances by retransmissions, inter-AZ: the fault's pairs and their instances lead."""
    _, res = fault_db
    base = consoles["fault"]
    _open(page, base + "/insights?metric=retransmissions&category=inter-az&n=5")
    pairs = [r.split("|") for r in page.locator("table#top-pairs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.pair)")]
    inter = [w for w in res.closed.values() if w.src_vpc == w.dst_vpc and w.src_az != w.dst_az]
    totals: dict = {}
    for w in inter:
        totals[(w.src_subnet, w.dst_subnet)] = totals.get((w.src_subnet, w.dst_subnet), 0) + w.retransmissions
    want = sorted(totals, key=lambda k: (-totals[k], k))[:5]
    assert [tuple(p) for p in pairs] == want
    assert all({a, b} == {"az1", "az2"} for a, b in (r.split(" → ") for r in page.locator(
        "table#top-pairs tbody td:nth-child(3)").all_inner_texts()))
    instances = page.locator("table#top-instances tbody tr")
    assert instances.count() == 5
    assert all(t in ("az1", "az2") for t in page.locator("table#top-instances tbody td:nth-child(4)").all_inner_texts())


def test_fault_alert_is_attributed_and_its_element_marked_on_the_path(consoles, page):
    base = consoles["fault"]
    _open(page, base + "/")
    assert page.locator("td.cell[data-src=az1][data-dst=az2]").get_attribute("data-status") == "degraded"
    assert page.locator("td.cell[data-src=az2][data-dst=az1]").get_attribute("data-status") == "degraded"
    assert page.locator("td.cell[data-src=az3][data-dst=az3]").get_attribute("data-status") == "healthy"
    alert = _first_infrastructure_alert(page, base)
    _open(page, f"{base}/alerts/{alert}")
    assert page.locator("#blamed").inner_text() == "az_pair az1|az2"
    crossing = int(page.locator("table#evidence tr", has_text="reporters crossing").locator("td").inner_text())
    assert crossing > 0
    _open(page, f"{base}/path?alert={alert}")
    nodes = page.locator("#path .node").all()
    marked = {(n.get_attribute("data-kind"), n.get_attribute("data-id")) for n in nodes
              if n.get_attribute("data-blamed") == "yes"}
    assert marked == {("az", "az1"), ("az", "az2")}
    assert all(n.get_attribute("data-blamed") == "no" for n in nodes if n.get_attribute("data-kind") == "subnet")


def test_monitor_series_with_its_health_bar(consoles, page, fault_db):
    """The monitor across az1→az2 shows its windows' data and a health bar that turns red in the fault's windows;
    the monitor in az3 stays green."""
    _, res = fault_db
    base = consoles["fault"]
    _open(page, base + "/monitors")
    assert page.locator("table#monitors td a").all_inner_texts() == ["az1-to-az2", "az3-anywhere"]
    nhi = {}
    for name in ("az1-to-az2", "az3-anywhere"):
        _open(page, f"{base}/monitors/{name}")
        data = page.evaluate("() => document.getElementById('monitor-chart').data.map(t => [t.name, t.y, t.customdata])")
        by_name = {n: (y, c) for n, y, c in data}
        assert len(by_name["data (MB)"][0]) == 12 and min(by_name["data (MB)"][0]) > 0
        nhi[name] = by_name["network health"][1]
    fault_windows = {(p["start"] // 600) * 600 for p in res.nhi_records}
    assert nhi["az1-to-az2"].count("degraded") >= len(fault_windows) >= 1
    assert set(nhi["az3-anywhere"]) == {"healthy"}
    _open(page, f"{base}/monitors/az1-to-az2")
    assert page.locator("table#monitor-nhi tbody tr").count() >= 1
    assert "az_pair:az1|az2" in page.locator("table#monitor-nhi").inner_text()


def test_range_picker_and_shared_link(consoles, page):
    """A preset changes the range; the share link carries absolute times and shows the same numbers."""
    base = consoles["fault"]
    _open(page, base + "/?range=1h")
    one_hour = page.locator("#total-bytes").inner_text()
    page.locator("form.range button[value='24h']").click()
    page.wait_for_selector("body[data-charts-ready=yes]")
    assert "range=24h" in page.url and page.locator("#total-bytes").inner_text() != one_hour
    link = page.locator("#share").get_attribute("href")
    assert re.search(r"from=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ&to=", link)
    total = page.locator("#total-bytes").inner_text()
    _open(page, base + "/" + link)
    assert page.locator("#total-bytes").inner_text() == total
