"""Per-connection counters turned into per-interval deltas, each byte counted once.

Pure (no sockets): fed :class:`~pipeline.agent.sockdiag.Conn` records from polls
(:meth:`Ledger.poll`) and from destroy notifications (:meth:`Ledger.destroyed`), it keeps
the counters last accounted for each connection, keyed by the kernel's socket cookie
(never reused while the kernel runs, so a new connection on a reused 4-tuple starts from
zero), and accumulates what changed since into the open interval, per connection.
:meth:`Ledger.take` closes the interval and returns it.

Rules
-----
* A connection seen for the first time counts from zero (all its counters are new) —
  except in the very first poll of an agent that has no saved state
  (``baseline=True``): what moved before the agent ran belongs to no interval it
  reports, so those connections are taken as they are and only their changes count.
* A connection the kernel destroyed counts its final counters minus what was accounted,
  and is forgotten; its cookie is remembered for two more polls so that a dump that
  raced with the notification cannot bring it back.
* A connection missing from a poll keeps its accounted counters for two more polls
  (:data:`VANISHED_POLLS`): its notification may still come (it was destroyed after the
  poll read the notifications and before the dump), or a dump may have missed it once;
  either continues from what was accounted, never from zero (which would count its whole
  life again). A connection still unheard of after that (the notification buffer
  overflowed) is forgotten; its last changes are lost and counted in ``lost``.
* Counters never run backwards for one cookie; if one does (it cannot on Linux), the
  new value is taken as the base and nothing is counted.
* :meth:`state` / :meth:`Ledger.restore` carry the accounted counters across a restart
  of the agent: connections alive then continue from their saved counters, so neither a
  restart nor a re-poll counts anything twice.

Timeouts come from ``tcpi_total_rto`` (Linux ≥ 6.7). On older kernels (``total_rto``
None) they are estimated from ``tcpi_retransmits``, the RTO expiries in a row at the
moment of a poll: a rise between polls counts the rise. That under-counts (an episode
that starts and ends between polls is missed) and is marked ``timeouts_estimated``.

>>> from pipeline.agent.sockdiag import Conn, TcpInfo
>>> def c(cookie, acked, recv=0, retrans=0, rto=0, rtt=1000):
...     return Conn(cookie, "10.0.0.4", 40000, "10.0.1.4", 80, 1, 7,
...                 TcpInfo(rtt, 50, retrans, acked, recv, acked // 1448, 0, rto))
>>> led = Ledger(baseline=True)
>>> led.poll([c(1, 5_000)])            # there before the agent: a base, not traffic
>>> led.take()
{}
>>> led.poll([c(1, 8_000), c(2, 1_000)])
>>> led.destroyed([c(2, 3_000, retrans=2, rto=1)])   # closed between polls: final counters
>>> led.destroyed([c(3, 700)])                       # opened and closed between polls
>>> d = led.take()
>>> sorted((k, v.bytes_sent, v.retrans, v.timeouts) for k, v in d.items())
[(1, 3000, 0, 0), (2, 3000, 2, 1), (3, 700, 0, 0)]
>>> led.poll([c(1, 8_000), c(2, 3_000)])   # a dump that raced with 2's notification
>>> led.take()
{}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.agent.sockdiag import Conn

__all__ = ["Delta", "Ledger", "VANISHED_POLLS"]

#: Polls a connection missing from the dumps keeps its accounted counters (see the module doc).
VANISHED_POLLS = 2


@dataclass(slots=True)
class Delta:
    """What one connection did in the open interval."""

    remote: str
    rport: int
    local: str
    lport: int
    bytes_sent: int = 0
    bytes_received: int = 0
    retrans: int = 0
    timeouts: int = 0
    segs_out: int = 0
    rtt_us: list[int] = field(default_factory=list)
    rttvar_us: int = 0
    closed: bool = False

    @property
    def active(self) -> bool:
        """Moved data or retransmitted in the interval (an idle connection is not a flow of it)."""
        return bool(self.bytes_sent or self.bytes_received or self.retrans or self.timeouts)


#: the counters kept per connection: bytes_acked, bytes_received, total_retrans, timeouts, segs_out,
#: and tcpi_retransmits at the last look (for the timeout estimate of older kernels)
_Base = tuple[int, int, int, int, int, int]
_ZERO: _Base = (0, 0, 0, 0, 0, 0)


def _counters(conn: Conn, prev: _Base) -> _Base:
    i = conn.info
    if i.total_rto is not None:
        rto = i.total_rto
    else:  # estimate: the rises of the RTOs-in-a-row counter, accumulated
        rto = prev[3] + max(0, i.retransmits - prev[5])
    return (i.bytes_acked, i.bytes_received, i.total_retrans, rto, i.segs_out, i.retransmits)


class Ledger:
    """The accounted counters of every live connection, and the open interval's deltas."""

    def __init__(self, baseline: bool = False) -> None:
        self._base: dict[int, _Base] = {}
        self._open: dict[int, Delta] = {}
        self._gone: dict[int, int] = {}  # cookie -> polls left to ignore it
        self._vanished: dict[int, tuple[_Base, int]] = {}  # cookie -> (accounted counters, polls left to keep them)
        self._baseline = baseline
        self.lost = 0
        """Connections that vanished without a destroy notification (their last changes are lost)."""
        self.timeouts_estimated = False
        """True once a kernel without ``tcpi_total_rto`` was seen: timeouts are a lower bound."""

    def __len__(self) -> int:
        return len(self._base)

    def _account(self, conn: Conn, closed: bool) -> None:
        prev = self._base.get(conn.cookie)
        if conn.info.total_rto is None:
            self.timeouts_estimated = True
        if prev is None:  # new, or missing from a recent dump: then from what was accounted
            kept = self._vanished.pop(conn.cookie, None)
            prev = _ZERO if kept is None else kept[0]
        cur = _counters(conn, prev)
        diff = [c - p for c, p in zip(cur[:5], prev[:5])]
        if min(diff) < 0:  # cannot happen on Linux; never count a negative
            diff = [0] * 5
        d = self._open.get(conn.cookie)
        if d is None:
            d = self._open[conn.cookie] = Delta(conn.remote, conn.rport, conn.local, conn.lport)
        d.bytes_sent += diff[0]
        d.bytes_received += diff[1]
        d.retrans += diff[2]
        d.timeouts += diff[3]
        d.segs_out += diff[4]
        if conn.info.rtt_us > 0 and (diff[0] or diff[1] or diff[2]):
            d.rtt_us.append(conn.info.rtt_us)
            d.rttvar_us = conn.info.rttvar_us
        if closed:
            d.closed = True
            self._base.pop(conn.cookie, None)
            self._gone[conn.cookie] = 2
        else:
            self._base[conn.cookie] = cur

    def poll(self, conns: Iterable[Conn]) -> None:
        """Account a dump of the live connections."""
        seen: set[int] = set()
        first = self._baseline
        self._baseline = False
        for conn in conns:
            if conn.cookie in self._gone:
                continue
            seen.add(conn.cookie)
            if first:
                self._base[conn.cookie] = _counters(conn, _ZERO)
            else:
                self._account(conn, closed=False)
        for cookie, (base, left) in list(self._vanished.items()):
            if left <= 1:  # not heard of again: its last changes are lost
                del self._vanished[cookie]
                self.lost += 1
            else:
                self._vanished[cookie] = (base, left - 1)
        for cookie in [k for k in self._base if k not in seen]:
            self._vanished[cookie] = (self._base.pop(cookie), VANISHED_POLLS)
        for cookie in list(self._gone):
            self._gone[cookie] -= 1
            if self._gone[cookie] <= 0:
                del self._gone[cookie]

    def destroyed(self, conns: Iterable[Conn]) -> None:
        """Account connections the kernel destroyed (their final counters)."""
        for conn in conns:
            if conn.cookie in self._gone:
                continue
            self._account(conn, closed=True)

    def take(self) -> dict[int, Delta]:
        """Close the interval: the connections that were active in it (by cookie), and start a new one."""
        out = {k: d for k, d in self._open.items() if d.active}
        self._open = {}
        return out

    # --- across restarts ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The accounted counters, as JSON-able data (the open interval is not part of it)."""
        rows = [[k, *v] for k, v in self._base.items()] + [[k, *v] for k, (v, _) in self._vanished.items()]
        return {"base": rows, "lost": self.lost}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Ledger:
        """A ledger that continues from :meth:`state`: its connections count from their saved counters,
        connections unknown to it (opened while the agent was down) count from zero."""
        led = cls(baseline=False)
        led._base = {int(row[0]): tuple(int(x) for x in row[1:7]) for row in state.get("base", [])}  # type: ignore[misc]
        led.lost = int(state.get("lost", 0))
        return led
