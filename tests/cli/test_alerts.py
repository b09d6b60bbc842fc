"""`flowmon alerts` without a broker: bad options refused, no broker reported readably."""

from __future__ import annotations

import pytest

from pipeline.runtime.brokers import free_port


# --- the command, without a broker ----------------------------------------------------------------
def _invoke(*args: str):
    """``flowmon alerts ARGS`` through the real command tree."""
    from typer.testing import CliRunner

    from pipeline.cli.app import cli
    return CliRunner().invoke(cli, ["alerts", *args])


@pytest.mark.parametrize("args, message", [
    (("--severity", "high"), "--severity"),
    (("--scope", "host"), "--scope"),
    (("--metric", "rtt_mean", "--metric", "jitter"), "--metric"),
    (("--pair", "a->b->c"), "--pair"),
    (("--webhook", "ftp://example.com/hook"), "--webhook"),
    (("--webhook-retries", "-1"), "--webhook-retries"),
])
def test_command_refuses_bad_options(args, message):
    r = _invoke("--broker", "127.0.0.1:1", *args)
    assert r.exit_code == 2
    assert message in r.stderr


def test_command_without_a_broker_exits_2_readably():
    r = _invoke("--broker", f"127.0.0.1:{free_port()}", "--no-follow")
    assert r.exit_code == 2, r.stderr
    # the reason, not aiokafka's "Unable to bootstrap" (runtime.kafka.explain), in one line
    assert "Connect call failed" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""
