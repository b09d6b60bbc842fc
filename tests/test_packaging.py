"""An installed wheel carries what the code reads (schemas, the demo's scenario) and never reads tests/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_its_data_and_runs_without_the_checkout(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO),
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("flowmon-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in [*(REPO / "schemas").rglob("*.json"), *(REPO / "schemas").rglob("*.sql")]:
        assert f"pipeline/schemas/{f.relative_to(REPO / 'schemas')}" in names
    assert "pipeline/sim/scenarios/http_experiment.yaml" in names
    assert not [n for n in names if n.startswith("tests/")]
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    check = ("import sys; sys.path.insert(0, %r);" % str(site) +
             "import pipeline, pipeline.config as c, pipeline.wire.contract as w, pipeline.clickhouse.migrations as m;"
             "from pipeline.sim.scenario import DEMO_SCENARIO, load_scenario;"
             "assert pipeline.__file__.startswith(%r), pipeline.__file__;"
             "w.schema('flow_report'); assert len(m.load_steps()) >= 5; load_scenario(DEMO_SCENARIO); print('ok')"
             % str(site))
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
