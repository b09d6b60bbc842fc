"""The one place where a failing ``flowmon`` command becomes one readable line and an exit status.

:func:`as_flowmon_error` turns what a command raised — a :class:`~pipeline.errors.FlowmonError`, or
an error of a library underneath (Kafka, ClickHouse, pydantic settings, YAML, a file, the
command-line parser) — into a ``FlowmonError``; :func:`report` prints it as
``error: <what>. <how to fix>`` on stderr (the traceback first with ``flowmon --debug``) and
returns the exit status. Library modules are looked up in ``sys.modules``: a library that was
never imported cannot have raised, and is not imported here just to be compared against.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import click

from pipeline.errors import (BrokerUnavailable, ClickHouseFailed, ConfigError, FlowmonError, InputError, UsageError,
                             MAX_LINE, first_line, one_line)

__all__ = ["as_flowmon_error", "click_errors", "report", "settings_error", "warn"]

DEBUG_HINT = "run again as 'flowmon --debug ...' to see the traceback"


def settings_error(exc: Any, options: Iterable[str] = ()) -> ConfigError:
    """A pydantic ``ValidationError`` of :class:`~pipeline.config.Settings` as one :class:`ConfigError` naming
    where each bad value came from: the command-line option for a field in ``options`` (given on the
    command line), else its ``FLOWMON_*`` variable.

    >>> from pipeline.config import Settings
    >>> try:
    ...     Settings(window_s="abc")
    ... except Exception as exc:
    ...     print(settings_error(exc, ()).line())
    FLOWMON_WINDOW_S='abc': input should be a valid integer, unable to parse string as an integer. Fix or unset \
FLOWMON_WINDOW_S ('flowmon config dump' shows every setting, 'flowmon config check' checks them).
    """
    options = set(options)
    problems, names = [], []
    for e in exc.errors():
        field = str(e["loc"][0]) if e.get("loc") else "?"
        name = f"--{field.replace('_', '-')}" if field in options else f"FLOWMON_{field.upper()}"
        msg = str(e.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
        given = e.get("input")
        msg = msg.removeprefix(f"{given!r}: ")
        problems.append(f"{name}={given!r}: {msg}" if isinstance(given, str | int | float) else f"{name}: {msg}")
        names.append(name)
    fix = " and ".join(dict.fromkeys(names))
    hint = (f"fix {fix} (see --help)" if all(n.startswith("--") for n in names) else
            f"fix or unset {fix} ('flowmon config dump' shows every setting, 'flowmon config check' checks them)")
    return ConfigError("; ".join(problems), hint=hint)


def _mod(name: str) -> Any:
    return sys.modules.get(name)


def click_errors(name: str) -> tuple[type[BaseException], ...]:
    """The exception class ``name`` of click, of the copy of click typer carries (``typer._click``) and of typer.

    >>> import typer
    >>> issubclass(typer.BadParameter, click_errors("ClickException")), issubclass(typer.Abort, click_errors("Abort"))
    (True, True)
    """
    mods = (_mod("click.exceptions"), _mod("typer._click.exceptions"), _mod("typer.exceptions"))
    return tuple(getattr(m, name) for m in mods if m is not None and hasattr(m, name))


def as_flowmon_error(exc: BaseException) -> FlowmonError:
    """What ``exc`` means to the user, as a :class:`FlowmonError` (an unknown exception: exit status 1,
    a hint to rerun with ``--debug``).

    >>> as_flowmon_error(FileNotFoundError(2, "No such file or directory", "reports.jsonl")).line()
    'reports.jsonl: no such file or directory. Check the path.'
    >>> as_flowmon_error(KeyError("x")).exit_code
    1
    """
    if isinstance(exc, FlowmonError):
        return exc
    if isinstance(exc, click_errors("ClickException")):
        ctx = getattr(exc, "ctx", None)
        err = UsageError(exc.format_message(),
                         hint=f"see '{ctx.command_path} --help'" if ctx is not None else "see 'flowmon --help'")
        err.exit_code = exc.exit_code
        return err
    if isinstance(exc, click_errors("Abort")):
        return FlowmonError("aborted")
    pyd = _mod("pydantic")
    if pyd is not None and isinstance(exc, pyd.ValidationError) and exc.title == "Settings":
        return settings_error(exc)
    yaml = _mod("yaml")
    if yaml is not None and isinstance(exc, yaml.YAMLError):
        return InputError(f"invalid YAML: {exc}", hint="fix the file")
    brokers = _mod("pipeline.runtime.brokers")
    if brokers is not None and isinstance(exc, brokers.BrokerError):
        return BrokerUnavailable(f"embedded broker: {first_line(exc, MAX_LINE)}",
                                 hint="see its log in the data directory, or use a running broker (--broker host:port)")
    kafka_errors = _mod("aiokafka.errors")
    if kafka_errors is not None and isinstance(exc, kafka_errors.KafkaError):
        what = "cannot reach the Kafka broker" if isinstance(exc, kafka_errors.KafkaConnectionError) else "Kafka failed"
        return BrokerUnavailable(f"{what}: {one_line(str(exc)) or type(exc).__name__}",
                                 hint="check --broker / FLOWMON_BROKER and that the broker is up")
    ch = _mod("clickhouse_connect.driver.exceptions")
    if ch is not None and isinstance(exc, ch.ClickHouseError):
        if isinstance(exc, ch.OperationalError):
            return ClickHouseFailed(f"cannot reach ClickHouse: {_clickhouse_message(exc)}",
                                    hint="check FLOWMON_CLICKHOUSE_DSN and that the server is up")
        return ClickHouseFailed(f"ClickHouse: {_clickhouse_message(exc)}", hint="check the query and the tables "
                                "('flowmon sql \"SHOW TABLES\"')")
    if isinstance(exc, OSError) and exc.filename is not None and exc.errno in (errno.ENOENT, errno.EACCES,
                                                                                  errno.EISDIR, errno.ENOTDIR):
        what = (exc.strerror or str(exc)).lower()
        return InputError(f"{exc.filename}: {what}", hint="check the path")
    if isinstance(exc, TimeoutError):
        return FlowmonError(f"timed out: {exc or 'no answer'}",
                            hint="check that the broker (--broker / FLOWMON_BROKER) and ClickHouse are up; " + DEBUG_HINT)
    message = f"unexpected {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    return FlowmonError(message, hint=f"this is a bug: {DEBUG_HINT}, and report it")


def _clickhouse_message(exc: BaseException) -> str:
    """ClickHouse's own message without the query it echoes (``In scope SELECT ...``).

    >>> _clickhouse_message(Exception("Code: 60. DB::Exception: Unknown table 'x'. In scope SELECT 1. (UNKNOWN_TABLE)"))
    "Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)"
    """
    s = one_line(str(exc), limit=10_000)
    head, sep, tail = s.partition(" In scope ")
    if sep and "(" in tail:
        s = f"{head} {tail[tail.rfind('('):]}"
    return one_line(s)


def report(exc: BaseException, debug: bool = False) -> int:
    """Print ``exc`` as one ``error:`` line on stderr (after its traceback when ``debug``); return the exit status."""
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:  # stdout closed early (| head): not an error
        return 1
    if isinstance(exc, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        return 130
    err = as_flowmon_error(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"{click.style('error:', fg='red', bold=True)} {err.line()}", err=True)
    return err.exit_code


def warn(message: str) -> None:
    """One ``warning:`` line on stderr."""
    click.echo(f"{click.style('warning:', fg='yellow', bold=True)} {one_line(message)}", err=True)
