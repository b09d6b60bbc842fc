"""What a worker loads for its roles: the pipeline role never loads chdb (~200 MiB of resident memory)."""

from __future__ import annotations

import subprocess
import sys

from pipeline.config import REPO_ROOT

_PROBE = """
import sys
from pipeline.config import Settings
from pipeline.cli.worker import _sink_owner_check
s = _sink_owner_check(Settings(roles=sys.argv[1], clickhouse_dsn="chdb://" + sys.argv[2]), explicit=True)
print(s.roles, "chdb" in sys.modules)
"""


def _probe(roles: str, tmp_path) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, roles, str(tmp_path / "chdb")], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


def test_the_pipeline_role_does_not_load_chdb(tmp_path):
    assert _probe("pipeline", tmp_path) == ["pipeline", "False"]


def test_a_chdb_sink_does(tmp_path):  # the probe can tell: the sink role's owner check reads the endpoint module
    assert _probe("pipeline,sink", tmp_path) == ["pipeline,sink", "True"]
