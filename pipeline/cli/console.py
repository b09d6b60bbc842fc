"""``flowmon console``: serve the read-only web console over flowmon's ClickHouse."""

from __future__ import annotations

import os
import socket
import time
from typing import Annotated, Any, Optional

import typer

from pipeline.cli.options import console, make_settings
from pipeline.config import Settings

__all__ = ["console_command", "ClientSource"]


class ClientSource:
    """The ClickHouse client the console reads through, re-resolved when the worker comes or goes: the
    running worker's read-only SQL endpoint when there is one, else the DSN (chdb directly, or a server)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._key: Any = None
        self._client: Any = None
        self.where = ""

    def _stamp(self) -> Any:
        try:
            st = (self.s.data_dir / "sql-endpoint.json").stat()
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def reset(self) -> None:
        """Forget the client (a query failed: the worker may have stopped or moved); the next call re-resolves."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - the old endpoint may be gone
                pass
        self._client, self._key = None, None

    def __call__(self) -> Any:
        from pipeline.clickhouse.client import connect, is_chdb
        chdb = is_chdb(self.s.clickhouse_dsn)
        stamp = self._stamp() if chdb else None
        if self._client is not None and self._key == stamp:
            return self._client
        self.reset()
        info = None
        if chdb and stamp is not None:
            from pipeline.clickhouse.sqlserve import read_address_file
            info = read_address_file(self.s.data_dir / "sql-endpoint.json")
        if info is not None:
            from pipeline.clickhouse.sqlserve import endpoint_client
            self._client = endpoint_client(info)
            self.where = f"the worker's SQL endpoint {info.get('url')}"
        elif chdb:
            from pipeline.cli.query import _client
            self._client = _client(self.s)
            self.where = self.s.clickhouse_dsn
        else:
            self._client = connect(self.s.clickhouse_url())
            self.where = self.s.clickhouse_url().split("@")[-1]
        self._key = stamp
        return self._client


def _free(host: str, port: int) -> int:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            from pipeline.errors import InUse
            raise InUse(f"cannot listen on {host}:{port}: {e.strerror}",
                        hint="another console may run there: use --port (or FLOWMON_CONSOLE_PORT), or --port 0") from None
        return sock.getsockname()[1]


def console_command(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [FLOWMON_CONSOLE_HOST, default 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [FLOWMON_CONSOLE_PORT, default 8050; 0 = any free]")] = None,
) -> None:
    """Serve the web console (read-only): AZ health, workload insights, monitors, alerts with their evidence."""
    import logging

    os.environ["TZ"] = "UTC"  # an in-process chdb engine then reads and writes DateTime in UTC
    time.tzset()
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # a failure is said once: one line, or a page
    import uvicorn

    from pipeline.console.app import create_app

    s = make_settings(console_host=host, console_port=port)
    source = ClientSource(s)
    source()  # fail now, in one line, when there is no data or ClickHouse does not answer
    bound = _free(s.console_host, s.console_port)
    console.print(f"flowmon console on http://{s.console_host}:{bound}/ reading {source.where} (Ctrl-C stops it)")
    if source.where == s.clickhouse_dsn and s.clickhouse_dsn.startswith("chdb://"):
        console.print("[yellow]note:[/] no worker runs on this data directory, so the console holds its chdb engine; "
                      "stop the console before starting a worker here")
    uvicorn.run(create_app(source, where=source.where), host=s.console_host, port=bound, log_level="warning",
                access_log=False)
