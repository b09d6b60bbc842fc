"""``flowmon agent``: its mistakes get one line and an exit status; ``--once`` shows a real connection."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.cli.test_errors import REPO, closed_port, flowmon, one_error

TOPOLOGY = """
region: r1
vpcs:
  - id: vpc-a
    azs:
      - id: az-1a
        subnets: [{id: subnet-1a, cidr: 10.71.0.0/24, instances: 2}]
"""


def test_unknown_instance_id(tmp_path):
    (tmp_path / "topo.yaml").write_text(TOPOLOGY)
    r = flowmon(tmp_path, "agent", "--instance", "subnet-1a/7", "--broker", closed_port(),
                FLOWMON_TOPOLOGY=str(tmp_path / "topo.yaml"))
    one_error(r, 2, "instance 'subnet-1a/7' is not in the topology file")


def test_address_that_disagrees_with_the_topology(tmp_path):
    (tmp_path / "topo.yaml").write_text(TOPOLOGY)
    r = flowmon(tmp_path, "agent", "--instance", "subnet-1a/0", "--ip", "10.71.0.9", "--broker", closed_port(),
                FLOWMON_TOPOLOGY=str(tmp_path / "topo.yaml"))
    one_error(r, 2, "has address 10.71.0.4 in the topology file, not 10.71.0.9")


def test_unknown_broker_host(tmp_path):
    r = flowmon(tmp_path, "agent", "--instance", "h1", "--ip", "10.9.9.9", "--subnet", "s1",
                "--state-dir", str(tmp_path / "st"), "--broker", "no-such-broker.invalid:9092")
    one_error(r, 3, "broker host 'no-such-broker.invalid' is unknown")


def test_embedded_broker_is_not_an_address(tmp_path):
    r = flowmon(tmp_path, "agent", "--instance", "h1", "--ip", "10.9.9.9", "--subnet", "s1",
                "--state-dir", str(tmp_path / "st"))
    one_error(r, 3, "needs the broker's address")


def test_bad_config_file_value(tmp_path):
    (tmp_path / "agent.yaml").write_text("instance: h1\ninterval_s: -5\n")
    r = flowmon(tmp_path, "agent", "--config", str(tmp_path / "agent.yaml"))
    one_error(r, 2, "agent interval_s")


def test_missing_privileges_for_the_state_directory(tmp_path):
    """Run as 'nobody': the default state directory (/var/lib/flowmon-agent) is root's."""
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                        "pipeline.cli", "agent", "--instance", "h1", "--ip", "10.9.9.9", "--subnet", "s1",
                        "--state-dir", "/var/lib/flowmon-agent-test-root-only", "--broker", closed_port()],
                       cwd="/", env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": "/"},
                       capture_output=True, text=True, timeout=60)
    one_error(r, 7, "cannot write the state directory", "Run flowmon agent as root")


def test_once_prints_the_open_connections(tmp_path):
    srv = socket.create_server(("127.0.0.91", 0))
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b"x" * 123_456)
    got = 0
    while got < 123_456:
        got += len(a.recv(1 << 16))
    try:
        r = flowmon(tmp_path, "agent", "--once", "--instance", "h1", "--ip", "127.0.0.91", "--subnet", "s1",
                    "--include-loopback")
        assert r.returncode == 0, r.stderr
        row = next(line for line in r.stdout.splitlines() if "127.0.0.91" in line and "123.5 kB" in line)
        assert "external" in row, row  # no topology: the remote is unknown, and said so
    finally:
        for s in (a, c, srv):
            s.close()
