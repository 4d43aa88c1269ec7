"""The ``d2l-memory`` command line.

d2l-memory demo                  # the long-horizon agent on the embedded default (minutes on a CPU)
d2l-memory demo --pages 10       # a shorter run
d2l-memory serve-vllm            # a vLLM server on the embedded default, LoRA enabled (Ctrl-C stops it)
d2l-memory import-checkpoint PATH --out DIR   # a published Doc-to-LoRA / Text-to-LoRA checkpoint, made safe
d2l-memory --version

Parsing the command line imports nothing heavy (torch, transformers, LangGraph load inside the
command that needs them), so ``--help`` and ``--version`` answer at once. It lives in the
research room beside the demo it runs; the library never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DEMO_PAGES = 100
DEMO_QUESTION_EVERY = 10
"""The demo's defaults, as ``d2l_lab.long_task.LongTaskSettings`` has them (a test keeps them equal)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="d2l-memory", description="Parametric memory for LLM agents.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="a LangGraph agent works through a long task on the embedded default",
        description="A LangGraph agent reads pages of service logs into LoRA memory on the embedded default"
        " model, answers questions about early and late pages from memory, and learns a skill; then a"
        " table compares it with an agent that keeps every page in its prompt.",
    )
    demo.add_argument(
        "--pages", type=int, default=DEMO_PAGES, help="tool outputs the agent reads (default %(default)s)"
    )
    demo.add_argument(
        "--question-every",
        type=int,
        default=DEMO_QUESTION_EVERY,
        help="pages between questions (default %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=0, help="draws the pages and questions (default %(default)s)")
    demo.add_argument(
        "--out", type=Path, default=Path("d2l-memory-demo"), help="where the summary and plot go (default %(default)s)"
    )
    demo.add_argument(
        "--store", type=Path, default=None, help="keep the memories in this store (default: a temp folder)"
    )
    demo.add_argument(
        "--encoder",
        choices=("auto", "minilm", "lexical"),
        default="auto",
        help="what picks the chunk of a memory a question is about, and reads skill descriptions: minilm"
        " (the skills extra), lexical (no extra, no skills), or auto: minilm where installed (default %(default)s)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    serve = commands.add_parser(
        "serve-vllm",
        help="a vLLM server with runtime LoRA loading, on the embedded default unless told otherwise",
        description="Run vLLM's OpenAI-compatible server on a model folder with LoRA enabled, in a virtual"
        " environment of its own with vLLM for CPUs (made on first use: a few minutes, about 3.5 GB)."
        " Point a VLLMHost at the URL it prints. On GPUs, run `vllm serve` yourself (docs/serving.md).",
    )
    serve.add_argument("--model", type=Path, default=None, help="a model folder (default: the embedded default)")
    serve.add_argument("--port", type=int, default=8000, help="default %(default)s")
    serve.add_argument(
        "--env", type=Path, default=Path(".venv-vllm"), help="vLLM's virtual environment (default %(default)s)"
    )
    serve.add_argument("--max-lora-rank", type=int, default=64, help="largest adapter rank (default %(default)s)")
    serve.add_argument(
        "--max-loras", type=int, default=8, help="different adapters batched in one step (default %(default)s)"
    )
    imported = commands.add_parser(
        "import-checkpoint",
        help="turn a published Doc-to-LoRA or Text-to-LoRA checkpoint into a folder this library loads",
        description="Read a published checkpoint (Sakana AI's pytorch_model.bin for Doc-to-LoRA, a folder with"
        " hypermod.pt, args.yaml and adapter_config.json for Text-to-LoRA) without running anything in it, and"
        " write it as a JSON config and safetensors weights. Pass the folder to agent_memory() or"
        " load_document_hypernet() / load_skill_hypernet().",
    )
    imported.add_argument(
        "path", type=Path, help="Doc-to-LoRA: the pytorch_model.bin (or its folder); Text-to-LoRA: the folder"
    )
    imported.add_argument("--out", type=Path, required=True, help="the folder to write")
    imported.add_argument(
        "--chunk-tokens", type=int, default=8192, help="Doc-to-LoRA: wrapped tokens per chunk (default %(default)s)"
    )
    imported.add_argument(
        "--prefix", default=None, help="Doc-to-LoRA on another base: the text its chat template puts before a document"
    )
    imported.add_argument("--suffix", default=None, help="... and after one (give both)")
    imported.add_argument(
        "--module-order",
        default=None,
        help="Text-to-LoRA: target modules in the order its module embedding numbers them, comma-separated"
        " (default: as its adapter_config.json lists them)",
    )
    imported.add_argument(
        "--encoder",
        default=None,
        help="Text-to-LoRA: its task encoder as cls:MODEL, e.g. a local copy of gte-large-en-v1.5"
        " (default: the hub model it was trained with)",
    )
    args = parser.parse_args(argv)
    if args.command == "serve-vllm":
        return _serve_vllm(args)
    if args.command == "import-checkpoint":
        return _import_checkpoint(args)
    return _demo(demo, args)


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from d2l_lab.demo import run_demo
    from d2l_lab.long_task import LongTaskSettings
    from d2l_memory.errors import D2LMemoryError
    from integrations.defaults import LEXICAL_FALLBACK, resolve_encoder

    try:
        settings = LongTaskSettings(pages=args.pages, question_every=args.question_every, seed=args.seed)
    except ValidationError as err:
        parser.error("; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in err.errors()))
    try:
        encoder = resolve_encoder(args.encoder)
        if encoder == "lexical" != args.encoder:
            print(f"d2l-memory: {LEXICAL_FALLBACK}", file=sys.stderr)
        with _loading_bars(not args.no_progress):
            run_demo(settings, args.out, store_dir=args.store, progress=not args.no_progress, encoder=encoder)
    except D2LMemoryError as err:
        print(f"d2l-memory: {err}", file=sys.stderr)
        return 1
    return 0


def _serve_vllm(args: argparse.Namespace) -> int:
    from d2l_memory.embedded import DEFAULT_MODEL_DIR
    from d2l_memory.errors import D2LMemoryError
    from d2l_memory.vllm_server import VLLMServer, vllm_environment

    try:
        python = vllm_environment(args.env)
        server = VLLMServer(
            args.model or DEFAULT_MODEL_DIR,
            python=python,
            port=args.port,
            max_lora_rank=args.max_lora_rank,
            max_loras=args.max_loras,
        )
        print(f"starting vLLM on {server.model} (log: {server.log_path}) ...", file=sys.stderr, flush=True)
        with server:
            print(
                f"serving at {server.url}\n\n"
                "    from d2l_memory import VLLMHost\n"
                "    from d2l_memory.embedded import load_host\n"
                f"    host = VLLMHost.over(load_host(), {server.url!r}, max_lora_rank={args.max_lora_rank})\n\n"
                "Ctrl-C stops it.",
                flush=True,
            )
            server.wait()
    except D2LMemoryError as err:
        print(f"d2l-memory: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def _import_checkpoint(args: argparse.Namespace) -> int:
    from d2l_memory.errors import D2LMemoryError
    from d2l_memory.published_import import import_d2l_checkpoint
    from t2l_skills.published_import import CHECKPOINT_NAME, import_t2l_checkpoint

    path: Path = args.path
    try:
        if path.name == CHECKPOINT_NAME or (path / CHECKPOINT_NAME).is_file():
            order = args.module_order.split(",") if args.module_order else None
            model = import_t2l_checkpoint(path, args.out, module_order=order, encoder=args.encoder)
            what = f"Text-to-LoRA (head {model.config.head})"
        else:
            model = import_d2l_checkpoint(
                path, args.out, chunk_tokens=args.chunk_tokens, prefix=args.prefix, suffix=args.suffix
            )
            what = "Doc-to-LoRA"
    except D2LMemoryError as err:
        print(f"d2l-memory: {err}", file=sys.stderr)
        return 1
    config = model.config
    targets = ", ".join(t.module for t in config.targets)
    print(
        f"imported a {what} hypernetwork for {config.base_model} (rank {config.rank} on {targets} of"
        f" {config.num_layers} layers) into {args.out}"
    )
    return 0


@contextmanager
def _loading_bars(shown: bool) -> Iterator[None]:
    """transformers' and the hub's progress bars (model loading) on or off for this run only."""
    from transformers.utils import logging as transformers_logging

    was_shown = transformers_logging.is_progress_bar_enabled()
    if not shown:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_shown and not shown:
            transformers_logging.enable_progress_bar()


def _version() -> str:
    try:
        return version("d2l-memory")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
