"""The ``d2l-memory`` command line.

d2l-memory demo                  # the long-horizon agent on the embedded default (minutes on a CPU)
d2l-memory demo --pages 10       # a shorter run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from d2l_memory.errors import D2LMemoryError
from integrations.demo import run_demo
from integrations.long_task import LongTaskSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="d2l-memory", description="Parametric memory for LLM agents.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a LangGraph agent works through a long task on the embedded default")
    defaults = LongTaskSettings()
    demo.add_argument(
        "--pages", type=int, default=defaults.pages, help="tool outputs the agent reads (default %(default)s)"
    )
    demo.add_argument("--question-every", type=int, default=defaults.question_every, help="pages between questions")
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--out", type=Path, default=Path("d2l-memory-demo"), help="where the summary and plot go")
    demo.add_argument(
        "--store", type=Path, default=None, help="keep the memories in this store (default: a temp folder)"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        settings = LongTaskSettings(pages=args.pages, question_every=args.question_every, seed=args.seed)
    except ValidationError as err:
        demo.error("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in err.errors()))
    try:
        run_demo(settings, args.out, store_dir=args.store, progress=not args.no_progress)
    except D2LMemoryError as err:
        print(f"d2l-memory: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
