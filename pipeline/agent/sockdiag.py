"""Read the kernel's TCP counters through netlink ``sock_diag``: a dump of every connection, and
the final counters of each connection the kernel destroys.

No library and no compiler: a ``NETLINK_SOCK_DIAG`` socket from Python's own ``socket``
module, requests and answers packed with ``struct``. The wire format is small and stable
(``linux/inet_diag.h``, ``linux/tcp.h``); pyroute2's ``DiagSocket`` covers the dump but
parses ``tcp_info`` only up to ``tcpi_snd_wnd`` (no ``tcpi_total_rto``) and has no API for
the destroy notifications, and this module is ~250 lines with nothing to install.

* :meth:`SockDiag.dump` asks for every TCP socket of the current network namespace (IPv4
  and IPv6) except listeners (``idiag_states``), with ``INET_DIAG_INFO`` (the kernel's
  ``struct tcp_info``), and returns :class:`Conn` records.
* :meth:`SockDiag.subscribe` binds a second socket to the multicast groups
  ``SKNLGRP_INET_TCP_DESTROY`` and ``SKNLGRP_INET6_TCP_DESTROY`` (what ``ss -E`` uses):
  the kernel sends one message per TCP socket it frees, with its final ``tcp_info``, so
  a connection that opened and closed between two polls is still counted. Needs
  ``CAP_NET_ADMIN`` (root). :meth:`SockDiag.events` reads what has arrived, without
  blocking; if the socket buffer overflowed, ``overflows`` counts it (the kernel drops
  messages then: their connections' last counters are lost, and the agent says so).

``tcp_info`` fields read (offsets of ``struct tcp_info``, checked against the length
the kernel returns; a shorter, older layout leaves the missing fields ``None``):
``tcpi_rtt``/``tcpi_rttvar`` (µs), ``tcpi_total_retrans``, ``tcpi_bytes_acked``,
``tcpi_bytes_received``, ``tcpi_segs_out``, ``tcpi_retransmits`` (RTOs in a row now),
and ``tcpi_total_rto`` (Linux ≥ 6.7: RTO expiries over the connection's life).

The socket's *cookie* (``idiag_cookie``) identifies it: the kernel never gives two sockets
the same cookie while it runs, so a new connection on a reused 4-tuple is a new cookie.

>>> info = bytes(280)
>>> t = parse_tcp_info(info)
>>> (t.bytes_acked, t.total_rto, t.rtt_us)
(0, 0, 0)
>>> parse_tcp_info(info[:232]).total_rto is None   # a kernel older than 6.7
True
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Conn", "TcpInfo", "SockDiag", "SockDiagError", "parse_tcp_info", "parse_message"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
INET_DIAG_INFO = 2
SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET6_TCP_DESTROY = 3
TCP_SYN_RECV, TCP_TIME_WAIT, TCP_LISTEN = 3, 6, 10
#: every TCP state but LISTEN (listeners carry no traffic of their own), TIME_WAIT and SYN_RECV
#: (mini-sockets without tcp_info: a busy host has thousands, and the dump would only carry them)
STATES = 0xFFFFFFFF & ~(1 << TCP_LISTEN) & ~(1 << TCP_TIME_WAIT) & ~(1 << TCP_SYN_RECV)

_NLMSG = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states; then the 48-byte sockid
_MSG = struct.Struct("=BBBB")  # family, state, timer, retrans
_PORTS = struct.Struct(">HH")
_COOKIE = struct.Struct("=Q")  # two u32 in host order, read as one u64 key (the kernel writes both halves)
_INODE = struct.Struct("=I")
_RTA = struct.Struct("=HH")
_MSG_LEN = 72  # sizeof(struct inet_diag_msg)


class TcpInfo(NamedTuple):
    """The counters of one connection that the agent uses (``struct tcp_info``)."""

    rtt_us: int
    rttvar_us: int
    total_retrans: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    retransmits: int
    """RTO expiries in a row right now (``tcpi_retransmits``; 0 when the connection is well)."""
    total_rto: int | None
    """RTO expiries over the connection's life (Linux ≥ 6.7), else None."""


def parse_tcp_info(b: bytes) -> TcpInfo:
    """The fields of a ``struct tcp_info`` of any length the kernel returned (≥ 160 bytes:
    Linux ≥ 4.6; older kernels lack bytes_received and are refused by :class:`SockDiag`)."""
    n = len(b)
    return TcpInfo(
        rtt_us=struct.unpack_from("=I", b, 68)[0],
        rttvar_us=struct.unpack_from("=I", b, 72)[0],
        total_retrans=struct.unpack_from("=I", b, 100)[0],
        bytes_acked=struct.unpack_from("=Q", b, 120)[0],
        bytes_received=struct.unpack_from("=Q", b, 128)[0],
        segs_out=struct.unpack_from("=I", b, 136)[0],
        retransmits=b[2],
        total_rto=struct.unpack_from("=H", b, 240)[0] if n >= 242 else None,
    )


