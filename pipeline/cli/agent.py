"""``flowmon agent``: this host's TCP connections, read from the kernel, reported every interval to Kafka."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import BrokerOpt, console, make_settings

__all__ = ["agent_command", "once_table"]


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def once_table(totals: dict[str, Any], locate: Any) -> Any:
    """A rich table of :meth:`HostAgent.snapshot`: one row per remote, biggest first."""
    from rich.table import Table
    t = Table(title="open TCP connections, per remote (counters since each opened)", title_justify="left")
    for col, just in (("remote", "left"), ("placement", "left"), ("flows", "right"), ("sent", "right"),
                      ("received", "right"), ("retrans", "right"), ("timeouts", "right"), ("rtt ms", "right"),
                      ("rttvar ms", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in sorted(totals.values(), key=lambda r: (-r.volume, r.ip)):
        place = locate(r.ip)
        rtt = sum(r.rtt_us) / len(r.rtt_us) / 1000 if r.rtt_us else None
        var = sum(r.rttvar_us) / len(r.rttvar_us) / 1000 if r.rttvar_us else None
        t.add_row(r.ip, place.subnet or "external", f"{r.flows:,}", _human(r.bytes_sent), _human(r.bytes_received),
                  f"{r.retrans:,}", f"{r.timeouts:,}", "-" if rtt is None else f"{rtt:.2f}",
                  "-" if var is None else f"{var:.2f}")
    return t


def agent_command(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Agent config YAML (see the README).")] = None,
    instance: Annotated[Optional[str], typer.Option(help="This host's instance id.")] = None,
    ip: Annotated[Optional[str], typer.Option(help="This host's address (default: the topology's).")] = None,
    subnet: Annotated[Optional[str], typer.Option(help="Subnet id (default: from the topology).")] = None,
    az: Annotated[Optional[str], typer.Option(help="AZ id (default: from the topology).")] = None,
    vpc: Annotated[Optional[str], typer.Option(help="VPC id (default: from the topology).")] = None,
    interval: Annotated[Optional[int], typer.Option("--interval", "-i", help="Report interval, seconds "
                                                    "(default 30).")] = None,
    state_dir: Annotated[Optional[Path], typer.Option(help="Spool and saved counters "
                                                      "(default /var/lib/flowmon-agent).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Remote CIDR not counted (repeatable), e.g. a "
                                                         "management network.")] = None,
    top_k: Annotated[Optional[int], typer.Option(help="Remotes reported one by one (default 100); the rest "
                                                 "per remote subnet.")] = None,
    topology: Annotated[Optional[Path], typer.Option(help="Topology file (default FLOWMON_TOPOLOGY).")] = None,
    include_loopback: Annotated[Optional[bool], typer.Option("--include-loopback", help="Count loopback "
                                                             "connections too.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Print what the open connections did so far, as a table, "
                                       "and exit (sends nothing).")] = False,
    broker: BrokerOpt = None,
    loglevel: Annotated[str, typer.Option(help="Log level (info: one line per interval).")] = "warning",
) -> None:
    """Report this host's TCP connections (kernel counters through netlink sock_diag) to the reports topic.

    Every interval it sends, per remote endpoint, the bytes, retransmissions, RTO timeouts and RTTs of the
    connections active in it, including connections that opened and closed in between. Reports wait in an
    on-disk spool while the broker is unreachable. Needs root (or CAP_NET_ADMIN).
    """
    from pipeline.agent.config import identity, load_agent_config
    from pipeline.agent.host import HostAgent
    from pipeline.agent.report import Place
    from pipeline.agent.scope import Scope
    from pipeline.agent.sockdiag import SockDiag
    from pipeline.agent.spool import Spool
    from pipeline.errors import ConfigError, InputError, NotPermitted
    from pipeline.ingest.topology import EXTERNAL, load_topology

    s = make_settings(broker=broker, topology=topology)
    cfg = load_agent_config(config, instance=instance, ip=ip, subnet=subnet, az=az, vpc=vpc, interval_s=interval,
                            state_dir=state_dir, exclude=tuple(exclude) if exclude else None, top_k=top_k,
                            include_loopback=include_loopback)
    topo = None
    if s.topology is not None:
        try:
            topo = load_topology(s.topology)
        except (OSError, ValueError) as e:
            raise InputError(str(e), hint="fix the topology file (FLOWMON_TOPOLOGY / --topology)") from None
    me = identity(cfg, topo)

    def locate(addr: str) -> Place:
        if topo is None:
            return Place(None, None, None)
        loc = topo.locate(addr)
        return Place(None, None, None) if loc.subnet == EXTERNAL else Place(*loc)

    try:
        kernel = SockDiag()
    except OSError as e:
        raise NotPermitted(f"cannot open a netlink sock_diag socket: {e.strerror or e}",
                           hint="run on Linux as root (or with CAP_NET_ADMIN)") from None
    scope = Scope(exclude=cfg.exclude, include_loopback=cfg.include_loopback, exclude_own=cfg.exclude_own)
    if once:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            core = HostAgent(me, kernel, Spool.open(tmp), scope, locate)
            totals = core.snapshot()
        typer.echo(f"{me.instance} at {me.ip} ({me.subnet}, {me.az}, {me.vpc}): {len(totals)} remotes, "
                   f"{sum(t.flows for t in totals.values())} connections")
        import sys

        from rich.console import Console
        Console(width=None if sys.stdout.isatty() else 140).print(once_table(totals, locate))
        kernel.close()
        return

    try:
        kernel.subscribe()
    except PermissionError:
        raise NotPermitted("the kernel refused the socket-destroy notifications (sock_diag multicast) to this user",
                           hint="run flowmon agent as root, or with the CAP_NET_ADMIN capability "
                                "(deploy/systemd/flowmon-agent.service shows how)") from None
    try:
        spool = Spool.open(cfg.state_dir, cfg.spool_max_bytes)
    except PermissionError as e:
        raise NotPermitted(f"cannot write the state directory {cfg.state_dir}: {(e.strerror or str(e)).lower()}",
                           hint="run flowmon agent as root (as deploy/systemd/flowmon-agent.service does), "
                                "or give a --state-dir this user may write") from None
    except OSError as e:
        raise ConfigError(f"state dir {cfg.state_dir}: {(e.strerror or str(e)).lower()}",
                          hint="give a writable --state-dir (or state_dir in the config)") from None
    if not isinstance(logging.getLevelName(loglevel.upper()), int):
        raise typer.BadParameter(f"{loglevel!r}: expected debug, info, warning, error or critical",
                                 param_hint="--loglevel")
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the sender says what matters, once per outage
    if spool.orphans:
        console.print(f"{spool.orphans} spooled interval(s) without saved counters were dropped (a crash between "
                      "two writes); their changes are counted again in the next report")
    core = HostAgent(me, kernel, spool, scope, locate, top_k=cfg.top_k, max_bytes=cfg.max_message_bytes)
    _run(s, core, cfg.interval_s)


def _run(s: Any, core: Any, interval_s: int) -> None:
    from pipeline.cli.options import BROKER_HINT
    from pipeline.config import parse_bootstrap
    from pipeline.errors import BrokerUnavailable
    from pipeline.runtime import kafka
    from pipeline.runtime.agent import run_agent
    from pipeline.runtime.topics import Topics

    if s.broker == "embedded":
        raise BrokerUnavailable("flowmon agent needs the broker's address", hint="give --broker host:port "
                                "(or FLOWMON_BROKER): the broker the pipeline workers read")
    import socket
    for host, _port in parse_bootstrap(s.broker):
        try:
            socket.getaddrinfo(host, None)
        except socket.gaierror:
            raise BrokerUnavailable(f"broker host {host!r} is unknown (--broker {s.broker})",
                                    hint=BROKER_HINT) from None
    conn = kafka.connection(s, s.broker)
    topic = Topics.from_settings(s).reports
    log = logging.getLogger("flowmon.agent")

    warned: set[str] = set()

    def on_interval(iv: Any) -> None:
        st = core.status()
        if st["timeouts_estimated"] and "rto" not in warned:
            warned.add("rto")
            log.warning("this kernel has no tcpi_total_rto (Linux < 6.7): timeouts are estimated from "
                        "tcpi_retransmits at each poll, a lower bound")
        log.info("interval %d (%ds): %d reports, %d samples, %d flows; %d connections tracked; spool %d intervals",
                 iv.start, iv.interval_s, len(iv.messages), iv.samples, iv.flows, iv.connections, st["spooled_files"])

    console.print(f"flowmon agent {core.me.instance} ({core.me.ip}, {core.me.subnet}): reporting every "
                  f"{interval_s} s to {topic} on {s.broker}; spool {core.spool.root}")
    asyncio.run(run_agent(core, conn, topic, interval_s, on_interval))
