"""``flowmon alerts``: follow the anomaly events, filter them, print them, forward them to a webhook.

Two sources: the anomaly topic (live, ``--follow``, or a consumer ``--group``), and the
history in ClickHouse (``--no-follow``: everything that landed, in time order, each
alert's attribution under it; it outlives the broker, e.g. an embedded one that stopped).

The pieces: :mod:`pipeline.alerts` (events, filters, render, dedup, webhook, stats) and the
Kafka follower :mod:`pipeline.runtime.follow`; this module is the command: its options, the
output (JSON lines, coloured lines on a terminal, plain lines otherwise), the exit status.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.markup import escape

from pipeline.alerts.events import METRICS, SCOPES, SEVERITIES
from pipeline.alerts.filters import parse_pair
from pipeline.alerts.render import format_attribution, format_event
from pipeline.alerts.stats import AlertStats
from pipeline.errors import first_line
from pipeline.alerts.webhook import Webhook
from pipeline.alerts.webhook import log as webhook_log
from pipeline.cli.options import BrokerOpt, console, make_settings, resolve_bootstrap

__all__ = ["alerts_command"]

Emit = Callable[[dict[str, Any]], None]


def alerts_command(
    broker: BrokerOpt = None,
    pair: Annotated[Optional[list[str]], typer.Option(
        "--pair", help="Only this subnet pair 'SRC->DST' ('*' = any subnet), or a subnet on either side. "
        "Repeatable.")] = None,
    severity: Annotated[Optional[str], typer.Option(
        help="Minimum severity: warning (everything) or critical. Compared with each event's own severity "
        "(a resolved event carries its alert's).")] = None,
    scope: Annotated[Optional[str], typer.Option(help="Only 'pair' alerts or only 'instance' alerts.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(
        help="Only this metric: retrans_rate, timeout_rate, rtt_mean, rtt_p90. Repeatable.")] = None,
    json_lines: Annotated[bool, typer.Option(
        "--json", help="Print each event as a JSON line (the wire format).")] = False,
    attribution: Annotated[bool, typer.Option(
        "--attribution/--no-attribution", help="Under each opened alert, its attribution (infrastructure / "
        "workload / undetermined, the blamed element and the evidence; flow-attributions-v1). JSON: the "
        "attribution record as its own line (it has 'cause', not 'event').")] = True,
    follow: Annotated[bool, typer.Option(
        "--follow/--no-follow", help="Keep waiting for new events; --no-follow exits once caught up.")] = True,
    from_beginning: Annotated[Optional[bool], typer.Option(
        "--from-beginning/--from-latest",
        help="Where to start. Default: from the beginning with --no-follow, only new events when following. "
        "With --group, only where the group has no committed offset.")] = None,
    group: Annotated[Optional[str], typer.Option(
        help="Consumer group: resume where it left off (offsets are committed). "
        "Default: none, nothing committed.")] = None,
    webhook: Annotated[Optional[str], typer.Option(
        help="Also POST each shown event as JSON to this http(s) URL.")] = None,
    webhook_retries: Annotated[int, typer.Option(
        min=0, help="Retries per event (5xx, 429, timeouts, no connection).")] = 5,
    webhook_backoff: Annotated[float, typer.Option(
        min=0.0, help="First retry delay, seconds; doubles each retry (at most 30 s).")] = 0.5,
    webhook_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per webhook attempt.")] = 10.0,
    source: Annotated[str, typer.Option(
        help="Where events come from: 'kafka' (the anomaly topic), 'clickhouse' (the history that landed), or "
        "'auto': ClickHouse with --no-follow (unless --group or --from-latest is given), else Kafka.")] = "auto",
) -> None:
    """Show anomaly events (opened / updated / resolved) as they come, filtered; optionally POST them to a webhook.

    Repeats of an event (at-least-once delivery) are dropped, malformed messages skipped with a warning.
    Exit status 1 if a webhook delivery failed.
    """
    from pipeline.runtime import kafka
    from pipeline.runtime.kafka import group_timings

    pairs = pair or []
    _check_filters(pairs, severity, scope, metric)
    if source not in ("auto", "kafka", "clickhouse"):
        raise typer.BadParameter(f"{source}: expected one of auto, kafka, clickhouse", param_hint="--source")
    if source == "auto":
        source = "clickhouse" if not follow and group is None and from_beginning is not False else "kafka"
    if source == "clickhouse" and (follow or group is not None):
        raise typer.BadParameter("the ClickHouse history is read once: use it with --no-follow and no --group",
                                 param_hint="--source")
    hook = _webhook(webhook, webhook_retries, webhook_backoff, webhook_timeout)
    _log_to_console()

    s = make_settings(broker=broker)
    if source == "clickhouse":
        emit, emit_attr = _emitters(json_lines)
        stats = AlertStats()
        flt = {"pairs": pairs, "severity": severity, "scope": scope, "metric": metric}
        code = _history(s, emit, emit_attr, hook, stats, flt, attribution)
        _summary(stats, hook, code)
        return
    conn = kafka.connection(s, resolve_bootstrap(s))
    kafka.quiet_bootstrap_log()  # a failure is said once (_run)
    emit, emit_attr = _emitters(json_lines)
    stats = AlertStats()
    follow_opts = dict(from_beginning=from_beginning if from_beginning is not None else not follow, follow=follow,
                       group=group, pairs=pairs, severity=severity, scope=scope, metric=metric, webhook=hook,
                       stats=stats, emit_attribution=emit_attr, **group_timings(s))
    code = _run(_follow(s, conn, emit, attribution, hook, follow_opts), conn)
    _summary(stats, hook, code)


def _summary(stats: AlertStats, hook: Webhook | None, code: int) -> None:
    """The closing line (unless the source failed), and the exit status (1 if a webhook delivery failed)."""
    if code != 2:
        summary = str(stats)
        if hook is not None:
            summary += f"; webhook: {hook.delivered} delivered, {hook.failed} failed, {hook.retried} retries"
            if hook.failed and code == 0:
                code = 1
        console.print(summary, highlight=False, soft_wrap=True)
    if code:
        raise typer.Exit(code)


def _history(s: Any, emit: Emit, emit_attr: Emit, hook: Webhook | None, stats: AlertStats,
             flt: dict[str, Any], attribution: bool) -> int:
    """Show the alert history that landed in ClickHouse (filtered; attributions under their shown alerts)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from pipeline.alerts.filters import matches
    from pipeline.alerts.history import history
    from pipeline.cli.query import _client

    try:
        records = list(history(_client(s), attribution=attribution))
    except (ClickHouseError, OSError) as exc:
        console.print(f"[red]ClickHouse {escape(s.clickhouse_dsn)}:[/] {escape(first_line(exc))}",
                      highlight=False, soft_wrap=True)
        return 2

    async def show() -> None:
        opened: set[str] = set()
        if hook is not None:
            await hook.start()
        try:
            for rec in records:
                if "event" not in rec:  # an attribution: under its alert, if that was shown
                    if rec["alert_id"] in opened:
                        emit_attr(rec)
                        if hook is not None:
                            await hook.send(rec)
                    continue
                if not matches(rec, **flt):
                    stats.filtered += 1
                    continue
                stats.shown += 1
                emit(rec)
                if hook is not None:
                    await hook.send(rec)
                if rec["event"] == "opened":
                    opened.add(rec["alert_id"])
        finally:
            if hook is not None:
                await hook.close()

    try:
        asyncio.run(show())
    except KeyboardInterrupt:
        return 130
    return 0


