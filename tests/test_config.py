"""Configuration: golden in/expected, and a clear refusal of a bad environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import Settings

DATA = Path(__file__).parent / "data" / "config"


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLOWMON_")}


def test_dump_golden():
    env = _clean_env() | _env(DATA / "in.env")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "dump"], env=env, capture_output=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == json.loads((DATA / "expected.json").read_text())


def test_check_refuses_bad_values_readably():
    env = _clean_env() | {"FLOWMON_WINDOW_S": "ten minutes"}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "check"], env=env, capture_output=True,
                         timeout=60)
    assert out.returncode == 2
    assert out.stderr.decode().startswith("error: FLOWMON_WINDOW_S='ten minutes': input should be a valid integer")


def test_settings_are_frozen_and_unknown_fields_refused():
    s = Settings()
    with pytest.raises(ValidationError):
        s.window_s = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Settings(windows_s=60)  # a typo is an error, not a silent default


def test_check_refuses_unknown_variables():
    env = _clean_env() | {"FLOWMON_WINDOWS_S": "60"}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "check"], env=env, capture_output=True,
                         timeout=60)
    assert out.returncode == 2 and b"FLOWMON_WINDOWS_S" in out.stderr


@pytest.mark.parametrize("env, needle", [
    ({"FLOWMON_ROLES": "pipline,snk"}, "FLOWMON_ROLES"),
    ({"FLOWMON_INTERVAL_LATENESS_S": "300", "FLOWMON_ALLOWED_LATENESS_S": "120"}, "interval_lateness_s"),
])
def test_check_refuses_settings_that_would_silently_do_nothing(env, needle):
    """A typo in the roles would run nothing; a grid lateness beyond the window's was silently clamped."""
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "check"], env=_clean_env() | env,
                         capture_output=True, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1, err
