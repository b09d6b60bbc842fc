"""What a worker's start and stop take, from its process spawned until it reads, and from SIGTERM until it exits.

```bash
python -m benchmarks.startstop [--broker tansu|kafka|both] [--rounds 3] [--session-timeout 10] [--compare DIR]
```

Per broker and round: one ``flowmon worker`` (roles pipeline,sink; chdb) on fresh, empty topics, with the
default group timings unless told (``--session-timeout``: 10 s, ``FLOWMON_SESSION_TIMEOUT_S``'s default; Tansu
answers a group's first join after about half of it). Read from the worker's log, seconds after the process
was spawned:

* **up**: ``[^Worker]: Starting`` (imports, topics, ClickHouse schema done; Faust starts);
* **pairs**: ``assigned pairs [`` (Faust's group joined: windows, detection and attribution can work);
* **reports**: ``ingest: assigned reports [`` (the reports reader's group joined: ingest reads);

then **stop**: SIGTERM until the process has exited. With ``--compare DIR`` the worker from DIR ("before")
and this tree's ("after") alternate round by round on the same broker, and a last table gives the medians
of both and after − before.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._common import REPO, Worker, broker, unique_name, worker_env
from benchmarks.bench import _delete_run_topics, check_tree
from pipeline.config import Settings
from pipeline.runtime.topics import Topics, ensure_topics

console = Console()

#: What each column waits for in the worker's log.
MARKS = {"up": "[^Worker]: Starting", "pairs": "assigned pairs [", "reports": "ingest: assigned reports ["}


def one_round(bootstrap: str, src: Path, workroot: Path, session_timeout_s: float, timeout_s: float = 120) -> dict:
    """Start one worker from tree ``src``, wait until it reads, stop it: seconds per :data:`MARKS` and ``stop``."""
    prefix = unique_name("startstop")
    workdir = workroot / prefix
    workdir.mkdir(parents=True)
    topics = Topics.from_settings(Settings(topic_prefix=prefix, app_id=prefix, partitions=4))
    asyncio.run(ensure_topics(bootstrap, topics))
    env = worker_env(bootstrap, prefix, workdir, roles="pipeline,sink", partitions=4, topology=None,
                     FLOWMON_SESSION_TIMEOUT_S=f"{session_timeout_s:g}", FLOWMON_REBALANCE_TIMEOUT_S="30")
    env["PYTHONPATH"] = str(src)
    check_tree(env, src)
    w = Worker(env, workdir, cwd=src)
    out: dict = {}
    try:
        deadline = time.time() + timeout_s
        while len(out) < len(MARKS):
            if not w.alive() or time.time() > deadline:
                raise RuntimeError(f"the worker from {src} did not start reading:\n{w.tail(30)}")
            for name, needle in MARKS.items():
                if name not in out and (t := w.log_time(needle)) is not None:
                    out[name] = t - w.started
            time.sleep(0.1)
        time.sleep(1)  # a moment of reading before the stop
    finally:
        t0 = time.perf_counter()
        code = w.stop()
        out["stop"] = time.perf_counter() - t0
        out["exit"] = code
    _delete_run_topics(bootstrap, topics, prefix)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startstop", description=__doc__.splitlines()[0])
    ap.add_argument("--broker", choices=["tansu", "kafka", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--session-timeout", type=float, default=10.0, help="FLOWMON_SESSION_TIMEOUT_S of the workers")
    ap.add_argument("--compare", type=Path, help="another source tree, measured alternately as 'before'")
    args = ap.parse_args(argv)
    kinds = ["tansu", "kafka"] if args.broker == "both" else [args.broker]
    trees = [("before", args.compare.resolve()), ("after", REPO)] if args.compare else [("this tree", REPO)]
    rows: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="flowmon-startstop-") as tmp:
        root = Path(tmp)
        for kind in kinds:
            b = broker(kind, root / kind)
            try:
                for r in range(args.rounds):
                    for label, src in trees:
                        res = one_round(b.bootstrap, src, root / "runs", args.session_timeout)
                        console.log(f"{kind} round {r + 1} {label}: " + ", ".join(
                            f"{k} {v:.2f} s" for k, v in res.items() if k != "exit") + f", exit {res['exit']}")
                        rows.append((kind, label, res))
            finally:
                b.stop()
    table = Table(title=f"worker start and stop, seconds (median of {args.rounds} rounds; session timeout "
                        f"{args.session_timeout:g} s)")
    for col in ("broker", "tree", *MARKS, "stop", "exit codes"):
        table.add_column(col, justify="left" if col in ("broker", "tree") else "right")
    medians: dict[tuple[str, str], dict[str, float]] = {}
    for kind in kinds:
        for label, _ in trees:
            got = [res for k, lab, res in rows if (k, lab) == (kind, label)]
            med = {c: statistics.median(res[c] for res in got) for c in (*MARKS, "stop")}
            medians[kind, label] = med
            table.add_row(kind, label, *(f"{med[c]:.2f}" for c in (*MARKS, "stop")),
                          ", ".join(sorted({str(res["exit"]) for res in got})))
        if args.compare:
            a, b4 = medians[kind, "after"], medians[kind, "before"]
            table.add_row(kind, "after − before", *(f"{a[c] - b4[c]:+.2f}" for c in (*MARKS, "stop")), "")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
