"""Every example runs, in its smoke mode, on the embedded default (or a tiny random model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("research_agent", "from memory"),
        ("chat_assistant", "folded into memory"),
        ("skills_agent", "with the skill"),
        ("your_model", "largest prompt"),
    ],
)
def test_example_smoke(name, expected, capsys):
    assert load(name).main(["--smoke"]) == 0
    assert expected in capsys.readouterr().out


def test_memory_basics(tmp_path, capsys):
    export = tmp_path / "peft"
    assert load("memory_basics").main(["--out", str(export)]) == 0
    out = capsys.readouterr().out
    assert out.count("internalized") == 4 and f"exported the remaining memories as one PEFT adapter to {export}" in out
    assert (export / "adapter_config.json").exists()  # still there after the run


def test_every_example_says_what_it_shows_and_how_to_run_it():
    for path in EXAMPLES.glob("*.py"):
        head = path.read_text().split('"""')[1]
        assert "python examples/" in head and "Shows:" in head, path.name
