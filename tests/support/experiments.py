"""The reference's experiments on real TCP: hosts in network namespaces run ``flowmon agent`` against a
pipeline worker on the embedded broker, and what lands in ClickHouse is compared with what iperf3, curl
and ping measured on the wire.

The lab (``tests.support.netns``): subnets 1a, 1c, 1d in three AZs joined by a router; a server
``subnet-1a/0``, clients ``subnet-1a/1``, ``subnet-1c/0..2`` and ``subnet-1d/0``. Agents report every 2 s;
windows are 20 s, detection intervals 2 s. One campaign (~8 minutes) runs the phases
one after the other, each starting on a window boundary so that its windows hold its traffic only:

A. HTTP: every client fetches a 10 MB file three times.
B. Burst: iperf3 from subnet-1c/0 to the server, 20 s.
C. Steady background traffic (every client to the server, to subnet-1a/1, and 1c to subnet-1d/0), so
   the detectors learn normal (warm-up) and neighbours can exonerate or corroborate.
D. 5 % loss on subnet-1c/0's link only (router side, nftables), iperf3 from it to the server.
E. 5 % loss on the router's 1c<->1a path, every 1c client sending (iperf3 to two 1a hosts + background).
F. tbf (20 Mbit/s, 200 ms queue) on the inter-AZ paths, loaded; ping measures the delay.
G. The broker unreachable from every agent for 60 s (TCP reset, as a stopped broker) while clients fetch
   10 MB files; then reachable again; the agents drain their spools.

The campaign runs in a process of its own (``python -m tests.support.experiments WORKDIR``), which
reads back what every phase landed in ClickHouse (``Campaign``, written as ``campaign.json``) and tears
the lab down before it exits. ``tests/integration/conftest.py`` starts it as soon as the session has
collected ``test_experiments.py`` and runs those tests last, so its eight minutes of wall clock (mostly
waiting on real traffic) pass beside the rest of the suite instead of after it; a separate process,
because tests in the session patch the environment (``PATH``, ``FLOWMON_*``) that the campaign's own
commands must not see. The results table is written to ``experiments.md`` in the work directory (and
printed by the tests). If namespaces cannot be created the tests fail with the reason; they never skip.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.runtime import kafka
from pipeline.runtime.brokers import EmbeddedTansu
from pipeline.wire.events import HealthBatch
from tests.support.harness import Deployment
from tests.support.netns import Lab, LabError

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 20
AGENT_INTERVAL_S = 2
SERVER, A1, D0 = "subnet-1a/0", "subnet-1a/1", "subnet-1d/0"
C = ["subnet-1c/0", "subnet-1c/1", "subnet-1c/2"]
CLIENTS = [A1, *C, D0]
SINK_PORT = 7000
BACKGROUND_RATE = 500_000  # bytes/s per stream
OUTAGE_S = 60
WARMUP_MORE_S = 150  # after the warm-up's 80 s, at most this long for the 1c clients' keys to have learned
MB10 = 10 * 1024 * 1024


@dataclass
class Phase:
    name: str
    start: int = 0
    end: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Campaign:
    """What the campaign measured, read back from ClickHouse per phase before the lab went away."""

    phases: dict[str, Phase] = field(default_factory=dict)
    by_phase: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> windows, attributions, nhi
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    workdir: str = ""

    def windows(self, phase: str) -> dict[tuple[str, str], dict[str, float]]:
        """Per (src subnet, dst subnet): the phase's windows summed (RTT: count-weighted mean)."""
        return {(s, d): v for s, d, v in self.by_phase[phase]["windows"]}

    def instances(self, phase: str) -> dict[tuple[str, str], dict[str, float]]:
        """Per (instance, dst subnet): what that host reported in the phase, summed (``instance_windows``)."""
        return {(i, d): v for i, d, v in self.by_phase[phase]["instances"]}

    def attributions(self, phase: str) -> list[dict[str, Any]]:
        return self.by_phase[phase]["attributions"]

    def nhi(self, phase: str) -> list[tuple[str, str, str]]:
        """Degraded periods that overlap the phase: (scope_kind, scope, element)."""
        return [tuple(n) for n in self.by_phase[phase]["nhi"]]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """Its JSON form (``campaign.json``)."""
        return {"phases": {k: asdict(p) for k, p in self.phases.items()}, "by_phase": self.by_phase,
                "deadletters": self.deadletters, "workdir": self.workdir}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Campaign:
        return cls({k: Phase(**p) for k, p in d["phases"].items()}, d["by_phase"], d["deadletters"], d["workdir"])


