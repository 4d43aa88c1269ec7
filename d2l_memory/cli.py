"""The ``d2l-memory`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from d2l_memory.errors import D2LMemoryError


def smoke_demo(workdir: Path) -> None:
    """Exercise host, store and PEFT export end to end on a tiny random model.

    A stand-in until the main job (an agent on the embedded default model) lands: it shows the
    moving parts working offline on a CPU in a few seconds.
    """
    from d2l_memory import AdapterHost, concat, load_peft, save_peft
    from d2l_memory.store import AdapterStore
    from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer

    model = tiny_model("llama")
    host = AdapterHost(model, tiny_tokenizer(), model_id="tiny-llama")
    store = AdapterStore(workdir / "store")
    namespace = ("demo-user", "thread-1")
    for i in range(3):
        record = store.put(
            random_adapter(model, rank=4, scale=0.5, seed=i), namespace=namespace, kind="memory", source=f"doc {i}"
        )
        host.add(record.id, store.get(namespace, record.id))
        print(f"stored memory {record.id} ({record.nbytes} bytes, rank {record.rank})")
    ids = host.resident
    prompt = "what is the code of the city ?"
    for selection in ([], ids[:1], ids):
        start = time.perf_counter()
        text = host.generate(prompt, adapters=selection, max_new_tokens=8).text
        print(f"active {len(selection)} memories -> {text!r} ({(time.perf_counter() - start) * 1000:.0f} ms)")
    export = save_peft(concat(store.get(namespace, i) for i in ids), workdir / "peft", base_model="tiny-llama")
    print(f"exported the combined adapter for PEFT/vLLM to {export} (rank {load_peft(export).max_rank})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="d2l-memory", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo on the embedded default")
    demo.add_argument("--workdir", type=Path, default=None, help="where to keep the store (default: a temp folder)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            if args.workdir is None:
                with tempfile.TemporaryDirectory() as tmp:
                    smoke_demo(Path(tmp))
            else:
                smoke_demo(args.workdir)
    except D2LMemoryError as err:
        print(f"d2l-memory: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
