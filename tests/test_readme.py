"""README.md stays true: every python snippet runs as pasted, the headline figures are the
benchmarks' own, and CI runs exactly the test command the README gives."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import README_MD, ROOT, headline_rows, headline_table

README = README_MD.read_text()
SNIPPETS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for all snippets: they run in order, as a reader pastes them."""
    return tmp_path_factory.mktemp("readme")


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_every_python_snippet_runs_as_pasted(index, folder):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SNIPPETS[index]],
        check=False,
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"README snippet {index + 1} failed:\n{SNIPPETS[index]}\n{done.stderr[-3000:]}"


def test_the_headline_table_is_the_benchmarks_own():
    section = README.split("<!-- headline:start -->\n", 1)[1].split("\n<!-- headline:end -->", 1)[0]
    assert section == headline_table(headline_rows()), "run `python -m benchmarks.report` (never edit it by hand)"


def test_ci_runs_the_readme_test_command():
    command = next(line for line in README.splitlines() if line.endswith("-m pytest"))
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == command
