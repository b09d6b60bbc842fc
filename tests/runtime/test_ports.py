"""``free_port``: a port for a server that binds it later, which no outgoing connection can take meanwhile."""

from __future__ import annotations

import socket

from pipeline.runtime import brokers
from pipeline.runtime.brokers import ephemeral_ports, free_port


def test_the_port_is_below_the_ephemeral_range_and_never_one_a_connection_holds():
    lo, _ = ephemeral_ports()
    with socket.create_server(("127.0.0.1", 0)) as server:
        clients = [socket.create_connection(server.getsockname()) for _ in range(50)]
        try:
            held = {c.getsockname()[1] for c in clients}
            assert all(p >= lo for p in held)  # outgoing connections take ephemeral ports ...
            picked = {free_port() for _ in range(50)}
            assert not picked & held and all(1024 <= p < lo for p in picked)  # ... and never these
            for p in picked:  # each is free: a server can bind it
                with socket.create_server(("127.0.0.1", p)):
                    pass
        finally:
            for c in clients:
                c.close()


def test_a_port_in_use_is_not_picked_and_no_room_below_falls_back(monkeypatch):
    lo, _ = ephemeral_ports()
    with socket.create_server(("127.0.0.1", lo - 1)) as taken:  # the only port below the range ...
        monkeypatch.setattr(brokers, "ephemeral_ports", lambda: (lo, 65535))
        monkeypatch.setattr(brokers, "random", _Offers(lo - 1))
        assert free_port() != taken.getsockname()[1]  # ... is in use: bind(0) decides
    monkeypatch.setattr(brokers, "ephemeral_ports", lambda: (1024, 65535))  # nothing below the range
    assert 1024 <= free_port() < 65536


class _Offers:
    """``random`` whose ``sample`` offers one port only."""

    def __init__(self, port: int) -> None:
        self.port = port

    def sample(self, population, k):
        return [self.port]
