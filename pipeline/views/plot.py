"""Shell: draw what landed in ClickHouse — data, retransmissions and RTT per subnet pair over time.

Examples
--------
``flowmon plot --out flows.png`` (after ``flowmon demo``, or while a worker runs).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["plot_windows", "NO_DATA_HINT"]

NO_DATA_HINT = ("run a worker with the sink ('flowmon worker') and send it reports ('flowmon produce FILE', "
                "'flowmon simulate SCENARIO'), or try 'flowmon demo'")

_QUERY = """
SELECT src_subnet, dst_subnet, toUnixTimestamp(window_start) AS t, bytes, retransmissions, timeouts,
       rtt_sum_us / nullIf(rtt_count, 0) AS rtt_mean, rtt_p99_us
FROM flow_windows FINAL
WHERE (src_subnet, dst_subnet) IN (
    SELECT src_subnet, dst_subnet FROM flow_windows FINAL GROUP BY 1, 2 ORDER BY sum(bytes) DESC LIMIT {top:UInt32})
ORDER BY t
"""


def plot_windows(client: Any, out: Path, top: int = 8, title: str = "flowmon: 10-minute windows per subnet pair") -> Path:
    """Write a PNG with three panels (MB per window, retransmissions + timeouts, RTT mean/p99) for the
    ``top`` pairs by bytes; returns its path. :class:`~pipeline.errors.NoData` when no window has landed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.errors import NoData

    no_data = NoData("no windows in ClickHouse yet", hint=NO_DATA_HINT)
    if not client.command("SELECT count() FROM system.tables WHERE database = currentDatabase() "
                          "AND name = 'flow_windows'"):
        raise no_data
    rows = client.query(_QUERY, parameters={"top": top}).result_rows
    if not rows:
        raise no_data
    series: dict[str, dict[str, list]] = {}
    for src, dst, t, b, rt, to, mean, p99 in rows:
        s = series.setdefault(f"{src} → {dst}", {k: [] for k in ("t", "mb", "rt", "to", "mean", "p99")})
        s["t"].append(datetime.fromtimestamp(int(t), tz=timezone.utc))
        s["mb"].append(b / 1e6)
        s["rt"].append(rt)
        s["to"].append(to)
        s["mean"].append((mean or 0) / 1000)
        s["p99"].append(p99 / 1000)
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    for name, s in series.items():
        line = ax1.plot(s["t"], s["mb"], marker="o", ms=3, label=name)[0]
        ax2.plot(s["t"], s["rt"], marker="o", ms=3, color=line.get_color())
        ax2.plot(s["t"], s["to"], ls=":", color=line.get_color())
        ax3.plot(s["t"], s["mean"], marker="o", ms=3, color=line.get_color())
        ax3.plot(s["t"], s["p99"], ls="--", color=line.get_color(), alpha=0.6)
    ax1.set_ylabel("MB per window")
    ax2.set_ylabel("retransmissions\n(dotted: timeouts)")
    ax3.set_ylabel("RTT ms\n(dashed: p99)")
    ax3.set_xlabel("window start (UTC)")
    ax1.legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
