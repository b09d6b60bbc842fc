"""What ``flowmon agent`` costs on a host, and how many reports and samples it can emit.

    python -m benchmarks.agent [--open 1000] [--remotes 100] [--churn 200] [--window 30] [--json FILE]

Three parts, about 3 minutes in all, against a real Tansu broker (``EmbeddedTansu``):

1. **Core capacity** (in this process): a :class:`~pipeline.agent.host.HostAgent` over
   synthetic :class:`~pipeline.agent.sockdiag.Conn` records (N connections across M
   remotes, their counters moving every interval; optionally K connections destroyed per
   interval, delivered as destroy notifications). Timed: ``close_interval`` whole (poll,
   ledger, per-remote totals, reports, orjson, spool commit with its two fsyncs), and the
   encoding alone (``per_remote`` + ``build_reports`` + ``orjson.dumps``). The kernel's
   dump is not in it (the records are built before the clock starts); part 3 has it.
2. **Sender capacity**: F intervals are spooled while no sender runs (as during a broker
   outage), then :class:`~pipeline.runtime.agent.Sender` drains them to the broker
   (``acks=all``); the topic is read back and counted.
3. **The real agent** (``python -m pipeline.cli agent`` subprocesses, ``--include-loopback``)
   under load from another process (``python -m benchmarks.agent --load ...``), two agents
   at once, ``--interval 5`` and ``--interval 30``, fresh state each:

   * ``open``: ``--open`` connections from 127.0.122.1 to ``--remotes`` servers
     127.0.123.1… (one port), each sending 100 bytes every second;
   * ``churn``: ``--churn`` connections per second opened, 1,000 bytes sent, closed.

   The agents run with ``--exclude 127.0.122.0/24``: on loopback the kernel holds both
   ends of each connection, and the servers' ends (remote 127.0.122.1) are left out, so
   the agent accounts what a host with those client connections would. The dump still
   returns both ends (and the churn's TIME_WAIT entries), so the CPU figures are upper
   bounds. Measured over one window of ``--window`` s that starts 1.5 s after a 30-s
   boundary (so it holds exactly one close of the 30-s agent and six of the 5-s one):
   CPU = Δ(utime+stime) of /proc/PID/stat ÷ window, as % of one core; RSS = VmRSS at
   the end, VmHWM (peak) from /proc/PID/status. Afterwards the topic is read: the flows
   and bytes the agents reported towards 127.0.123.0/24 in the intervals that lie inside
   the load are compared with what the load generator did in those intervals.

Other processes share the machine: /proc/loadavg is printed before and after, and the
number of other TCP sockets the kernel held when the load started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
CLIENT = "127.0.122.1"
SERVER_PREFIX = "127.0.123."
_TICK = os.sysconf("SC_CLK_TCK")


# --- /proc ------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    f = data[data.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / _TICK


def status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


# --- load generator (a separate process) -------------------------------------------------------
def servers(remotes: int) -> list[str]:
    return [f"{SERVER_PREFIX}{i}" for i in range(1, remotes + 1)]


async def _load(mode: str, port: int, remotes: int, count: int, rate: float, log: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while await r.read(1 << 16):
                pass
        except (OSError, asyncio.CancelledError):  # a reset; or the loop ending (the load stops)
            pass
        w.close()

    srv = await asyncio.start_server(serve, host=servers(remotes), port=port, backlog=4096)
    done: list[tuple[float, int]] = []  # (time the client closed, bytes it sent)
    addrs = servers(remotes)
    tasks: list[asyncio.Task[Any]] = []

    if mode == "open":
        async def trickle(k: int, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(random.random())
            while not stop.is_set():
                w.write(b"t" * 100)
                await w.drain()
                await asyncio.sleep(1.0)
        writers = []
        for k in range(count):
            _r, w = await asyncio.open_connection(addrs[k % remotes], port, local_addr=(CLIENT, 0))
            writers.append(w)
        tasks = [asyncio.create_task(trickle(k, w)) for k, w in enumerate(writers)]
        print("ready", flush=True)
        await stop.wait()
        for t in tasks:
            t.cancel()
        for w in writers:
            w.close()
    else:
        async def one(k: int) -> None:
            try:
                r, w = await asyncio.open_connection(addrs[k % remotes], port, local_addr=(CLIENT, 0))
                w.write(b"c" * 1000)
                await w.drain()
                w.write_eof()
                await r.read()  # the server closes after EOF: a clean close on both sides
                w.close()
                done.append((time.time(), 1000))
            except OSError as e:
                print(f"load: {e}", file=sys.stderr, flush=True)
        print("ready", flush=True)
        k = 0
        t0 = time.perf_counter()
        while not stop.is_set():
            tasks.append(asyncio.create_task(one(k)))
            k += 1
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await asyncio.gather(*tasks, return_exceptions=True)
    srv.close()
    log.write_bytes(orjson.dumps({"done": done}))


class Load:
    """``python -m benchmarks.agent --load MODE`` as a subprocess; ready when it says so."""

    def __init__(self, mode: str, port: int, remotes: int, count: int, rate: float, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.agent", "--load", mode, "--port", str(port), "--remotes", str(remotes),
             "--open", str(count), "--churn", str(rate), "--load-log", str(log)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
            stderr=open(log.with_suffix(".err"), "w"))
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            self.proc.kill()
            raise SystemExit(f"load generator did not start ({line!r})")
        self.ready = time.time()

    def stop(self) -> list[tuple[float, int]]:
        self.stopped = time.time()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return [tuple(x) for x in orjson.loads(self.log.read_bytes())["done"]]  # type: ignore[misc]


# --- the real agent ---------------------------------------------------------------------------
class Agent:
    def __init__(self, name: str, interval: int, bootstrap: str, state: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}
        env["PYTHONPATH"] = str(REPO)
        self.name, self.interval = name, interval
        self.err = state.parent / f"{name}.log"
        self._errfh = open(self.err, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "agent", "--instance", name, "--ip", CLIENT, "--subnet", "s-bench",
             "--az", "az-bench", "--vpc", "vpc-bench", "--interval", str(interval), "--include-loopback",
             "--exclude", "127.0.122.0/24", "--state-dir", str(state), "--broker", bootstrap, "--loglevel", "info"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self._errfh)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._errfh.close()


def other_sockets() -> int:
    from pipeline.agent.sockdiag import SockDiag
    d = SockDiag()
    try:
        return sum(1 for c in d.dump() if not (c.local == CLIENT or c.remote == CLIENT))
    finally:
        d.close()


def run_load(mode: str, args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    from pipeline.runtime.brokers import free_port
    agents = [Agent(f"bench-{mode}-i{iv}", iv, bootstrap, tmp / f"st-{mode}-{iv}") for iv in (5, 30)]
    time.sleep(3.0)  # imports, first poll (the base)
    base = {a.name: status_kb(a.proc.pid) for a in agents}
    port = free_port()
    load = Load(mode, port, args.remotes, args.open, args.churn, tmp / f"load-{mode}.json")
    others = other_sockets()
    try:
        now = time.time()
        w0 = math.floor(now / 30) * 30 + 30 + 1.5
        if w0 - 30 > now + 1:  # the current 30-s interval started after the load did: start measuring sooner
            w0 -= 30
        time.sleep(max(0.0, w0 - time.time()))
        c0 = {a.name: cpu_s(a.proc.pid) for a in agents}
        t0 = time.perf_counter()
        time.sleep(args.window)
        c1 = {a.name: cpu_s(a.proc.pid) for a in agents}
        wall = time.perf_counter() - t0
        mem = {a.name: status_kb(a.proc.pid) for a in agents}
        time.sleep(max(0.0, math.floor(time.time() / 5) * 5 + 5.3 - time.time()))  # let a 5-s interval close
        done = load.stop()
    finally:
        if load.proc.poll() is None:
            load.proc.kill()
        for a in agents:
            a.stop()
    for a in agents:
        if a.proc.returncode != 0:
            raise SystemExit(f"agent {a.name} failed:\n{a.err.read_text()[-2000:]}")
    return {"mode": mode, "agents": [(a.name, a.interval) for a in agents], "window_s": wall, "w0": w0,
            "cpu": {k: (c1[k] - c0[k]) / wall for k in c0}, "mem": mem, "base": base, "others": others,
            "ready": load.ready, "stopped": load.stopped, "done": done}


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    from pipeline.runtime import kafka

    async def go() -> list[dict[str, Any]]:
        c = kafka.consumer(bootstrap, topic, auto_offset_reset="earliest")
        await c.start()
        out: list[dict[str, Any]] = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                batch = await c.getmany(timeout_ms=500, max_records=10_000)
                if not batch and out:
                    break
                for msgs in batch.values():
                    out.extend(orjson.loads(m.value) for m in msgs)
        finally:
            await c.stop()
        return out
    return asyncio.run(go())


def seen(reports: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """Per agent: the load's flows and bytes it reported, over its intervals inside the load, against the truth."""
    out = {}
    for name, iv in run["agents"]:
        mine = {r["report_id"]: r for r in reports if r["instance"] == name}.values()
        lo = math.ceil((run["ready"] + 0.5) / iv) * iv
        hi = math.floor(run["stopped"] / iv) * iv
        flows = sent = 0
        starts = set()
        for r in mine:
            if lo <= r["start"] and r["start"] + r["interval_s"] <= hi:
                starts.add(r["start"])
                for s in r["samples"]:
                    if s["remote"]["ip"].startswith(SERVER_PREFIX):
                        flows += s["flows"]
                        sent += s["bytes_sent"]
        n = max(1, (hi - lo) // iv)
        if run["mode"] == "churn":
            truth = [b for t, b in run["done"] if lo <= t < hi]
            out[name] = {"intervals": len(starts), "of": n, "flows": flows, "truth_flows": len(truth),
                         "bytes": sent, "truth_bytes": sum(truth)}
        else:
            out[name] = {"intervals": len(starts), "of": n, "flows_per_interval": flows / max(1, len(starts)),
                         "bytes_per_s": sent / max(1, len(starts) * iv)}
    return out


# --- core and sender capacity ------------------------------------------------------------------
def synthetic(n: int, m: int, ticks: int, churn: int = 0) -> tuple[list[list[Any]], list[list[Any]]]:
    """``ticks`` dumps of n connections to m remotes (10.{k//250}.{k%250}.1), counters moving; and per tick
    ``churn`` destroyed connections (new cookies)."""
    from pipeline.agent.sockdiag import Conn, TcpInfo
    remotes = [f"10.{k // 250}.{k % 250}.1" for k in range(m)]
    dumps, events = [], []
    cookie = 1 << 40
    for t in range(1, ticks + 1):
        dumps.append([Conn(c, "10.200.0.4", 10_000 + c % 50_000, remotes[c % m], 443, 1, 0,
                           TcpInfo(900 + c % 97, 120, t // 4, t * 1_000 + c, t * 4_000 + c, t * 3, 0, t // 8))
                      for c in range(1, n + 1)])
        ev = []
        for _ in range(churn):
            cookie += 1
            ev.append(Conn(cookie, "10.200.0.4", 30_000 + cookie % 20_000, remotes[cookie % m], 80, 7, 0,
                           TcpInfo(700, 90, 0, 1_000, 300, 3, 0, 0)))
        events.append(ev)
    return dumps, events


class Replay:
    def __init__(self, dumps: list[list[Any]], events: list[list[Any]]) -> None:
        self.dumps, self.events_, self.i, self.j = dumps, events, 0, 0

    def dump(self) -> list[Any]:
        d = self.dumps[min(self.i, len(self.dumps) - 1)]
        self.i += 1
        return d

    def events(self) -> list[Any]:
        e = self.events_[self.j] if self.j < len(self.events_) else []
        self.j += 1
        return e


def _locate(ip: str) -> Any:
    from pipeline.agent.report import Place
    a, b = ip.split(".")[1:3]
    return Place(f"sn-{a}-{int(b) // 25}", "az-x", "vpc-x")  # 25 remotes per subnet


def _me() -> Any:
    from pipeline.agent.report import Identity
    return Identity("bench-core", "10.200.0.4", "sn-me", "az-x", "vpc-x")


def core_capacity(tmp: Path, n: int, m: int, churn: int, top_k: int = 100, ticks: int = 12) -> dict[str, Any]:
    from pipeline.agent.host import HostAgent
    from pipeline.agent.report import build_reports
    from pipeline.agent.scope import Scope
    from pipeline.agent.spool import Spool
    dumps, events = synthetic(n, m, ticks + 1, churn)
    d = tmp / f"core-{n}-{m}-{churn}-{top_k}"
    core = HostAgent(_me(), Replay(dumps, [[]] + events), Spool.open(d, 1 << 30), Scope(exclude_own=False),
                     _locate, top_k=top_k)
    core.poll()  # the base
    times, samples, reports, sizes = [], 0, 0, 0
    for k in range(ticks):
        t0 = time.perf_counter()
        iv = core.close_interval(1_764_000_000 + 30 * k, 30)
        times.append(time.perf_counter() - t0)
        samples += iv.samples
        reports += len(iv.messages)
        sizes += sum(map(len, iv.messages))
    # the encoding alone, on the last interval's deltas (re-built from the ledger's view of one interval)
    last = list(iv.totals.values())
    enc = []
    for k in range(ticks):
        totals = {t.ip: t for t in last}
        t0 = time.perf_counter()
        rs = build_reports(_me(), totals, start=0, interval_s=30, report_id="x", locate=_locate, top_k=top_k)
        [orjson.dumps(r) for r in rs]
        enc.append(time.perf_counter() - t0)
    state = (d / "state.json").stat().st_size
    shutil.rmtree(d, ignore_errors=True)
    med = sorted(times)[len(times) // 2]
    emed = sorted(enc)[len(enc) // 2]
    return {"n": n, "m": m, "churn": churn, "top_k": top_k, "ms": med * 1e3, "enc_ms": emed * 1e3,
            "samples": samples / ticks, "reports": reports / ticks, "bytes": sizes / ticks, "state_bytes": state}


def sender_capacity(tmp: Path, bootstrap: str, intervals: int, m: int) -> dict[str, Any]:
    from pipeline.agent.host import HostAgent
    from pipeline.agent.scope import Scope
    from pipeline.agent.spool import Spool
    from pipeline.runtime import kafka
    from pipeline.runtime.agent import Sender
    from pipeline.runtime.topics import Topics, ensure_topics
    from pipeline.config import Settings
    topics = Topics.from_settings(Settings(partitions=1, topic_prefix="agentbench-drain"))
    asyncio.run(ensure_topics(bootstrap, topics, names=[topics.reports]))
    dumps, events = synthetic(m, m, 2)
    core = HostAgent(_me(), Replay(dumps, events), Spool.open(tmp / "drain", 1 << 31), Scope(exclude_own=False),
                     _locate, top_k=m)
    core.poll()
    spool_t0 = time.perf_counter()
    for k in range(intervals):  # the broker is not asked: as during an outage
        core.kernel.i = 1
        core.ledger._base = {c.cookie: (0, 0, 0, 0, 0, 0) for c in dumps[0]}  # every interval moves the same
        core.close_interval(1_764_000_000 + 30 * k, 30)
    spool_s = time.perf_counter() - spool_t0
    files, size = core.spool.size()

    async def drain() -> tuple[float, int]:
        s = Sender(kafka.connection(Settings(), bootstrap), topics.reports, core)
        await s._ensure()  # producer started (metadata, ids): not part of the rate
        t0 = time.perf_counter()
        n = await s.drain_once()
        dt = time.perf_counter() - t0
        await s.close()
        return dt, n
    dt, n = asyncio.run(drain())
    back = read_topic(bootstrap, topics.reports)
    samples = sum(len(r["samples"]) for r in back)
    return {"intervals": intervals, "files": files, "bytes": size, "spool_s": spool_s, "drain_s": dt, "sent": n,
            "read_back": len(back), "samples": samples, "samples_per_report": samples / max(1, len(back))}


# --- main ---------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--open", type=int, default=1000)
    p.add_argument("--remotes", type=int, default=100)
    p.add_argument("--churn", type=float, default=200)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--drain-intervals", type=int, default=600)
    p.add_argument("--json")
    p.add_argument("--load", choices=["open", "churn"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--load-log", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.load:
        asyncio.run(_load(a.load, a.port, a.remotes, a.open, a.churn, Path(a.load_log)))
        return 0

    from pipeline.config import Settings
    from pipeline.runtime.brokers import EmbeddedTansu
    from pipeline.runtime.topics import Topics, ensure_topics
    la0 = loadavg()
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="flowmon-agentbench-"))
    result: dict[str, Any] = {"loadavg_before": la0}
    try:
        print(f"loadavg before: {la0}; core capacity ...", flush=True)
        cores = [core_capacity(tmp, 1_000, 100, 0), core_capacity(tmp, 1_000, 100, 6_000),
                 core_capacity(tmp, 10_000, 1_000, 0), core_capacity(tmp, 10_000, 5_000, 0, top_k=5_000, ticks=6)]
        result["core"] = cores
        broker = EmbeddedTansu(tmp / "tansu").start()
        try:
            topics = Topics.from_settings(Settings(partitions=1))
            asyncio.run(ensure_topics(broker.bootstrap, topics, names=[topics.reports]))
            print("sender capacity ...", flush=True)
            result["sender"] = [sender_capacity(tmp / "s100", broker.bootstrap, a.drain_intervals, 100)]
            runs = []
            for mode in ("open", "churn"):
                print(f"agents under the {mode} load ...", flush=True)
                runs.append(run_load(mode, a, broker.bootstrap, tmp))
            reports = read_topic(broker.bootstrap, topics.reports)
        finally:
            broker.stop()
        for run in runs:
            run["seen"] = seen(reports, run)
            run.pop("done")
        result["runs"] = runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_after"] = loadavg()
    result["wall_s"] = time.time() - t_start
    print(render(result, a))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


def render(r: dict[str, Any], a: argparse.Namespace) -> str:
    out = ["", f"loadavg before {r['loadavg_before']}, after {r['loadavg_after']}; {r['wall_s']:.0f} s in all", ""]
    out += ["### The agent process under load (one window of %.0f s)" % a.window, "",
            "| load | interval | CPU (% of one core) | RSS MiB (start → end, peak) | load reported (intervals inside the load) |",
            "| --- | --- | --- | --- | --- |"]
    for run in r["runs"]:
        label = (f"{a.open:,} open conns to {a.remotes} remotes, 100 B/s each" if run["mode"] == "open"
                 else f"{a.churn:,.0f} conns/s opened+closed, 1 kB each")
        for name, iv in run["agents"]:
            mem, base, s = run["mem"][name], run["base"][name], run["seen"][name]
            if run["mode"] == "open":
                rep = (f"{s['flows_per_interval']:,.0f} flows/interval, {s['bytes_per_s']:,.0f} B/s sent "
                       f"({s['intervals']}/{s['of']} intervals)")
            else:
                rep = (f"{s['flows']:,} of {s['truth_flows']:,} closed conns "
                       f"({s['flows'] / max(1, s['truth_flows']):.1%}), bytes {s['bytes'] / max(1, s['truth_bytes']):.2%}"
                       f" ({s['intervals']}/{s['of']} intervals)")
            out.append(f"| {label} | {iv} s | {_pct(run['cpu'][name])} | {base['VmRSS'] / 1024:.1f} → "
                       f"{mem['VmRSS'] / 1024:.1f}, {mem['VmHWM'] / 1024:.1f} | {rep} |")
    out += ["", "other TCP sockets on the host when the load started: "
            + ", ".join(f"{run['mode']} {run['others']}" for run in r["runs"]), ""]
    out += ["### Core capacity (synthetic connections, one process, median interval)", "",
            "| connections | remotes | closed/interval | top_k | close_interval ms | encode ms | samples/interval "
            "| reports/interval | intervals/s | samples/s | state.json kB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in r["core"]:
        ips = 1e3 / c["ms"]
        out.append(f"| {c['n']:,} | {c['m']:,} | {c['churn']:,} | {c['top_k']:,} | {c['ms']:.1f} | {c['enc_ms']:.1f} "
                   f"| {c['samples']:,.0f} | {c['reports']:.0f} | {ips:,.0f} | {ips * c['samples']:,.0f} "
                   f"| {c['state_bytes'] / 1024:,.0f} |")
    out += ["", "### Sender capacity (spooled while no sender ran, then drained to Tansu, acks=all)", "",
            "| intervals spooled | spool MB | spooling s | drain s | reports/s | samples/s | read back |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in r["sender"]:
        out.append(f"| {s['intervals']:,} × {s['samples_per_report']:.0f} samples | {s['bytes'] / 1e6:.1f} | "
                   f"{s['spool_s']:.1f} | {s['drain_s']:.2f} | {s['sent'] / s['drain_s']:,.0f} | "
                   f"{s['samples'] / s['drain_s']:,.0f} | {s['read_back']:,} reports |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