def _check_filters(pairs: list[str], severity: str | None, scope: str | None, metric: list[str] | None) -> None:
    """Refuse a bad filter option (exit 2, naming the option) before connecting."""
    try:
        for p in pairs:
            parse_pair(p)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pair") from None
    for hint, values, allowed in (("--severity", [severity] if severity else [], SEVERITIES),
                                  ("--scope", [scope] if scope else [], SCOPES), ("--metric", metric or [], METRICS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            raise typer.BadParameter(f"{', '.join(bad)}: expected one of {', '.join(allowed)}", param_hint=hint)


def _webhook(url: str | None, retries: int, backoff_s: float, timeout_s: float) -> Webhook | None:
    if not url:
        return None
    try:
        return Webhook(url, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--webhook") from None


class _ConsoleHandler(logging.Handler):
    """Log records as 'level: message' lines on a rich console (the command's stderr)."""

    def __init__(self, console: Any) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        colour = "red" if record.levelno >= logging.ERROR else "yellow"
        self.console.print(f"[{colour}]{record.levelname.lower()}:[/] {escape(record.getMessage())}",
                           highlight=False, soft_wrap=True)


def _log_to_console() -> None:
    """Webhook retries and failures as lines on the console (once per process)."""
    if not any(isinstance(h, _ConsoleHandler) for h in webhook_log.handlers):
        webhook_log.addHandler(_ConsoleHandler(console))


def _emitters(json_lines: bool) -> tuple[Emit, Emit]:
    """How events and attributions are printed on stdout: JSON lines (both, the wire format), else
    readable lines, coloured by severity on a terminal, an attribution indented under its alert."""
    out = sys.stdout
    if json_lines:
        def emit(event: dict[str, Any]) -> None:
            out.write(orjson.dumps(event).decode() + "\n")
            out.flush()
        return emit, emit
    if out.isatty():
        from rich.console import Console
        from rich.text import Text
        tty = Console(highlight=False)
        styles = {"critical": "bold red", "warning": "yellow"}

        def emit(event: dict[str, Any]) -> None:
            style = "green" if event["event"] == "resolved" else styles.get(event["severity"], "")
            tty.print(Text(format_event(event), style=style), soft_wrap=True)
    else:
        def emit(event: dict[str, Any]) -> None:
            out.write(format_event(event) + "\n")
            out.flush()

    def emit_attr(rec: dict[str, Any]) -> None:
        out.write("    " + format_attribution(rec) + "\n")
        out.flush()
    return emit, emit_attr


async def _follow(s: Any, conn: Any, emit: Emit, attribution: bool, hook: Webhook | None,
                  opts: dict[str, Any]) -> None:
    """Create the topics it reads if missing, then follow the anomalies (and attributions) until done."""
    from pipeline.runtime.follow import run_alerts
    from pipeline.runtime.topics import Topics, ensure_topics

    topics = Topics.from_settings(s)
    await ensure_topics(conn, topics, names=[topics.anomalies, topics.attributions])
    if hook is not None:
        await hook.start()
    try:
        await run_alerts(conn, topics.anomalies, emit, **opts,
                         attributions_topic=topics.attributions if attribution else None,
                         warn=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}", highlight=False,
                                                      soft_wrap=True))
    finally:
        if hook is not None:
            await hook.close()


def _run(follow: Any, conn: Any) -> int:
    """Run the follower; the exit status: 0, 130 on Ctrl-C; a broker failure is a ``BrokerUnavailable``."""
    from aiokafka.errors import KafkaError

    from pipeline.cli.options import broker_hint
    from pipeline.errors import BrokerUnavailable
    try:
        asyncio.run(follow)
    except KeyboardInterrupt:
        return 130
    except (KafkaError, OSError) as exc:
        from pipeline.runtime.kafka import explain
        why = asyncio.run(explain(conn, exc))
        raise BrokerUnavailable(f"Kafka broker {conn.bootstrap}: {why}", hint=broker_hint(why)) from exc
    return 0
