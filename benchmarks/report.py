"""Shared plumbing for benchmarks: write the JSON a run produced and its table in BENCHMARKS.md.

Each benchmark owns one section of BENCHMARKS.md, delimited by HTML comments, so benchmarks can
be rerun one at a time without disturbing the others' tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--json``, ``--seed``, ``--no-markdown``); add your own.

    ``doc``: the benchmark's module docstring, whose first paragraph describes it in ``--help``.
    """
    parser = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-markdown", action="store_true", help="do not update BENCHMARKS.md")
    return parser


def parse_args(doc: str) -> argparse.Namespace:
    return benchmark_parser(doc).parse_args()


def machine() -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()} threads"
    return f"{platform.machine()} {device}, torch {torch.__version__}"


def run_seconds(run: Callable[[], object], repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def median_ms(run: Callable[[], object], repeats: int) -> float:
    return 1000 * statistics.median(run_seconds(run, repeats))


def write_results(name: str, results: Mapping[str, Any], table: str, json_path: Path, markdown: bool = True) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    if markdown:
        update_section(name, table)
    print(table)


def update_section(name: str, body: str) -> None:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
