"""What every ``flowmon`` command shares: the console (stderr), the ``--broker`` option, the settings
with the command line's overrides, and the broker to talk to."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from pipeline.config import Settings, parse_bootstrap

__all__ = ["console", "BrokerOpt", "make_settings", "resolve_bootstrap", "live_embedded", "check_broker",
           "check_scenario"]

console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

BrokerOpt = Annotated[Optional[str], typer.Option("--broker", "-b", help="Bootstrap 'host:port' or 'embedded'.")]

#: seconds :func:`check_broker` waits for a broker's port to accept a connection
BROKER_TIMEOUT_S = 10.0
SECURITY_HINT = ("check FLOWMON_KAFKA_SECURITY_PROTOCOL, FLOWMON_KAFKA_SASL_USERNAME / _PASSWORD / _MECHANISM, "
                 "FLOWMON_KAFKA_SSL_* and the broker's ACLs for this user")


def broker_hint(why: str) -> str:
    """The hint for a broker failure: the security settings when the broker refused us, else where the broker is.

    >>> broker_hint("authentication failed as 'agent' (SCRAM-SHA-512): ...").startswith("check FLOWMON_KAFKA")
    True
    """
    refused = ("authentication failed", "not authorized", "TLS handshake failed")
    return SECURITY_HINT if any(r in why for r in refused) else BROKER_HINT


BROKER_HINT = ("point --broker (or FLOWMON_BROKER) at a running Kafka broker, host:port, or use the bundled one: "
               "'embedded' (the default), which 'flowmon worker' and 'flowmon demo --follow' start")


def make_settings(**overrides: Any) -> Settings:
    """The configuration (``FLOWMON_*`` and defaults) with the options given on the command line (``None``: not given).
    A bad value is a :class:`~pipeline.errors.ConfigError` naming its option or variable.

    >>> make_settings(broker="127.0.0.1:9092", roles=None).broker
    '127.0.0.1:9092'
    >>> make_settings(broker="localhost")
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: --broker='localhost': expected host:port, e.g. 127.0.0.1:9092 (or 'embedded'; several brokers: host:port,host:port)
    """
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        from pipeline.cli.errors import settings_error
        raise settings_error(exc, given) from exc


def live_embedded(data_dir: Path) -> dict[str, Any] | None:
    """The embedded broker a running ``flowmon worker`` / ``demo`` started on ``data_dir`` (its ``broker.json``:
    ``bootstrap``, ``pid``), or None when there is none or it is gone (its process dead, its port closed)."""
    try:
        info = json.loads((data_dir / "broker.json").read_text())
        os.kill(int(info["pid"]), 0)
        host, port = parse_bootstrap(info["bootstrap"])[0]
        with socket.create_connection((host, port), timeout=2.0):
            return dict(info)
    except PermissionError:
        return dict(info)  # alive, another user's
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_broker(bootstrap: str, timeout_s: float = BROKER_TIMEOUT_S) -> None:
    """Return once one of ``bootstrap``'s brokers accepts a TCP connection; else raise
    :class:`~pipeline.errors.BrokerUnavailable` naming them and why, within about ``timeout_s`` seconds."""
    import time

    from pipeline.errors import BrokerUnavailable
    end = time.monotonic() + timeout_s
    reasons = []
    for host, port in parse_bootstrap(bootstrap):
        try:
            with socket.create_connection((host, port), timeout=max(0.5, min(5.0, end - time.monotonic()))):
                return
        except socket.gaierror:
            reasons.append(f"{host}: unknown host")
        except TimeoutError:
            reasons.append(f"{host}:{port}: no answer")
        except OSError as e:
            reasons.append(f"{host}:{port}: {(e.strerror or str(e)).lower()}")
    raise BrokerUnavailable(f"no Kafka broker answers at {bootstrap} ({'; '.join(reasons)})", hint=BROKER_HINT)


def resolve_bootstrap(s: Settings, check: bool = True) -> str:
    """The broker to talk to: FLOWMON_BROKER, or the live embedded broker a demo/worker started; with ``check``,
    one that accepts connections (else :class:`~pipeline.errors.BrokerUnavailable`, within 10 s)."""
    from pipeline.errors import BrokerUnavailable
    if s.broker != "embedded":
        if check:
            check_broker(s.broker)
        return s.broker
    info = live_embedded(s.data_dir)
    if info is not None:
        return str(info["bootstrap"])
    raise BrokerUnavailable(f"no broker: FLOWMON_BROKER is 'embedded' and no embedded broker runs for {s.data_dir}",
                            hint=BROKER_HINT)


def check_scenario(scenario: Path, duration: str) -> None:
    """Refuse a scenario file that cannot be read or is invalid, and a bad ``--duration``, before any work
    (:class:`~pipeline.errors.InputError`)."""
    from pipeline.errors import InputError
    from pipeline.sim.scenario import load_scenario, parse_duration
    try:
        parse_duration(duration)
    except ValueError as e:
        raise InputError(f"--duration: {e}") from e
    try:
        load_scenario(scenario)
    except (OSError, ValueError) as e:
        raise InputError(str(e), hint="fix the scenario file (its format: the README, 'The scenario format')") from e
