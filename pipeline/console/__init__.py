"""The console: a read-only web UI over flowmon's ClickHouse (``flowmon console``).

``timerange`` and ``views`` are the core (requests and rows in, page models and chart
specifications out, no I/O); ``app`` is the FastAPI shell that runs the named queries
(``schemas/queries``, through ``pipeline.views.queries``) and renders the Jinja2 templates;
the charts are drawn in the browser by plotly.js, served from the plotly package itself.
"""