def _read_back(d: Deployment, p: Phase) -> dict[str, Any]:
    """The phase's windows (summed per pair), attributions and overlapping NHI periods, from ClickHouse."""
    rows = d.client.query(
        "SELECT src_subnet, dst_subnet, sum(bytes_sent), sum(bytes_received), sum(retransmissions), "
        "sum(timeouts), sum(rtt_sum_us), sum(rtt_count), max(rtt_p50_us) FROM flow_windows FINAL "
        "WHERE window_start >= toDateTime({a:UInt32}) AND window_start < toDateTime({b:UInt32}) "
        "GROUP BY src_subnet, dst_subnet", parameters={"a": p.start, "b": p.end}).result_rows
    windows = [(r[0], r[1], {"sent": r[2], "received": r[3], "retrans": r[4], "timeouts": r[5],
                             "rtt_ms": (r[6] / r[7] / 1000) if r[7] else None, "p50_ms": r[8] / 1000})
               for r in rows]
    q = d.client.query(
        "SELECT scope, instance, src_subnet, dst_subnet, metric, family, cause, element_kind, element "
        "FROM flow_attributions FINAL WHERE at >= toDateTime({a:UInt32}) AND at < toDateTime({b:UInt32}) "
        "ORDER BY at", parameters={"a": p.start, "b": p.end})
    attributions = [dict(zip(q.column_names, r)) for r in q.result_rows]
    inst = d.client.query(
        "SELECT instance, dst_subnet, sum(bytes_sent), sum(retransmissions), sum(timeouts) FROM instance_windows FINAL "
        "WHERE window_start >= toDateTime({a:UInt32}) AND window_start < toDateTime({b:UInt32}) "
        "GROUP BY instance, dst_subnet", parameters={"a": p.start, "b": p.end}).result_rows
    instances = [(r[0], r[1], {"sent": r[2], "retrans": r[3], "timeouts": r[4]}) for r in inst]
    nhi = d.client.query(
        "SELECT scope_kind, scope, element FROM nhi FINAL WHERE start < toDateTime({b:UInt32}) AND "
        "(end IS NULL OR end > toDateTime({a:UInt32}))", parameters={"a": p.start, "b": p.end}).result_rows
    return {"windows": windows, "instances": instances, "attributions": attributions, "nhi": [list(n) for n in nhi]}


