"""The reference's experiments on real TCP: hosts in network namespaces run ``flowmon agent`` against a
pipeline worker on the embedded broker, and what lands in ClickHouse is compared with what iperf3, curl
and ping measured on the wire.

The lab (``tests.support.netns``): subnets 1a, 1c, 1d in three AZs joined by a router; a server
``subnet-1a/0``, clients ``subnet-1a/1``, ``subnet-1c/0..2`` and ``subnet-1d/0``. Agents report every 2 s;
windows are 20 s, detection intervals 2 s. One campaign (a module fixture, ~7 minutes) runs the phases
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

The results table is written to ``experiments.md`` in the test's temporary directory (and printed).
If namespaces cannot be created the campaign fails with the reason; it never skips.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.support.harness import Deployment
from tests.support.netns import Lab, LabError

from pipeline.runtime.brokers import EmbeddedTansu

pytestmark = pytest.mark.timeout(1200)  # one campaign of ~8 minutes, shared by the tests below

REPO = Path(__file__).resolve().parents[2]
WINDOW_S = 20
AGENT_INTERVAL_S = 2
SERVER, A1, D0 = "subnet-1a/0", "subnet-1a/1", "subnet-1d/0"
C = ["subnet-1c/0", "subnet-1c/1", "subnet-1c/2"]
CLIENTS = [A1, *C, D0]
SINK_PORT = 7000
BACKGROUND_RATE = 500_000  # bytes/s per stream
OUTAGE_S = 60
MB10 = 10 * 1024 * 1024


@dataclass
class Phase:
    name: str
    start: int = 0
    end: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Campaign:
    lab: Lab
    deploy: Deployment
    phases: dict[str, Phase] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def windows(self, phase: str) -> dict[tuple[str, str], dict[str, float]]:
        """Per (src subnet, dst subnet): the phase's windows summed (RTT: count-weighted mean)."""
        p = self.phases[phase]
        rows = self.deploy.client.query(
            "SELECT src_subnet, dst_subnet, sum(bytes_sent), sum(bytes_received), sum(retransmissions), "
            "sum(timeouts), sum(rtt_sum_us), sum(rtt_count), max(rtt_p50_us) FROM flow_windows FINAL "
            "WHERE window_start >= toDateTime({a:UInt32}) AND window_start < toDateTime({b:UInt32}) "
            "GROUP BY src_subnet, dst_subnet", parameters={"a": p.start, "b": p.end}).result_rows
        return {(r[0], r[1]): {"sent": r[2], "received": r[3], "retrans": r[4], "timeouts": r[5],
                               "rtt_ms": (r[6] / r[7] / 1000) if r[7] else None, "p50_ms": r[8] / 1000}
                for r in rows}

    def attributions(self, phase: str) -> list[dict[str, Any]]:
        p = self.phases[phase]
        q = self.deploy.client.query(
            "SELECT scope, instance, src_subnet, dst_subnet, metric, family, cause, element_kind, element "
            "FROM flow_attributions FINAL WHERE at >= toDateTime({a:UInt32}) AND at < toDateTime({b:UInt32}) "
            "ORDER BY at", parameters={"a": p.start, "b": p.end})
        return [dict(zip(q.column_names, r)) for r in q.result_rows]

    def nhi(self, phase: str) -> list[tuple[str, str, str]]:
        """Degraded periods that overlap the phase: (scope_kind, scope, element)."""
        p = self.phases[phase]
        rows = self.deploy.client.query(
            "SELECT scope_kind, scope, element FROM nhi FINAL WHERE start < toDateTime({b:UInt32}) AND "
            "(end IS NULL OR end > toDateTime({a:UInt32}))", parameters={"a": p.start, "b": p.end}).result_rows
        return [tuple(r) for r in rows]


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


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    work = tmp_path_factory.mktemp("experiments")
    try:
        lab = Lab(work / "lab").start()
    except LabError as e:
        pytest.fail(f"cannot build the network namespaces: {e}", pytrace=False)
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
        camp = Campaign(lab, d)
        env = {**{k: v for k, v in d.env.items() if k != "FLOWMON_ROLES"}, "PYTHONPATH": str(REPO)}
        for host in [SERVER, *CLIENTS]:
            log = open(work / f"agent-{lab.short(host)}.log", "wb")
            agents.append(lab.popen(host, [sys.executable, "-m", "pipeline.cli", "agent", "--instance", host,
                                           "--interval", AGENT_INTERVAL_S, "--exclude", str(lab.mgmt_net),
                                           "--state-dir", str(work / f"agent-{lab.short(host)}"), "--loglevel", "info"],
                                    env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        d.client  # the sink is up
        _run(camp, env, broker)
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
        table = _table(camp)
        (work / "experiments.md").write_text(table)
        print("\n" + table)
        yield camp
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


def _run(camp: Campaign, env: dict[str, str], broker: EmbeddedTansu) -> None:
    lab = camp.lab
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
    time.sleep(80)  # 40 intervals: the detectors need 20 scored ones per key, and a loaded CI machine delays some
    _finish(c, quiet_s=0)

    # D. loss on one client's link: workload ------------------------------------------------
    bg.stop(C[0])
    d = camp.phases["host_loss"] = Phase("host_loss", start=_next_boundary())
    lab.host_loss(C[0], 5)
    d.figures["iperf3"] = _iperf_sum(lab.iperf3(C[0], SERVER, seconds=14, bitrate="200M"))
    lab.clear_loss()
    _finish(d)
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
        spooled = {h: len(list((camp.deploy.workdir.parent / f"agent-{lab.short(h)}" / "spool").glob("*.jsonl")))
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
            (camp.deploy.workdir.parent / f"agent-{lab.short(h)}" / "spool").glob("*.jsonl"))]:
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
        ref_b, ref_r = camp.phases["host_loss"].figures["iperf3"]
        wd = camp.windows("host_loss").get(("subnet-1c", "subnet-1a"), {})
        verdicts = sorted({(a["cause"], f"{a['element_kind']}:{a['element']}") for a in camp.attributions("host_loss")})
        rows.append(f"| 3 loss on one client | iperf3 {ref_r} retrans ({ref_b:,} B) | {wd.get('retrans')} retrans "
                    f"({_pct(wd.get('retrans') or 0, ref_r)}), {wd.get('timeouts')} timeouts | {verdicts}; NHI "
                    f"{camp.nhi('host_loss') or 'healthy'} |")
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


# --- the assertions, one test per experiment -----------------------------------------------------------


def _within(got: float, ref: float, rel: float) -> bool:
    return abs(got - ref) <= rel * ref


def test_http_bytes_per_pair_match_curl_and_1a_shows_both_ends(campaign):
    w = campaign.windows("http")
    curl = campaign.phases["http"].figures["curl"]
    assert all(v == 3 * MB10 for v in curl.values()), curl
    for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
        ref = sum(v for h, v in curl.items() if h.startswith(sub))
        assert _within(w[(sub, "subnet-1a")]["received"], ref, 0.02), (sub, w[(sub, "subnet-1a")], ref)
        if sub != "subnet-1a":  # the server's side of the same transfers
            assert _within(w[("subnet-1a", sub)]["sent"], ref, 0.02), (sub, w[("subnet-1a", sub)], ref)
    both = w[("subnet-1a", "subnet-1a")]  # the server's and the 1a client's reports in one window
    assert _within(both["sent"], curl[A1], 0.02) and _within(both["received"], curl[A1], 0.02), both


def test_burst_bytes_and_retransmissions_match_iperf3(campaign):
    ref_bytes, ref_retrans = campaign.phases["burst"].figures["iperf3"]
    got = campaign.windows("burst")[("subnet-1c", "subnet-1a")]
    assert _within(got["sent"], ref_bytes, 0.02), (got, ref_bytes)
    assert abs(got["retrans"] - ref_retrans) <= max(0.1 * ref_retrans, 2), (got, ref_retrans)


def test_loss_on_one_client_is_workload_and_nhi_stays_healthy(campaign):
    ref_bytes, ref_retrans = campaign.phases["host_loss"].figures["iperf3"]
    assert ref_retrans > 20, "5 % loss must make iperf3 retransmit"
    got = campaign.windows("host_loss")[("subnet-1c", "subnet-1a")]
    assert abs(got["retrans"] - ref_retrans) <= 0.1 * ref_retrans, (got, ref_retrans)
    verdicts = campaign.attributions("host_loss")
    mine = [v for v in verdicts if v["instance"] == C[0]]
    assert mine, f"no anomaly attributed for {C[0]}'s flows: {verdicts}"
    assert all(v["cause"] == "workload" and v["element"] == C[0] for v in mine), mine
    assert not [v for v in verdicts if v["cause"] == "infrastructure"], verdicts
    assert not [n for n in campaign.nhi("host_loss") if "az-1c" in n[1] and "az-1a" in n[1]], campaign.nhi("host_loss")


def test_loss_on_the_path_is_infrastructure_and_nhi_degrades(campaign):
    verdicts = campaign.attributions("path_loss")
    flagged = {v["instance"] for v in verdicts if v["scope"] == "instance"}
    assert len(flagged & set(C)) >= 2, verdicts  # the 1c clients' flows towards 1a
    mine = [v for v in verdicts if v["instance"] in C]
    assert mine and all(v["cause"] == "infrastructure" and v["element"] == "az-1a|az-1c" for v in mine), verdicts
    # the pair's own retransmission alert too; its timeout or RTT alerts (loss also delays) may stay
    # undetermined, never workload
    pair = [v for v in verdicts if v["scope"] == "pair"]
    assert any(v["family"] == "retrans" and v["cause"] == "infrastructure" for v in pair), verdicts
    assert not [v for v in verdicts if v["cause"] == "workload"], verdicts
    degraded = campaign.nhi("path_loss")
    assert any(kind == "az_pair" and "az-1a" in scope and "az-1c" in scope for kind, scope, _ in degraded), degraded


def test_delay_raises_inter_az_rtt_by_what_ping_measures(campaign):
    fig = campaign.phases["delay"].figures
    w = campaign.windows("delay")
    inter, intra = w[("subnet-1c", "subnet-1a")]["rtt_ms"], w[("subnet-1a", "subnet-1a")]["rtt_ms"]
    ping_extra = fig["ping_inter_ms"] - fig["ping_intra_ms"]
    assert ping_extra > 30, fig  # the queue really filled
    assert 0.5 * ping_extra <= inter - intra <= 2.0 * ping_extra, (inter, intra, fig)


def test_broker_outage_loses_and_double_counts_nothing(campaign):
    g = campaign.phases["outage"].figures
    assert all(n > 0 for n in g["spooled_intervals"].values()), g  # every agent held reports back
    w = campaign.windows("outage")
    for sub in ("subnet-1a", "subnet-1c", "subnet-1d"):
        ref = sum(v for h, v in g["curl"].items() if h.startswith(sub))
        assert _within(w[(sub, "subnet-1a")]["received"], ref, 0.02), (sub, w[(sub, "subnet-1a")], ref)
        if sub != "subnet-1a":
            assert _within(w[("subnet-1a", sub)]["sent"], ref, 0.02), (sub, w[("subnet-1a", sub)], ref)
    dead = campaign.deploy.deadletters()
    assert not [x for x in dead if x.get("reason") == "late"], dead
