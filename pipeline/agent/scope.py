"""Which connections the agent counts.

Not counted: loopback (unless ``include_loopback``), connections whose remote address is
in one of the ``exclude`` CIDRs (e.g. a management network), and the agent's own
connections (to the broker): those are recognised by socket inode — the kernel reports
each socket's inode, and the agent's own are the ``socket:[inode]`` links in
``/proc/self/fd`` — and then by cookie, since a destroyed socket's notification no longer
carries its inode. Listening sockets never reach here (the dump leaves them out).

>>> from pipeline.agent.sockdiag import Conn, TcpInfo
>>> info = TcpInfo(0, 0, 0, 0, 0, 0, 0, 0)
>>> s = Scope(exclude=["10.254.0.0/24"], own_inodes=lambda: {42})
>>> s.refresh()
>>> [s.counts(Conn(1, "10.0.0.4", 5, r, 80, 1, ino, info)) for r, ino in
...  [("10.0.1.4", 7), ("127.0.0.1", 8), ("10.254.0.1", 9), ("10.0.1.4", 42)]]
[True, False, False, False]
>>> s.counts(Conn(1, "10.0.0.4", 5, "10.0.1.4", 80, 7, 0, info))   # cookie 1 was seen as our own
False
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable

from pipeline.agent.sockdiag import Conn

__all__ = ["Scope", "own_socket_inodes"]


def own_socket_inodes(pid: int | str = "self") -> set[int]:
    """Inodes of the sockets this process holds (``/proc/<pid>/fd`` links ``socket:[N]``)."""
    out: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


class Scope:
    """Decides, per connection, whether it is the host's traffic to report."""

    def __init__(self, exclude: Iterable[str] = (), include_loopback: bool = False, exclude_own: bool = True,
                 own_inodes: Callable[[], set[int]] = own_socket_inodes) -> None:
        self.exclude = tuple(ipaddress.ip_network(c, strict=False) for c in exclude)
        self.include_loopback = include_loopback
        self.exclude_own = exclude_own
        self._own_inodes_of = own_inodes
        self._own_inodes: set[int] = set()
        self._own_cookies: set[int] = set()
        self._verdict: dict[str, bool] = {}

    def refresh(self) -> None:
        """Re-read the agent's own sockets (call before each poll)."""
        if self.exclude_own:
            self._own_inodes = self._own_inodes_of()

    def _remote_counts(self, ip: str) -> bool:
        v = self._verdict.get(ip)
        if v is None:
            addr = ipaddress.ip_address(ip)
            v = not ((addr.is_loopback and not self.include_loopback) or any(addr in n for n in self.exclude))
            if len(self._verdict) > 100_000:
                self._verdict.clear()
            self._verdict[ip] = v
        return v

    def counts(self, conn: Conn) -> bool:
        if not self._remote_counts(conn.remote):
            return False
        if self.exclude_own:
            if conn.cookie in self._own_cookies:
                return False
            if conn.inode and conn.inode in self._own_inodes:
                self._own_cookies.add(conn.cookie)
                return False
        return True

    def closed(self, cookie: int) -> None:
        """Forget a destroyed connection's cookie."""
        self._own_cookies.discard(cookie)
