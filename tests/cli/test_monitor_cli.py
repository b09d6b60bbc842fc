"""``flowmon monitor``: a mistake gets one line and exit status 2, before any broker is contacted; no broker: 3.

Runs the real command in a subprocess (``tests/cli/test_errors.py``'s helpers). The happy path
(create, change, delete while a worker runs) is tests/integration/test_monitors.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ingest.topology import load_topology
from pipeline.monitors.definition import check_topology, parse_monitors
from pipeline.sim.scenario import DEMO_SCENARIO
from tests.cli.test_errors import closed_port, flowmon, one_error

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, needles", [
    (("create", "Web", "--local", "az:a", "--remote", "any"), ("monitor 'Web': name: expected 1 to 64 of a-z 0-9",)),
    (("create", "m", "--local", "zone:a", "--remote", "any"), ("monitor 'm': local[0]: unknown kind 'zone'",)),
    (("create", "m", "--local", "az:a"), ("monitor 'm': --remote is required", "--remote any")),
    (("create", "m", "--local", "any", "--remote", "any"), ("local: 'any' is for the remote side",)),
    (("create", "m", "--remote", "any", "--local", "subnet"), ("local[0]: 'subnet': expected kind:id",)),
    (("create",), ("give a monitor NAME, or --file",)),
    (("create", "m", "--file", "x.yaml"), ("--file defines the monitors",)),
    (("create", "--file", "missing.yaml"), ("missing.yaml: no such file",)),
    (("create", "--file", "bad.yaml"), ("bad.yaml: monitors[1]: monitor 'b': remote: missing", "Fix the file")),
    (("create", "--file", "notyaml.yaml"), ("invalid YAML",)),
])
def test_mistakes_are_one_line_exit_2(tmp_path: Path, args, needles) -> None:
    (tmp_path / "bad.yaml").write_text("- {name: a, local: [az:z], remote: any}\n- {name: b, local: [az:z]}\n")
    (tmp_path / "notyaml.yaml").write_text("monitors: [\n")
    # a broker that does not answer: the mistake must be said before any broker is contacted
    one_error(flowmon(tmp_path, "monitor", *args, "--broker", closed_port()), 2, *needles)


def test_names_are_checked_against_the_topology(tmp_path: Path) -> None:
    r = flowmon(tmp_path, "monitor", "create", "m", "--local", "subnet:subnet-1a", "--remote", "az:az-9",
                "--broker", closed_port(), FLOWMON_TOPOLOGY=str(DEMO_SCENARIO))
    one_error(r, 2, "monitor 'm': remote[0]: no az 'az-9' in the topology (it has az-1a, az-1c, az-1d)")
    (tmp_path / "m.yaml").write_text("monitors:\n  - {name: a, local: [region:nowhere], remote: any}\n")
    r = flowmon(tmp_path, "monitor", "create", "--file", "m.yaml", "--broker", closed_port(),
                FLOWMON_TOPOLOGY=str(DEMO_SCENARIO))
    one_error(r, 2, "monitor 'a': local[0]: no region 'nowhere' in the topology (it has ap-northeast-1)")


@pytest.mark.parametrize("command", [("list",), ("show", "m"), ("delete", "m"),
                                     ("create", "m", "--local", "az:a", "--remote", "any")])
def test_no_broker_is_exit_3(tmp_path: Path, command) -> None:
    broker = closed_port()
    one_error(flowmon(tmp_path, "monitor", *command, "--broker", broker, timeout=30), 3, broker, "connection refused")


def test_the_deploy_example_fits_the_example_topology() -> None:
    t = load_topology(REPO / "deploy" / "topology.example.yaml")
    monitors = parse_monitors(__import__("yaml").safe_load((REPO / "deploy" / "monitors.example.yaml").read_text()))
    assert len(monitors) >= 3 and any(m.remote_any for m in monitors)
    for m in monitors:
        check_topology(m, t.subnets, t.azs, t.vpcs, t.region)
