"""Shell: the console's web app (FastAPI + Jinja2), read-only over ClickHouse.  *shell*

Every number on a page comes from a named query (``schemas/queries``) run through
clickhouse_connect with bound parameters only; the request's text never becomes SQL.
Pages: ``/`` overview (AZ matrix, fleet series, categories, latest alerts), ``/insights``
(top contributors by category and metric), ``/monitors`` and ``/monitors/{name}`` (series
with the NHI bar), ``/alerts`` and ``/alerts/{id}`` (verdict and evidence), ``/path`` (a
pair's path with the blamed element marked). ``/static/plotly.min.js`` is served from the
installed plotly package, so the console needs no internet.

``create_app(source)`` takes a callable returning a clickhouse_connect client (the CLI
gives the worker's SQL endpoint, or chdb, or a server); tests pass a chdb client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from pipeline.console import views
from pipeline.console.timerange import PRESETS, RangeError, TimeRange, parse_range
from pipeline.views import queries
from pipeline.errors import first_line

__all__ = ["create_app", "plotly_js_dir", "LIVE_WITHIN_S"]

log = logging.getLogger("flowmon.console")

HERE = Path(__file__).resolve().parent
#: Auto-refresh is on while the newest window closed less than this long ago (a worker is landing data).
LIVE_WITHIN_S = 20 * 60
REFRESH_S = 30


def plotly_js_dir() -> Path:
    """The directory of plotly.min.js inside the installed plotly package."""
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a declared dependency
        raise RuntimeError("the plotly package is missing: pip install plotly")
    return Path(list(spec.submodule_search_locations)[0]) / "package_data"


class PageError(Exception):
    """Something the user asked that cannot be shown: one line, with an HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def create_app(source: Callable[[], Any], *, title: str = "flowmon", where: str = "") -> FastAPI:
    """The console app; ``source()`` gives a clickhouse_connect client (called per request; may cache)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters["bytes"] = views.human_bytes
    env.filters["ms"] = views.ms
    env.filters["utc"] = lambda t: views.as_utc(t).strftime("%Y-%m-%d %H:%M") if t else "–"
    env.filters["num"] = lambda n: f"{int(n or 0):,}"
    app.mount("/static/plotly", StaticFiles(directory=str(plotly_js_dir())), name="plotly")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    lock = threading.Lock()  # a clickhouse_connect client is not for concurrent use

    def q(name: str, **values: Any) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        with lock:
            try:
                client = source()
                rows = queries.run(client, name, **values)
            except queries.QueryError:
                raise
            except Exception as e:  # ClickHouse unreachable or refusing: one line, not a traceback
                getattr(source, "reset", lambda: None)()
                raise PageError(f"ClickHouse did not answer query {name!r}: {first_line(e)}"
                                f"{' (' + where + ')' if where else ''}", 503) from None
        log.debug("%s: %d rows in %.1f ms", name, len(rows), 1000 * (time.perf_counter() - t0))
        return rows

    def has_query(name: str) -> bool:
        return name in queries.load()

    def time_range(request: Request) -> tuple[TimeRange, bool]:
        p = request.query_params
        latest = q("latest_window")[0]
        end = datetime.fromtimestamp(latest["latest_end"], tz=timezone.utc) if latest["has_data"] else None
        r = parse_range(p.get("range"), p.get("from"), p.get("to"), latest=end)
        now = time.time()  # live: windows are closing now, for times near now (not a backfill of old data)
        live = bool(latest["has_data"]) and now - latest["latest_closed"] < LIVE_WITHIN_S \
            and now - latest["latest_end"] < LIVE_WITHIN_S
        return r, live

    def render(request: Request, template: str, page: str, r: TimeRange | None, live: bool = False,
               **ctx: Any) -> HTMLResponse:
        p = request.query_params
        refresh = live and r is not None and r.relative is not None and p.get("refresh") != "off"
        keep = {k: v for k, v in p.items() if k not in ("range", "from", "to", "refresh")}
        return templates.TemplateResponse(request, template, {
            "page": page, "r": r, "presets": PRESETS, "refresh_s": REFRESH_S if refresh else 0, "live": live,
            "keep": keep, "title": title, "has_monitors": has_query("monitors"), **ctx})

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> Response:
        return templates.TemplateResponse(request, "error.html", {"page": "", "r": None, "message": str(exc),
                                                                  "presets": PRESETS, "refresh_s": 0, "keep": {},
                                                                  "title": title, "has_monitors": False},
                                          status_code=exc.status)

    @app.exception_handler(RangeError)
    async def range_error(request: Request, exc: RangeError) -> Response:
        return await page_error(request, PageError(str(exc), 400))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response((HERE / "static" / "favicon.svg").read_bytes(), media_type="image/svg+xml")

    @app.get("/ping", response_class=PlainTextResponse)
    def ping() -> str:
        return "Ok."

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        r, live = time_range(request)
        matrix = views.az_matrix(q("az_matrix", **r.params()))
        cats = q("traffic_by_category", **r.params())
        series = q("fleet_series", **r.params())
        alerts = q("alerts", **r.params())
        totals = {k: sum(c[k] for c in cats) for k in ("bytes", "retransmissions", "timeouts")}
        open_alerts = [a for a in alerts if a["state"] != "resolved"]
        return render(request, "overview.html", "overview", r, live, matrix=matrix, cats=cats, totals=totals,
                      alerts=alerts[:8], n_alerts=len(alerts), n_open=len(open_alerts),
                      chart=views.series_figure(series) if series else None)

    @app.get("/insights", response_class=HTMLResponse)
    def insights(request: Request, category: str = "all", metric: str = "bytes", n: int = 10) -> HTMLResponse:
        if category not in views.CATEGORIES:
            raise PageError(f"category {category!r} is not one of {', '.join(views.CATEGORIES)}")
        if metric not in views.METRICS:
            raise PageError(f"metric {metric!r} is not one of {', '.join(views.METRICS)}")
        if not 1 <= n <= 500:
            raise PageError("n must be between 1 and 500")
        r, live = time_range(request)
        args = dict(r.params(), category=category, metric=metric, n=n)
        pairs = q("top_pairs", **args)
        instances = q("top_instances", **args) if has_query("top_instances") else None
        cats = q("traffic_by_category", **r.params())

        def value(row: dict[str, Any]) -> float:
            return row["rtt_mean_us"] / 1000 if metric == "rtt" else row[metric] / (1e6 if metric == "bytes" else 1)

        unit = {"bytes": "MB", "rtt": "ms mean RTT"}.get(metric, metric)
        chart = views.bars_figure([f"{p['src_subnet']} → {p['dst_subnet']}" for p in pairs],
                                  [value(p) for p in pairs], unit) if pairs else None
        return render(request, "insights.html", "insights", r, live, pairs=pairs, instances=instances, cats=cats,
                      category=category, metric=metric, n=n, categories=views.CATEGORIES, metrics=views.METRICS,
                      chart=chart)

    @app.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request) -> HTMLResponse:
        r, live = time_range(request)
        return render(request, "alerts.html", "alerts", r, live, alerts=q("alerts", **r.params()))

    @app.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert(request: Request, alert_id: str) -> HTMLResponse:
        r, live = time_range(request)
        events = q("alert_events", alert_id=alert_id)
        if not events:
            raise PageError(f"no alert {alert_id!r} in ClickHouse (see /alerts for the ones there are)", 404)
        evidence = q("alert_evidence", alert_id=alert_id)
        return render(request, "alert.html", "alerts", r, live, alert_id=alert_id, events=events,
                      ev=evidence[0] if evidence else None)

    @app.get("/path", response_class=HTMLResponse)
    def path(request: Request, src: str = "", dst: str = "", alert: str = "") -> HTMLResponse:
        r, live = time_range(request)
        if alert and not (src and dst):
            ev = q("alert_events", alert_id=alert)
            if not ev:
                raise PageError(f"no alert {alert!r} in ClickHouse", 404)
            src, dst = ev[0]["src_subnet"], ev[0]["dst_subnet"]
        if not (src and dst):
            raise PageError("give a pair: /path?src=SUBNET&dst=SUBNET (or ?alert=ALERT_ID)")
        args = dict(r.params(), src=src, dst=dst)
        info = q("pair_path", **args)
        if not info:
            raise PageError(f"no windows for {src} → {dst} in {r.label}; widen the range", 404)
        pair_alerts = q("pair_alerts", **args)
        chosen = [a for a in pair_alerts if a["alert_id"] == alert] if alert else pair_alerts
        nodes = views.path_nodes(info[0], [a for a in chosen if a["cause"] in ("infrastructure", "workload")])
        series = q("pair_series", **args)
        return render(request, "path.html", "alerts", r, live, pair=info[0], nodes=nodes, pair_alerts=pair_alerts,
                      alert=alert, series=series, chart=views.series_figure(series) if series else None)

    @app.get("/monitors", response_class=HTMLResponse)
    def monitors(request: Request) -> HTMLResponse:
        r, live = time_range(request)
        if not has_query("monitors"):
            raise PageError("this flowmon has no monitors", 404)
        return render(request, "monitors.html", "monitors", r, live, monitors=q("monitors"))

    @app.get("/monitors/{name}", response_class=HTMLResponse)
    def monitor(request: Request, name: str) -> HTMLResponse:
        r, live = time_range(request)
        if not has_query("monitors"):
            raise PageError("this flowmon has no monitors", 404)
        defs = [m for m in q("monitors") if m.get("name") == name]
        if not defs:
            raise PageError(f"no monitor {name!r} (see /monitors; 'flowmon monitor create' makes one)", 404)
        args = dict(r.params(), monitor=name)
        series = q("monitor_series", **args)
        periods = q("monitor_nhi", **args)
        chart = views.series_figure(series, nhi=[s["nhi"] for s in series]) if series else None
        return render(request, "monitor.html", "monitors", r, live, monitor=defs[0], series=series,
                      periods=periods, chart=chart)

    return app