def _next_boundary(margin: float = 0.3) -> int:
    """Sleep until just after the next window boundary; return it."""
    now = time.time()
    b = (int(now) // WINDOW_S + 1) * WINDOW_S
    time.sleep(b - now + margin)
    return b


def _finish(p: Phase, quiet_s: float = 3.0) -> None:
    """End a phase: let its last reports go out, then wait for the next window boundary."""
    time.sleep(quiet_s)
    p.end = _next_boundary()


def _iperf_sum(result: dict[str, Any]) -> tuple[int, int]:
    s = result["end"]["sum_sent"]
    return int(s["bytes"]), int(s.get("retransmits", 0))


class Background:
    """Steady streams (tests.support.flowgen) into sinks on the server, subnet-1a/1 and subnet-1d/0."""

    def __init__(self, lab: Lab, env: dict[str, str]) -> None:
        self.lab, self.env = lab, env
        self.sources: dict[str, subprocess.Popen] = {}
        for host in (SERVER, A1, D0):
            p = lab.popen(host, [sys.executable, "-m", "tests.support.flowgen", "sink", lab.ip(host), SINK_PORT],
                          env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lab.wait_listening(host, SINK_PORT, proc=p)

    def dests(self, host: str) -> list[str]:
        if host in C:
            targets = [SERVER, A1, D0]
        elif host == D0:
            targets = [SERVER, A1]
        else:
            targets = [SERVER]
        return [f"{self.lab.ip(t)}:{SINK_PORT}" for t in targets]

    def start(self, host: str) -> None:
        self.sources[host] = self.lab.popen(
            host, [sys.executable, "-m", "tests.support.flowgen", "source", BACKGROUND_RATE, *self.dests(host)],
            env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, host: str) -> None:
        p = self.sources.pop(host, None)
        if p is not None:
            p.terminate()
            p.wait(10)


def _await_learned(deploy: Deployment, keys: set[tuple[str, str]], most_s: float) -> dict[str, bool]:
    """Wait, at most ``most_s``, until every instance key ``(reporter, dst subnet)`` in ``keys`` has scored
    retransmissions (its health's ``retrans`` level is not None: it has learned its warm-up and the interval
    had the evidence), reading the pipeline's health topic from its start; say which keys got there."""
    ready = dict.fromkeys(keys, False)

    async def go() -> None:
        c = kafka.consumer(deploy.conn, deploy.topics.health, auto_offset_reset="earliest")
        await c.start()
        try:
            end = time.time() + most_s
            while not all(ready.values()) and time.time() < end:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        for h in HealthBatch.decode(m.value).health:
                            if h.reporter is not None and h.retrans is not None and (h.reporter, h.dst[0]) in ready:
                                ready[(h.reporter, h.dst[0])] = True
        finally:
            await c.stop()

    asyncio.run(go())
    return {f"{i}>{d}": ok for (i, d), ok in sorted(ready.items())}


def _broker_block(lab: Lab, port: int, on: bool) -> None:
    """Reset every TCP connection from the hosts' management network to the broker (as a stopped broker would)."""
    table = f"fmexp{lab.tag}"
    if on:
        rules = (f"add table inet {table}\n"
                 f"add chain inet {table} input {{ type filter hook input priority -10; }}\n"
                 f"add rule inet {table} input ip saddr {lab.mgmt_net} ip saddr != {lab.mgmt_ip} tcp dport {port} "
                 "reject with tcp reset\n")  # the hosts, not the worker (root namespace, from the bridge address)
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        # established connections too: the agents' producer connections break now, not at their next request
        subprocess.run(["ss", "-K", "dst", str(lab.mgmt_net), "and", "not", "dst", lab.mgmt_ip, "and", "sport", "=",
                        f":{port}"], capture_output=True)
    else:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False, capture_output=True)


def run(work: Path) -> Campaign:
    """Build the lab, run every phase, read the results back, tear everything down."""
    lab = Lab(work / "lab").start()  # LabError: namespaces cannot be created (the tests fail with it)
    broker = EmbeddedTansu(work / "tansu", host=lab.mgmt_ip)
    agents: list[subprocess.Popen] = []
    d: Deployment | None = None
    try:
        broker.start()
        topo = lab.topology_yaml(work / "topology.yaml")
        d = Deployment(broker.bootstrap, work / "deploy", topology=topo, partitions=2, window_s=WINDOW_S,
                       FLOWMON_INTERVAL_S=str(AGENT_INTERVAL_S), FLOWMON_INTERVAL_LATENESS_S="8",
                       FLOWMON_ALLOWED_LATENESS_S="75", FLOWMON_SOURCE_IDLE_LAG_S="75")
        d.start()
        camp = Campaign(workdir=str(work))
        env = {**{k: v for k, v in d.env.items() if k != "FLOWMON_ROLES"}, "PYTHONPATH": str(REPO)}
        for host in [SERVER, *CLIENTS]:
            log = open(work / f"agent-{lab.short(host)}.log", "wb")
            agents.append(lab.popen(host, [sys.executable, "-m", "pipeline.cli", "agent", "--instance", host,
                                           "--interval", AGENT_INTERVAL_S, "--exclude", str(lab.mgmt_net),
                                           "--state-dir", str(work / f"agent-{lab.short(host)}"), "--loglevel", "info"],
                                    env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        d.client  # the sink is up
        _run(camp, lab, d, env, broker)
        # every window of the campaign lands once the watermark (or the idle clock) passes it
        last = max(p.end for p in camp.phases.values())
        deadline = time.time() + 240
        while time.time() < deadline:
            d.check_alive()
            got = d.client.command("SELECT count() FROM flow_windows FINAL WHERE window_start >= "
                                   "toDateTime({t:UInt32})", parameters={"t": last - WINDOW_S})
            if got:
                break
            time.sleep(2)
        time.sleep(5)  # the sink's last flush
        d.check_alive()
        camp.by_phase = {name: _read_back(d, p) for name, p in camp.phases.items()}
        camp.deadletters = d.deadletters()
        return camp
    finally:
        for p in agents:
            if p.poll() is None:
                p.terminate()
        for p in agents:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if d is not None:
            d.close()
        broker.stop()
        lab.close()

def _run(camp: Campaign, lab: Lab, deploy: Deployment, env: dict[str, str], broker: EmbeddedTansu) -> None:
    lab.http_server(SERVER, MB10)
    time.sleep(2 * AGENT_INTERVAL_S)  # the agents take their base

    # A. HTTP --------------------------------------------------------------------------------
    a = camp.phases["http"] = Phase("http", start=_next_boundary())
    with ThreadPoolExecutor(len(CLIENTS)) as ex:
        got = dict(zip(CLIENTS, ex.map(lambda c: lab.fetch(c, SERVER, times=3), CLIENTS)))
    a.figures["curl"] = got
    _finish(a)

    # B. burst -------------------------------------------------------------------------------
    b = camp.phases["burst"] = Phase("burst", start=a.end)
    b.figures["iperf3"] = _iperf_sum(lab.iperf3(C[0], SERVER, seconds=20, bitrate="200M"))
    _finish(b)

    # C. background, the detectors learn normal --------------------------------------------------
    bg = Background(lab, env)
    for host in CLIENTS:
        bg.start(host)
    c = camp.phases["warmup"] = Phase("warmup", start=b.end)
    time.sleep(80)  # 40 intervals: the detectors need 20 learned ones per key
    # A loaded machine delays some reports past detection (and a slow one learns fewer intervals in 80 s):
    # the loss phases start only once the 1c clients' keys towards 1a can flag retransmissions, as the
    # worker's own health topic says (CI once ran the loss on a key still learning: only the pair alerted).
    c.figures["learned"] = _await_learned(deploy, {(h, "subnet-1a") for h in C}, WARMUP_MORE_S)
    c.figures["warmup_s"] = round(time.time() - c.start, 1)
    _finish(c, quiet_s=0)

    # D. loss on one client's link: workload ------------------------------------------------
    bg.stop(C[0])
    d = camp.phases["host_loss"] = Phase("host_loss", start=_next_boundary())
    lab.host_loss(C[0], 5)
    before = lab.tcp_retransmissions(C[0])
    d.figures["iperf3"] = _iperf_sum(lab.iperf3(C[0], SERVER, seconds=14, bitrate="200M"))
    lab.clear_loss()
    _finish(d)
    # every retransmission of the phase in C[0]'s namespace: iperf3's data and control connections,
    # also after iperf3 read its own figure (it stops writing, the socket still drains through the loss)
    d.figures["kernel_retrans"] = lab.tcp_retransmissions(C[0]) - before
    bg.start(C[0])
    time.sleep(WINDOW_S / 2)  # recover: the alert resolves

    # E. loss on the router's 1c<->1a path: infrastructure -------------------------------------
    e = camp.phases["path_loss"] = Phase("path_loss", start=_next_boundary())
    lab.path_loss("subnet-1c", "subnet-1a", 5)
    runs = lab.iperf3_many([(C[0], SERVER), (C[1], A1), (C[2], SERVER)], seconds=14, bitrate="200M")
    lab.clear_loss()
    e.figures["iperf3"] = [_iperf_sum(r) for r in runs]
    _finish(e)
    time.sleep(WINDOW_S / 2)

    # F. delay on the inter-AZ paths, loaded ----------------------------------------------------
    f = camp.phases["delay"] = Phase("delay", start=_next_boundary())
    idle_inter = lab.ping(C[1], SERVER, count=5)
    lab.inter_az_delay(rate="20mbit", queue_ms=200)
    load = threading.Thread(target=lab.iperf3, args=(C[2], SERVER), kwargs={"seconds": 14, "bitrate": "30M"})
    load.start()
    time.sleep(2)
    f.figures["ping_inter_ms"] = lab.ping(C[1], SERVER, count=40, interval=0.25)
    f.figures["ping_intra_ms"] = lab.ping(A1, SERVER, count=10, interval=0.2)
    f.figures["ping_idle_inter_ms"] = idle_inter
    load.join()
    lab.clear_delay()
    _finish(f)

    # G. broker outage -----------------------------------------------------------------------
    for host in CLIENTS:
        bg.stop(host)
    g = camp.phases["outage"] = Phase("outage", start=_next_boundary())
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    _broker_block(lab, port, True)
    fetched: dict[str, int] = {h: 0 for h in CLIENTS}
    try:
        for _ in range(2):
            with ThreadPoolExecutor(len(CLIENTS)) as ex:
                for h, n in zip(CLIENTS, ex.map(lambda c: lab.fetch(c, SERVER, times=1), CLIENTS)):
                    fetched[h] += n
            time.sleep(OUTAGE_S / 2 - 2)
        spooled = {h: len(list((deploy.workdir.parent / f"agent-{lab.short(h)}" / "spool").glob("*.jsonl")))
                   for h in [SERVER, *CLIENTS]}
        g.figures["spooled_intervals"] = spooled
    finally:
        _broker_block(lab, port, False)
    with ThreadPoolExecutor(len(CLIENTS)) as ex:
        for h, n in zip(CLIENTS, ex.map(lambda c: lab.fetch(c, SERVER, times=1), CLIENTS)):
            fetched[h] += n
    g.figures["curl"] = fetched
    g.figures["last_traffic"] = time.time()
    t0 = time.time()
    while time.time() < t0 + 60 and [h for h in [SERVER, *CLIENTS] if list(
            (deploy.workdir.parent / f"agent-{lab.short(h)}" / "spool").glob("*.jsonl"))]:
        time.sleep(0.5)
    g.figures["drained_s"] = round(time.time() - t0, 1)
    _finish(g)
    for host in CLIENTS:  # traffic after the campaign moves event time on: the last windows close sooner
        bg.start(host)


def _pct(a: float, b: float) -> str:
    return f"{100 * (a - b) / b:+.2f} %" if b else "n/a"


def _table(camp: Campaign) -> str:
    rows = ["| experiment | reference (wire) | pipeline (ClickHouse) | verdicts / NHI |", "|---|---|---|---|"]
    try:
        w = camp.windows("http")
        curl = camp.phases["http"].figures["curl"]
        for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
            ref = sum(v for h, v in curl.items() if h.startswith(sub))
            got = w.get((sub, "subnet-1a"), {}).get("received", 0)
            rows.append(f"| 1 HTTP {sub}→subnet-1a | curl {ref:,} B | {got:,} B received ({_pct(got, ref)}) | |")
        both = w.get(("subnet-1a", "subnet-1a"), {})
        rows.append(f"| 1 HTTP 1a→1a both ends | curl {curl[A1]:,} B | server sent {both.get('sent', 0):,} B, "
                    f"client received {both.get('received', 0):,} B | |")
        ref_b, ref_r = camp.phases["burst"].figures["iperf3"]
        wb = camp.windows("burst").get(("subnet-1c", "subnet-1a"), {})
        rows.append(f"| 2 burst 1c→1a | iperf3 {ref_b:,} B, {ref_r} retrans | {wb.get('sent', 0):,} B "
                    f"({_pct(wb.get('sent', 0), ref_b)}), {wb.get('retrans')} retrans | |")
        wu = camp.phases["warmup"].figures
        rows.append(f"| warm-up | | {wu.get('warmup_s')} s until the 1c clients' keys towards 1a had learned: "
                    f"{wu.get('learned')} | |")
        ref_b, ref_r = camp.phases["host_loss"].figures["iperf3"]
        kernel = camp.phases["host_loss"].figures["kernel_retrans"]
        wd = camp.instances("host_loss").get((C[0], "subnet-1a"), {})
        verdicts = sorted({(a["cause"], f"{a['element_kind']}:{a['element']}") for a in camp.attributions("host_loss")})
        rows.append(f"| 3 loss on one client | kernel {kernel} retrans in {C[0]} (iperf3 {ref_r}, {ref_b:,} B) | "
                    f"{C[0]}→subnet-1a {wd.get('retrans')} retrans ({_pct(wd.get('retrans') or 0, kernel)}), "
                    f"{wd.get('timeouts')} timeouts | {verdicts}; NHI {camp.nhi('host_loss') or 'healthy'} |")
        runs = camp.phases["path_loss"].figures["iperf3"]
        we = camp.windows("path_loss").get(("subnet-1c", "subnet-1a"), {})
        verdicts = sorted({(a["cause"], f"{a['element_kind']}:{a['element']}") for a in camp.attributions("path_loss")})
        rows.append(f"| 4 loss on the 1c↔1a path | iperf3 {sum(r for _, r in runs)} retrans | {we.get('retrans')} "
                    f"retrans (incl. background), {we.get('timeouts')} timeouts | {verdicts}; NHI "
                    f"{camp.nhi('path_loss') or 'healthy'} |")
        fig = camp.phases["delay"].figures
        wf = camp.windows("delay")
        inter, intra = wf.get(("subnet-1c", "subnet-1a"), {}), wf.get(("subnet-1a", "subnet-1a"), {})
        rows.append(f"| 5 delay | ping 1c→1a {fig['ping_inter_ms']:.1f} ms loaded ({fig['ping_idle_inter_ms']:.2f} "
                    f"idle), 1a→1a {fig['ping_intra_ms']:.2f} ms | RTT mean 1c→1a {inter.get('rtt_ms') or 0:.1f} ms, "
                    f"1a→1a {intra.get('rtt_ms') or 0:.2f} ms | |")
        g = camp.phases["outage"].figures
        wg = camp.windows("outage")
        for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
            ref = sum(v for h, v in g["curl"].items() if h.startswith(sub))
            got = wg.get((sub, "subnet-1a"), {}).get("received", 0)
            rows.append(f"| 6 outage {sub}→subnet-1a | curl {ref:,} B | {got:,} B ({_pct(got, ref)}) | spooled "
                        f"{sum(v for h, v in g['spooled_intervals'].items() if h.startswith(sub))} intervals, "
                        f"drained in {g['drained_s']} s |")
    except Exception as exc:  # noqa: BLE001 - the table is a report; the tests below assert
        rows.append(f"| (table incomplete: {exc!r}) | | | |")
    return "\n".join(rows) + "\n"


# --- the campaign as a process of its own -------------------------------------------------------------
RESULT = "campaign.json"
LOG = "campaign.log"
TIMEOUT_S = 1200  # ~8 minutes alone; more on a loaded machine
#: A file the campaign touches when it has ended (if this variable names one): ``.ci/run`` holds the unit
#: tests back until then, so the real traffic's timing is shared only with the integration tests.
DONE_ENV = "CI_CAMPAIGN_DONE"




class CampaignProcess:
    """``python -m tests.support.experiments WORKDIR``, started now; :meth:`result` waits for its ``Campaign``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started = time.time()
        self._log = open(work / LOG, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.experiments", str(work)], cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def result(self) -> Campaign:
        """The campaign's results; ``LabError`` when namespaces cannot be made, ``RuntimeError`` (with the
        campaign's log) when it failed or overran :data:`TIMEOUT_S`."""
        try:
            self.proc.wait(max(1.0, self.started + TIMEOUT_S - time.time()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"the campaign did not finish in {TIMEOUT_S} s\n{self._tail()}") from None
        self._log.close()
        out = self.work / RESULT
        if not out.exists():
            raise RuntimeError(f"the campaign exited with {self.proc.returncode} and no results\n{self._tail()}")
        d = orjson.loads(out.read_bytes())
        if d.get("lab_error"):
            raise LabError(d["lab_error"])
        if d.get("error"):
            raise RuntimeError(f"the campaign failed: {d['error']}\n{self._tail()}")
        return Campaign.from_dict(d["campaign"])

    def stop(self) -> None:
        """End it early (the session ended first): it tears the lab down on SIGTERM."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def _tail(self, n: int = 6000) -> str:
        return (self.work / LOG).read_text(errors="replace")[-n:]


#: Where ``tests/integration/conftest.py`` keeps the campaign it started for the session.
EXPERIMENTS = pytest.StashKey["CampaignProcess"]()


def main(argv: list[str]) -> int:
    work = Path(argv[0])
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # finally blocks tear the lab down
    out: dict[str, Any]
    try:
        camp = run(work)
    except LabError as e:
        out = {"lab_error": str(e)}
    except Exception as e:  # noqa: BLE001 - written for the tests to report
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}"}
    else:
        table = _table(camp)
        (work / "experiments.md").write_text(table)
        print(table, flush=True)
        out = {"campaign": camp.to_dict()}
    (work / RESULT).write_bytes(orjson.dumps(out))
    if done := os.environ.get(DONE_ENV):  # .ci/run starts the unit tests once the traffic is over
        Path(done).touch()
    return 0 if "campaign" in out else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