class Conn(NamedTuple):
    """One TCP connection as the kernel described it."""

    cookie: int
    local: str
    lport: int
    remote: str
    rport: int
    state: int
    inode: int
    info: TcpInfo


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    ip = ipaddress.IPv6Address(raw[:16])
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else str(ip)  # a dual-stack socket talking IPv4


def parse_message(body: bytes) -> Conn | None:
    """A :class:`Conn` from one ``inet_diag_msg`` with its attributes; None when it carries no
    ``tcp_info`` (a TIME_WAIT or SYN_RECV mini-socket)."""
    if len(body) < _MSG_LEN:
        return None
    family, state, _timer, _retrans = _MSG.unpack_from(body, 0)
    sport, dport = _PORTS.unpack_from(body, 4)
    info = None
    off = _MSG_LEN
    while off + 4 <= len(body):
        alen, atype = _RTA.unpack_from(body, off)
        if alen < 4:
            break
        if atype == INET_DIAG_INFO:
            info = body[off + 4 : off + alen]
        off += (alen + 3) & ~3
    if info is None or len(info) < 144:
        return None
    return Conn(
        cookie=_COOKIE.unpack_from(body, 44)[0],
        local=_addr(family, body[8:24]),
        lport=sport,
        remote=_addr(family, body[24:40]),
        rport=dport,
        state=state,
        inode=_INODE.unpack_from(body, 68)[0],
        info=parse_tcp_info(info),
    )


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + _NLMSG.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            break
        yield mtype, data[off + _NLMSG.size : off + length]
        off += (length + 3) & ~3


class SockDiagError(OSError):
    """The kernel refused a sock_diag request (e.g. no netlink sock_diag, no privilege)."""


class SockDiag:
    """Netlink sock_diag sockets of the current network namespace (close with :meth:`close`)."""

    def __init__(self, rcvbuf: int = 8 << 20) -> None:
        self._dump = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self._events: socket.socket | None = None
        self._rcvbuf = rcvbuf
        self._seq = 0
        self.overflows = 0
        """Times the destroy-notification buffer overflowed (messages the kernel dropped)."""

    def dump(self) -> list[Conn]:
        """Every TCP connection (IPv4 and IPv6, all states but LISTEN) with its ``tcp_info``."""
        out: list[Conn] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            out.extend(self._dump_family(family))
        return out

    def _dump_family(self, family: int) -> Iterator[Conn]:
        self._seq += 1
        req = _REQ.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0, STATES) + bytes(48)
        self._dump.send(_NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                                    self._seq, 0) + req)
        while True:
            data = self._dump.recv(1 << 20)
            for mtype, body in _messages(data):
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, 0)[0]
                    if code == 0:
                        continue
                    if code == errno.ENOENT and family == socket.AF_INET6:
                        return  # no IPv6 in this kernel/namespace
                    raise SockDiagError(code, f"sock_diag dump refused: {os.strerror(code)}")
                if mtype == SOCK_DIAG_BY_FAMILY:
                    conn = parse_message(body)
                    if conn is not None:
                        yield conn

    def subscribe(self) -> socket.socket:
        """Join the TCP destroy-notification groups; returns the (non-blocking) socket to watch.

        Raises ``PermissionError`` without CAP_NET_ADMIN.
        """
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_SOCK_DIAG)
        try:
            try:
                s.setsockopt(socket.SOL_SOCKET, 33, self._rcvbuf)  # SO_RCVBUFFORCE (root), beyond rmem_max
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            groups = (1 << (SKNLGRP_INET_TCP_DESTROY - 1)) | (1 << (SKNLGRP_INET6_TCP_DESTROY - 1))
            s.bind((0, groups))
        except BaseException:
            s.close()
            raise
        self._events = s
        return s

    def events(self) -> list[Conn]:
        """The destroyed connections notified since the last call (never blocks)."""
        out: list[Conn] = []
        s = self._events
        if s is None:
            return out
        while True:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overflows += 1
                    continue
                raise
            for mtype, body in _messages(data):
                if mtype == SOCK_DIAG_BY_FAMILY:
                    conn = parse_message(body)
                    if conn is not None:
                        out.append(conn)

    def close(self) -> None:
        self._dump.close()
        if self._events is not None:
            self._events.close()
            self._events = None
