"""Doc-to-LoRA without an agent: the core API in one page.

    python examples/memory_basics.py [--out DIR] [--workdir DIR]

Shows: documents becoming stored adapters (``Internalizer`` + ``AdapterStore``), questions
answered closed-book, from routed memory and with the document in the prompt, memories composed
and one forgotten, and the rest exported as one PEFT adapter (loadable by PEFT, vLLM, SGLang) to
``--out`` (default ``memory-basics-peft/``).
Runs in seconds on the embedded default model and the shipped Doc-to-LoRA checkpoint.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from d2l_memory.errors import D2LMemoryError


def memory_demo(workdir: Path, out: Path) -> None:
    """Internalize invented documents on the embedded default and answer from memory.

    A preview of the main job (an agent working through a long task) that runs in seconds: it
    shows documents becoming stored adapters, questions answered with the right memory routed
    in, memories composed and one forgotten, and the combined adapter exported for PEFT/vLLM to
    ``out``. The store is kept in ``workdir``.
    """
    from d2l_lab.evaluate import greedy_answers
    from d2l_lab.formats import qa_messages
    from d2l_lab.world import make_fact_document
    from d2l_memory import (
        AdapterStore,
        LexicalEncoder,
        MemoryRouter,
        concat,
        save_peft,
    )
    from d2l_memory.embedded import D2L_CHECKPOINT_DIR, load_host
    from d2l_memory.hypernet import DocToLoRA
    from d2l_memory.internalize import Internalizer

    host = load_host()
    store = AdapterStore(workdir / "store")
    internalizer = Internalizer(host, DocToLoRA.load(D2L_CHECKPOINT_DIR), store=store)
    router = MemoryRouter(LexicalEncoder())
    namespace = ("demo-user", "thread-1")
    rng = random.Random(7)
    documents = [make_fact_document(rng, 3) for _ in range(4)]
    for document in documents:
        memory = internalizer.internalize(document.text, namespace=namespace, source="world")
        host.add(memory.id, memory.adapter)
        router.add(memory.id, document.text)
        print(memory.receipt())

    questions = [qa for document in documents for qa in document.questions]
    routed = [[router.route(qa.question, top_k=1)[0][0]] for qa in questions]

    def answers(documents_in_prompt: bool, adapters: list[list[str]] | None) -> list[str]:
        chats = [
            qa_messages(d.text if documents_in_prompt else None, [qa])[:-1] for d in documents for qa in d.questions
        ]
        activate = None if adapters is None else lambda rows: host.active_rows([adapters[i] for i in rows])
        return greedy_answers(host.model, host.tokenizer, chats, activate=activate)

    columns = {
        "closed book": answers(False, None),
        "memory (routed)": answers(False, routed),
        "document in prompt": answers(True, None),
    }
    print(f"\n{'question':<44} {'gold':<10} " + " ".join(f"{name:<18}" for name in columns))
    for i, qa in enumerate(questions):
        print(f"{qa.question:<44} {qa.answer:<10} " + " ".join(f"{column[i]:<18}" for column in columns.values()))
    print(
        "\naccuracy: "
        + ", ".join(
            f"{name} {sum(a == qa.answer for a, qa in zip(column, questions)) / len(questions):.0%}"
            for name, column in columns.items()
        )
    )
    records = store.list(namespace, kind="memory")
    combined = concat(store.get(namespace, r.id) for r in records)
    forgotten = combined.without(records[0].id)
    print(
        f"\n{len(records)} memories stored; combined rank {combined.max_rank}, after forgetting one {forgotten.max_rank}"
    )
    export = save_peft(forgotten, out, base_model=host.model_id)
    print(f"exported the remaining memories as one PEFT adapter to {export}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("memory-basics-peft"),
        help="where the PEFT export goes (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to keep the store (default: a temp folder)",
    )
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            memory_demo(args.workdir or Path(tmp), args.out)
    except D2LMemoryError as err:
        print(f"memory_basics: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
