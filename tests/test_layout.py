"""Where things live: the library path never loads the research harness or the LangChain layer below it.

An agent imports ``d2l_memory``, ``t2l_skills`` and ``integrations``; the synthetic world, the
trainers, the benchmarks and the demo live in ``d2l_lab`` and ``benchmarks``, which nothing in the
library imports. Only ``integrations`` speaks LangChain and LangGraph.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("d2l_memory", "t2l_skills", "integrations")
HARNESS = ("d2l_lab", "benchmarks")
HARNESS_NAMES = ("world", "pretrain", "meta_train", "evaluate", "benchmarks", "demo", "long_task")
HARNESS_PREFIXES = ("train", "distill")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name a file imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_matching(packages: tuple[str, ...], wanted: Callable[[str], bool]) -> dict[str, list[str]]:
    """For each file of ``packages`` that imports a ``wanted`` module, those modules."""
    found = {}
    for path in sorted(path for package in packages for path in (REPO_ROOT / package).rglob("*.py")):
        names = sorted(name for name in imported_modules(path) if wanted(name))
        if names:
            found[str(path.relative_to(REPO_ROOT))] = names
    return found


def test_importing_the_library_loads_no_harness_module() -> None:
    script = (
        "import json, sys\n"
        f"import {', '.join(LIBRARY)}\n"
        "for name in integrations.__all__: getattr(integrations, name)  # its names load on first use\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {LIBRARY + HARNESS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    assert "d2l_memory.embedded" in loaded  # the embedded default's checkpoints and loaders stay in the library
    harness = [
        module
        for module in loaded
        if module.split(".")[0] in HARNESS
        or any(part in HARNESS_NAMES or part.startswith(HARNESS_PREFIXES) for part in module.split("."))
    ]
    assert harness == []


def test_only_integrations_imports_langchain_or_langgraph() -> None:
    langchain = imports_matching(("d2l_memory", "t2l_skills"), lambda name: name.startswith(("langchain", "langgraph")))
    assert langchain == {}


def test_no_library_module_imports_the_harness() -> None:
    harness = imports_matching(LIBRARY, lambda name: name.split(".")[0] in HARNESS)
    assert harness == {}


def test_t2l_skills_uses_only_what_d2l_memory_exports() -> None:
    assert imports_matching(("t2l_skills",), lambda name: name.startswith("d2l_memory.")) == {}
