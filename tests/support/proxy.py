"""A TCP proxy on loopback that a test can cut: ``down()`` resets every open connection and every new one
until ``up()``; ``stall()`` answers nothing, on open connections or new ones, as a hung server or a network
partition does (no reset: a client learns only from its own timeout). Stands between a client and a server to
make the server unreachable without stopping it.

>>> import socket, threading, time
>>> srv = socket.create_server(("127.0.0.1", 0)); port = srv.getsockname()[1]
>>> def echo():
...     c, _ = srv.accept(); c.sendall(c.recv(10)); c.close()
>>> t = threading.Thread(target=echo, daemon=True); t.start()
>>> with TcpProxy("127.0.0.1", port) as p:
...     s = socket.create_connection(("127.0.0.1", p.port)); s.sendall(b"hi"); s.recv(10)
b'hi'

An idle connection (its pipe threads blocked reading) is reset by ``down()`` at once, not left half open:

>>> def hold():  # the server side: reads, and is reset in turn
...     c, _ = srv.accept()
...     try: c.recv(10)
...     except OSError: pass
>>> threading.Thread(target=hold, daemon=True).start()
>>> with TcpProxy("127.0.0.1", port) as p:
...     s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
...     while not p._open: time.sleep(0.01)
...     p.down(); s.recv(10)
Traceback (most recent call last):
ConnectionResetError: [Errno 104] Connection reset by peer
"""

from __future__ import annotations

import socket
import struct
import threading

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees 'connection reset', as when a server vanishes.

    ``shutdown(SHUT_RD)`` first: a pipe thread blocked in ``recv`` on the socket holds it open, so a bare
    ``close()`` would neither wake that thread nor send the RST. The connection would stay half alive, and a
    client waiting on it for a reply would wait out its whole read timeout (5 min for clickhouse_connect).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = True
        self._stalled = False
        self._held: list[socket.socket] = []  # connections accepted while stalled: never forwarded
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut: set[socket.socket] = set()  # reset by down() or up(): their pipes must not close them gently
        self.refused = 0  # connections reset while down
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def down(self) -> None:
        with self._lock:
            self._up = False
            socks, self._open = list(self._open), set()
            self._cut.update(socks)
        for s in socks:
            _reset(s)

    def stall(self) -> None:
        """From now on nothing is forwarded either way and new connections are accepted and held, unanswered."""
        with self._lock:
            self._stalled = True

    def up(self) -> None:
        """Forward again (after ``down()`` or ``stall()``). After a stall, every connection it touched is reset
        (what passed through it may have lost bytes); new ones are forwarded."""
        with self._lock:
            stale = self._held + (list(self._open) if self._stalled else [])
            self._up, self._stalled, self._held = True, False, []
            self._open.difference_update(stale)
            self._cut.update(stale)
        for s in stale:
            _reset(s)

    def close(self) -> None:
        self._closed = True
        self.up()  # resets the held connections
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up, stalled = self._up, self._stalled
                if stalled:
                    self._held.append(client)
            if stalled:
                continue
            if not up:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._stalled:  # stalled: swallowed, as by a partition
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.difference_update((src, dst))
                cut = src in self._cut or dst in self._cut
            if not cut:  # one side ended: end the other in order (a cut connection gets its reset, not a FIN first)
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
