"""The agent against the real kernel (this namespace's loopback): sock_diag counters, connections that open
and close between two polls, intervals that add up exactly, and a restart that counts nothing twice."""

from __future__ import annotations

import socket
import threading

import orjson

from pipeline.agent.host import HostAgent
from pipeline.agent.report import Identity
from pipeline.agent.scope import Scope
from pipeline.agent.sockdiag import SockDiag
from pipeline.agent.spool import Spool

SERVER, CLIENT = "127.0.0.77", "127.0.0.78"  # addresses only these tests use, so other loopback traffic never mixes in
ME = Identity("test-host", CLIENT, "s-test", "az-test", "vpc-test")


class Sink:
    """A server on SERVER that reads everything each connection sends, and replies ``reply`` bytes."""

    def __init__(self, reply: int = 0) -> None:
        self.sock = socket.create_server((SERVER, 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c: socket.socket) -> None:
        with c:
            try:
                while c.recv(1 << 16):
                    pass
                if self.reply:
                    c.sendall(b"r" * self.reply)
            except ConnectionResetError:  # a test that resets its connection
                pass

    def close(self) -> None:
        self.sock.close()


def send(port: int, n: int, close: bool = True, read_reply: bool = False) -> socket.socket:
    s = socket.create_connection((SERVER, port), source_address=(CLIENT, 0))
    s.sendall(b"x" * n)
    if close:
        s.shutdown(socket.SHUT_WR)
        if read_reply:
            while s.recv(1 << 16):
                pass
        s.close()
    return s


def agent(tmp_path, **kw) -> HostAgent:
    kernel = SockDiag()
    kernel.subscribe()
    return HostAgent(ME, kernel, Spool.open(tmp_path), Scope(include_loopback=True, exclude_own=False, **kw))


def mine(iv) -> dict[str, tuple[int, int, int]]:
    """Per remote (SERVER: the clients' sockets; CLIENT: the server's), (sent, received, flows)."""
    return {ip: (t.bytes_sent, t.bytes_received, t.flows) for ip, t in iv.totals.items() if ip in (SERVER, CLIENT)}


def settle(core: HostAgent) -> None:
    import time
    time.sleep(0.3)  # destroy notifications are sent from a kernel work queue
    core.on_destroyed()


def test_short_connections_between_polls_are_counted_exactly(tmp_path):
    srv = Sink(reply=2_000)
    core = agent(tmp_path)
    try:
        core.poll()
        for _ in range(5):  # five connections, each opened and closed between two polls
            send(srv.port, 1_000_000, read_reply=True)
        settle(core)
        iv = core.close_interval(1_764_000_000, 30)
        got = mine(iv)
        # payload exact; the kernel's byte counters also count the SYN and the FIN (one sequence number each)
        sent, received, flows = got[SERVER]
        assert 5 * 1_000_000 <= sent <= 5 * 1_000_002 and 5 * 2_000 <= received <= 5 * 2_001 and flows == 5
        sent, received, flows = got[CLIENT]
        assert 5 * 2_000 <= sent <= 5 * 2_001 and 5 * 1_000_000 <= received <= 5 * 1_000_001 and flows == 5
        report = orjson.loads(iv.messages[0])
        assert report["report_id"].endswith("-0.0") and report["instance"] == "test-host"
    finally:
        srv.close()
        core.kernel.close()


def test_a_long_connection_adds_up_over_intervals_and_across_a_restart(tmp_path):
    srv = Sink()
    core = agent(tmp_path)
    total = 0
    try:
        core.poll()
        s = send(srv.port, 300_000, close=False)
        total += 300_000
        settle(core)
        first = mine(core.close_interval(1_764_000_000, 30))[SERVER][0]
        s.sendall(b"y" * 200_000)
        total += 200_000
        settle(core)
        second = mine(core.close_interval(1_764_000_030, 30))[SERVER][0]
        core.kernel.close()
        # the agent restarts: a new process would open the same state directory
        again = agent(tmp_path)
        assert not again.spool.fresh and again.spool.next_seq == 2
        again.poll()
        s.sendall(b"z" * 100_000)
        total += 100_000
        s.shutdown(socket.SHUT_WR)
        s.close()
        settle(again)
        third = mine(again.close_interval(1_764_000_060, 30))[SERVER][0]
        again.kernel.close()
        assert first >= 300_000 and second == 200_000
        assert total <= first + second + third <= total + 2  # + SYN and FIN
    finally:
        srv.close()


def test_a_new_connection_on_a_reused_four_tuple_counts_from_zero(tmp_path):
    srv = Sink()
    core = agent(tmp_path)
    try:
        core.poll()
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        a.bind((CLIENT, 0))
        port = a.getsockname()[1]
        a.connect((SERVER, srv.port))
        a.sendall(b"a" * 50_000)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST: no TIME_WAIT
        import time
        time.sleep(0.1)
        core.poll()
        a.close()
        b = socket.socket()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        b.bind((CLIENT, port))  # the very same 4-tuple
        b.connect((SERVER, srv.port))
        b.sendall(b"b" * 70_000)
        time.sleep(0.1)
        settle(core)
        sent, _, flows = mine(core.close_interval(1_764_000_000, 30))[SERVER]
        assert 120_000 <= sent <= 120_002 and flows == 2
        b.close()
    finally:
        srv.close()
        core.kernel.close()


def test_the_agents_own_connections_are_left_out(tmp_path):
    # addresses of its own: the tests before it close their sockets as they end, and the kernel's destroy
    # notifications of those (other connections, no longer this process's) may still be on their way
    own_server, own_client = "127.0.0.79", "127.0.0.80"
    srv = socket.create_server((own_server, 0))
    kernel = SockDiag()
    kernel.subscribe()
    core = HostAgent(ME, kernel, Spool.open(tmp_path), Scope(include_loopback=True))  # this process = "the agent"
    try:
        core.poll()
        s = socket.create_connection(srv.getsockname(), source_address=(own_client, 0))
        c, _ = srv.accept()
        s.sendall(b"x" * 10_000)
        assert len(c.recv(1 << 16)) > 0
        settle(core)
        seen = core.close_interval(1_764_000_000, 30).totals
        assert not {own_server, own_client} & set(seen), seen
        s.close()
        c.close()
    finally:
        srv.close()
        kernel.close()
