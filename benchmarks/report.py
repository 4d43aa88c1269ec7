"""Shared plumbing for benchmarks: write the JSON a run produced, its table in BENCHMARKS.md and its
headline figures in README.md.

Each benchmark owns one section of BENCHMARKS.md, delimited by HTML comments, so benchmarks can
be rerun one at a time without disturbing the others' tables. The README's headline table is one
such section too, made from every benchmark's headline rows: each run keeps its rows in
``benchmarks/headline.json`` and the table is written anew from that file, so no figure in it is
ever copied by hand.

    python -m benchmarks.report    # rewrite the README's headline table from headline.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
README_MD = ROOT / "README.md"
HEADLINE_JSON = Path(__file__).resolve().parent / "headline.json"
HEADLINE_ORDER = ("host", "serving", "base_model", "d2l", "d2l_long", "d2l_scale", "t2l", "agent", "reliability")
"""The benchmarks whose headline rows the README shows, in the order it shows them."""

Headline = Sequence[tuple[str, str]]
"""A benchmark's rows in the README's headline table: (what is measured, the figure)."""


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


def write_results(
    name: str,
    results: Mapping[str, Any],
    table: str,
    json_path: Path,
    markdown: bool = True,
    headline: Headline = (),
) -> None:
    """Write ``results`` to ``json_path``; with ``markdown``, also ``table`` as section ``name`` of
    BENCHMARKS.md and ``headline`` as the benchmark's rows of the README's headline table."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    if markdown:
        update_section(name, table)
        if headline:
            update_headline(name, headline)
    print(table)


def update_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path`` (or
    append the section)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def headline_rows(store: Path = HEADLINE_JSON) -> dict[str, list[list[str]]]:
    """Every benchmark's headline rows as its last run wrote them (benchmark -> [[what, figure]])."""
    return json.loads(store.read_text()) if store.exists() else {}


def headline_table(rows: Mapping[str, Sequence[Sequence[str]]]) -> str:
    """The README's headline table, the benchmarks in :data:`HEADLINE_ORDER`."""
    lines = ["| what | figure |", "| --- | --- |"]
    lines += [f"| {what} | {figure} |" for name in HEADLINE_ORDER for what, figure in rows.get(name, [])]
    return "\n".join(lines)


def update_headline(name: str, headline: Headline, *, store: Path = HEADLINE_JSON, readme: Path = README_MD) -> None:
    """Keep ``headline`` as benchmark ``name``'s rows in ``store`` and rewrite the headline table of
    ``readme`` from all of them."""
    if name not in HEADLINE_ORDER:
        raise ValueError(f"benchmark {name!r} has no place in the headline table; add it to HEADLINE_ORDER")
    rows = headline_rows(store) | {name: [list(row) for row in headline]}
    store.write_text(json.dumps(rows, indent=2) + "\n")
    update_section("headline", headline_table(rows), readme)


if __name__ == "__main__":
    update_section("headline", headline_table(headline_rows()), README_MD)
