"""The host agent's core: poll the kernel, account deltas, and close each interval into spooled reports.

No Kafka here (the shell, ``pipeline.runtime.agent``, sends the spool). :class:`HostAgent`
holds the pieces of ``pipeline.agent``: a :class:`~pipeline.agent.sockdiag.SockDiag` (or
anything with ``dump``/``events``), a :class:`~pipeline.agent.ledger.Ledger`, a
:class:`~pipeline.agent.scope.Scope`, and a :class:`~pipeline.agent.spool.Spool`.

* :meth:`HostAgent.on_destroyed` — the kernel's destroy notifications, as they arrive.
* :meth:`HostAgent.close_interval` — at each interval boundary (on the agent's own
  clock): read the notifications still queued, dump the live connections, take the
  interval's deltas, build the report(s), and spool them together with the counters
  accounted so far (one commit, see ``spool``).
* :meth:`HostAgent.snapshot` — what the host's open connections have done so far, per
  remote (``flowmon agent --once``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pipeline.agent.ledger import Ledger
from pipeline.agent.report import Identity, Place, RemoteTotals, build_reports, per_remote
from pipeline.agent.scope import Scope
from pipeline.agent.sockdiag import Conn
from pipeline.agent.spool import Spool

__all__ = ["HostAgent", "Interval", "Kernel"]

log = logging.getLogger("flowmon.agent")


class Kernel(Protocol):
    def dump(self) -> list[Conn]: ...
    def events(self) -> list[Conn]: ...


@dataclass(slots=True)
class Interval:
    """What closing one interval produced."""

    seq: int
    start: int
    interval_s: int
    messages: list[bytes]
    samples: int
    flows: int
    connections: int
    totals: dict[str, RemoteTotals] = field(default_factory=dict)


class HostAgent:
    """One host's agent state (see the module doc)."""

    def __init__(self, me: Identity, kernel: Kernel, spool: Spool, scope: Scope,
                 locate: Callable[[str], Place] | None = None, top_k: int = 100, max_bytes: int = 900_000) -> None:
        self.me = me
        self.kernel = kernel
        self.spool = spool
        self.scope = scope
        self.locate = locate
        self.top_k = top_k
        self.max_bytes = max_bytes
        if spool.fresh:
            self.ledger = Ledger(baseline=True)
        else:
            self.ledger = Ledger.restore(spool.ledger or {})
        self.reports = 0
        self.samples = 0

    def on_destroyed(self) -> int:
        """Account the destroy notifications that arrived; returns how many counted."""
        conns = self.kernel.events()
        mine = []
        for c in conns:
            if self.scope.counts(c):
                mine.append(c)
            self.scope.closed(c.cookie)
        self.ledger.destroyed(mine)
        return len(mine)

    def poll(self) -> None:
        """Account the live connections now (also done by :meth:`close_interval`)."""
        self.on_destroyed()
        self.scope.refresh()
        self.ledger.poll([c for c in self.kernel.dump() if self.scope.counts(c)])

    def close_interval(self, start: int, interval_s: int) -> Interval:
        """Close the interval [start, start + interval_s): spool its report(s) and the accounted counters."""
        self.poll()
        deltas = self.ledger.take()
        totals = per_remote(deltas.values())
        seq = self.spool.next_seq
        reports = build_reports(self.me, totals, start=start, interval_s=interval_s,
                                report_id=f"{self.spool.agent_id}-{seq}", locate=self.locate,
                                top_k=self.top_k, max_bytes=self.max_bytes)
        messages = [orjson.dumps(r) for r in reports]
        self.spool.commit(messages, self.ledger.state())
        n = sum(len(r["samples"]) for r in reports)
        self.reports += len(reports)
        self.samples += n
        return Interval(seq, start, interval_s, messages, n, sum(t.flows for t in totals.values()),
                        len(self.ledger), totals)

    def snapshot(self) -> dict[str, RemoteTotals]:
        """Per remote, the cumulative counters of the open connections (what they did since they opened)."""
        self.scope.refresh()
        out: dict[str, RemoteTotals] = {}
        for c in self.kernel.dump():
            if not self.scope.counts(c):
                continue
            t = out.get(c.remote)
            if t is None:
                t = out[c.remote] = RemoteTotals(c.remote)
            i = c.info
            t.flows += 1
            t.bytes_sent += i.bytes_acked
            t.bytes_received += i.bytes_received
            t.retrans += i.total_retrans
            t.timeouts += i.total_rto or 0
            t.segs_out += i.segs_out
            if i.rtt_us:
                t.rtt_us.append(i.rtt_us)
                t.rttvar_us.append(i.rttvar_us)
        return out

    def status(self) -> dict[str, Any]:
        files, size = self.spool.size()
        return {"connections": len(self.ledger), "reports": self.reports, "samples": self.samples,
                "spooled_files": files, "spooled_bytes": size, "dropped_files": self.spool.dropped_files,
                "lost_connections": self.ledger.lost, "timeouts_estimated": self.ledger.timeouts_estimated}
