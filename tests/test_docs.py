"""The README's reference tables are generated from the code and the schema: they must not drift."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import settings_table
from pipeline.errors import exit_status_table
from pipeline.wire.contract import sample_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block(name: str) -> str:
    m = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert m, f"README has no {name} block"
    return m.group(1)


FIX = "README out of date: run `python tests/test_docs.py` to regenerate its tables"


def test_settings_table_in_sync():
    assert block("settings-table") == settings_table(), FIX


def test_sample_table_in_sync():
    assert block("sample-table") == sample_table(), FIX


def test_exit_status_table_in_sync():
    assert block("exit-table") == exit_status_table(), FIX


def test_readme_names_both_commands():
    assert "flowmon demo" in README and "bash .ci/run" in README


if __name__ == "__main__":  # regenerate the README's tables
    text = README
    for name, table in (("settings-table", settings_table()), ("sample-table", sample_table()),
                        ("exit-table", exit_status_table())):
        text = re.sub(rf"<!-- {name}:start -->\n.*?\n<!-- {name}:end -->",
                      lambda m, n=name, t=table: f"<!-- {n}:start -->\n{t}\n<!-- {n}:end -->", text, flags=re.S)
    (Path(__file__).resolve().parents[1] / "README.md").write_text(text)
