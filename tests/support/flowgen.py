"""Steady TCP traffic for the namespace experiments: ``sink`` accepts connections and discards what they send;
``source`` keeps one connection per destination sending at a fixed rate (reconnecting if one fails) until killed.

    python -m tests.support.flowgen sink 10.71.0.4 7000
    python -m tests.support.flowgen source 500000 10.71.0.4:7000 10.71.2.4:7000    # bytes/s per destination
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time

CHUNK = 16 * 1024


def sink(ip: str, port: int) -> None:
    srv = socket.create_server((ip, port), backlog=64)

    def drain(c: socket.socket) -> None:
        with c:
            try:
                while c.recv(1 << 16):
                    pass
            except OSError:
                pass

    while True:
        c, _ = srv.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()


def _stream(dest: str, rate: float) -> None:
    host, port = dest.rsplit(":", 1)
    data = b"s" * CHUNK
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.settimeout(None)
                t0 = time.monotonic()
                sent = 0
                while True:
                    s.sendall(data)
                    sent += CHUNK
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            time.sleep(0.5)


def source(rate: float, dests: list[str]) -> None:
    for d in dests:
        threading.Thread(target=_stream, args=(d, rate), daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    if sys.argv[1] == "sink":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        sink(sys.argv[2], int(sys.argv[3]))
    else:
        source(float(sys.argv[2]), sys.argv[3:])
