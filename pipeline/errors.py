"""What can go wrong that a person can fix: one exception family, each kind with its exit status.

A :class:`FlowmonError` carries what is wrong (its message) and how to fix it (``hint``). The
``flowmon`` command prints it as one line, ``error: <what>. <how to fix>``, and exits with
the kind's ``exit_code`` (the README's table is :func:`exit_status_table`); ``flowmon --debug``
adds the traceback. Errors of the libraries underneath (Kafka, ClickHouse, pydantic, YAML,
files) are turned into these kinds in one place, ``pipeline.cli.errors``.

Examples
--------
>>> e = BrokerUnavailable("no Kafka broker answers at 127.0.0.1:1 (connection refused)",
...                       hint="start one, or set --broker / FLOWMON_BROKER")
>>> e.line(), e.exit_code
('no Kafka broker answers at 127.0.0.1:1 (connection refused). Start one, or set --broker / FLOWMON_BROKER.', 3)
>>> InputError("scenario x.yaml: cannot read:\\n  No such file").line()
'scenario x.yaml: cannot read: No such file.'
"""

from __future__ import annotations

__all__ = ["FlowmonError", "UsageError", "ConfigError", "InputError", "BrokerUnavailable", "ClickHouseFailed",
           "NoData", "InUse", "NotPermitted", "STOP_TIMED_OUT", "WRITE_FAILED", "EXIT_STATUSES", "exit_status_table", "one_line", "first_line"]

#: The longest line an error prints (library messages may echo whole queries).
MAX_LINE = 400


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` with its whitespace (newlines too) collapsed, cut at ``limit`` characters.

    >>> one_line("a\\n   b  c")
    'a b c'
    >>> one_line("x" * 10, limit=5)
    'xxxx…'
    """
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), for a one-line log entry.

    >>> first_line(ValueError("bad offset\\nTraceback of the broker ..."))
    'bad offset'
    >>> first_line(TimeoutError()), first_line(OSError("x" * 500))[-3:], len(first_line(OSError("x" * 500)))
    ('TimeoutError', 'xxx', 300)
    """
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


class FlowmonError(Exception):
    """Something the user can fix; ``str()`` says what, ``hint`` how."""

    exit_code = 1
    #: the kind, as the exit-status table names it
    kind = ("the command ran but did not succeed (demo: not every window landed; alerts: a webhook delivery failed), "
            "or an unexpected error (a bug: run with --debug and report it)")
    hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def line(self) -> str:
        """What is wrong, then how to fix it: one line, each part ending in a full stop."""
        parts = [one_line(str(self)).rstrip(". "), one_line(self.hint).rstrip(". ")]
        return " ".join(p[:1].upper() + p[1:] + "." if i else p + "." for i, p in enumerate(parts) if p)


class UsageError(FlowmonError):
    """A bad option, argument or setting."""

    exit_code = 2
    kind = "usage: a bad option or argument, a bad FLOWMON_* setting, an unreadable or invalid input file"


class ConfigError(UsageError):
    """A bad ``FLOWMON_*`` variable or command-line option (the message names it)."""


class InputError(UsageError, ValueError):
    """An input file (scenario, topology, JSON lines) that is missing or invalid, or a bad value such as a duration
    (a ``ValueError`` too, for callers that catch those)."""


class BrokerUnavailable(FlowmonError):
    """The Kafka broker cannot be reached, or failed."""

    exit_code = 3
    kind = "the Kafka broker is unreachable or failed (wrong --broker / FLOWMON_BROKER, broker down)"


class ClickHouseFailed(FlowmonError):
    """ClickHouse cannot be reached, or refused a query."""

    exit_code = 4
    kind = "ClickHouse is unreachable or refused the query (FLOWMON_CLICKHOUSE_DSN, SQL error)"


class NoData(FlowmonError):
    """Nothing to show yet: no windows have landed in ClickHouse."""

    exit_code = 5
    kind = "no data yet: nothing has landed in ClickHouse"


class InUse(FlowmonError):
    """A resource another running flowmon process owns (the chdb directory of a data directory)."""

    exit_code = 6
    kind = "in use: another running worker owns this data directory's ClickHouse (chdb); use --roles pipeline"


class NotPermitted(FlowmonError):
    """The process lacks a privilege it needs (the agent: its state directory, or the kernel's socket notifications)."""

    exit_code = 7
    kind = ("missing privileges: flowmon agent cannot write its state directory, or the kernel refused its "
            "sock_diag socket (run it as root)")


#: The exit status of a worker whose stop outlasted its deadline (``runtime.process.exit_after``; BSD's EX_TEMPFAIL).
STOP_TIMED_OUT = 75

#: The exit status of a worker that could not deliver one of its writes (``runtime.process.exit_on_failed_write``;
#: BSD's EX_IOERR).
WRITE_FAILED = 74

#: The exit status of a worker whose stage failed part way through a batch (``runtime.process.exit_on_failed_batch``;
#: BSD's EX_SOFTWARE).
BATCH_FAILED = 70

#: exit status -> meaning (0, 70, 74, 75 and 130 are not errors of this family)
EXIT_STATUSES: dict[int, str] = {
    0: "success",
    **{cls.exit_code: cls.kind for cls in (FlowmonError, UsageError, BrokerUnavailable, ClickHouseFailed, NoData,
                                           InUse, NotPermitted)},
    BATCH_FAILED: "a worker's stage failed part way through a batch (a state above the producer's "
                  "max_request_size, a state restore the broker did not complete within 120 s, a bug: the log has "
                  "the traceback) and exited before anything committed past it; nothing is lost: the next start "
                  "reads the batch again",
    WRITE_FAILED: "a worker could not deliver a write to Kafka (its producer gave up retrying, or the broker refused "
                  "it: a message above the topic's max.message.bytes, no permission) and exited before anything "
                  "committed past it; nothing is lost: the next start reads again what it had not committed",
    STOP_TIMED_OUT: "a worker asked to stop had not stopped cleanly within FLOWMON_SHUTDOWN_GRACE_S (a broker or "
                    "ClickHouse it waited for did not answer) and exited anyway; nothing is lost",
    130: "interrupted (Ctrl-C)",
}


def exit_status_table() -> str:
    """The exit statuses as a Markdown table (the README embeds it; a test keeps it in sync).

    >>> exit_status_table().splitlines()[2]
    '| 0 | success |'
    """
    return "\n".join(["| status | meaning |", "|---|---|"] + [f"| {k} | {v} |" for k, v in EXIT_STATUSES.items()])
