"""Base-model quality: what the embedded default model reads and answers, with greedy decoding.

    python -m benchmarks.base_model --json runs/base_model.json [--model DIR]

Every document is fresh: generated from ``EVAL_SEED_OFFSET + seed``, a stream
training never draws from. Each question is asked on its own, right after its
document. In-context QA needs the model to bind entity AND relation among
1-16 facts; closed-book asks the same kind of question without the document
and must stay near chance (the facts are invented); needles sit at several
depths of documents filling up to the 512-token window; tasks are 3-shot with
a description, on train families (train descriptions) and on held-out families.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from benchmarks.report import Headline, benchmark_parser, machine, write_results
from d2l_lab.evaluate import accuracy_by_group, exact_matches, is_exact, qa_replies
from d2l_lab.formats import Message, task_messages
from d2l_lab.pretrain import SEQ_LEN
from d2l_lab.world import (
    QA,
    FactDocument,
    NeedleDocument,
    TaskFamily,
    heldout_families,
    make_fact_document,
    make_needle_document,
    train_families,
)
from d2l_memory.embedded import DEFAULT_MODEL_DIR, load_model

EVAL_SEED_OFFSET = 1_000_000
FACT_COUNTS = (1, 2, 4, 8, 16)
QUESTIONS_PER_POINT = 128
NEEDLE_WORDS = (50, 150, 250, 350)
"""350 filler words is about 440 tokens: the longest documents still fit the window with their question."""
NEEDLE_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NEEDLES_PER_CELL = 8
TASK_QUERIES_PER_FAMILY = 12
TASK_SHOTS = 3


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint folder (default: the shipped model)"
    )
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


def fact_items(rng: random.Random, n_facts: int) -> list[tuple[FactDocument, QA]]:
    """(document, question) pairs: every question of just enough ``n_facts``-fact documents."""
    documents = [make_fact_document(rng, n_facts) for _ in range(-(-QUESTIONS_PER_POINT // n_facts))]
    return [(document, qa) for document in documents for qa in document.questions]


def wrong_answer_sources(items: Iterable[tuple[FactDocument, QA, str]]) -> dict[str, int]:
    """Where the wrong replies among (document, question, reply) come from: another fact of the same
    document (the asked entity's other relation, another entity's same relation, or neither) or not a
    fact of it. Replies that are other facts mean the model read the document but bound the wrong pair."""
    sources: Counter[str] = Counter()
    for document, qa, reply in items:
        if is_exact(reply, qa.answer):
            continue
        source = next((fact for fact in document.facts if fact != qa.fact and fact.value == reply), None)
        if source is None:
            sources["not_a_fact"] += 1
        elif source.entity == qa.fact.entity:
            sources["same_entity"] += 1
        elif source.relation == qa.fact.relation:
            sources["same_relation"] += 1
        else:
            sources["other_fact"] += 1
    return {name: sources[name] for name in ("same_entity", "same_relation", "other_fact", "not_a_fact")}


def task_items(rng: random.Random, family: TaskFamily) -> list[tuple[list[Message], str]]:
    """(3-shot chat with a description, gold output) pairs; train families use train wordings only."""
    descriptions = family.heldout_descriptions if family.is_heldout else family.train_descriptions
    items = []
    for _ in range(TASK_QUERIES_PER_FAMILY):
        examples = [family.make_example(rng) for _ in range(TASK_SHOTS)]
        query, output = family.make_example(rng)
        items.append((task_messages(rng.choice(descriptions), examples, query), output))
    return items


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, args.device)
    rng = random.Random(EVAL_SEED_OFFSET + args.seed)

    qa_items: list[tuple[str, FactDocument | NeedleDocument | None, QA]] = []  # (group, document or None, question)
    for n_facts in FACT_COUNTS:
        qa_items += [(str(n_facts), document, qa) for document, qa in fact_items(rng, n_facts)]
    qa_items += [("closed_book", None, qa) for _, qa in fact_items(rng, 2)]
    for words in NEEDLE_WORDS:
        for depth in NEEDLE_DEPTHS:
            for _ in range(NEEDLES_PER_CELL):
                needle = make_needle_document(rng, words, depth)
                qa_items += [(f"{words}w@{depth}", needle, qa) for qa in needle.questions]
    replies = qa_replies(model, tokenizer, [(doc.text if doc else None, qa) for _, doc, qa in qa_items])
    matches = [is_exact(reply, qa.answer) for reply, (_, _, qa) in zip(replies, qa_items)]
    qa = accuracy_by_group([g for g, _, _ in qa_items], matches)
    # which relations the model cannot read, and what it answers instead, point at what
    # pretraining still has to teach
    in_context = [
        (doc, question, reply, match)
        for (group, doc, question), reply, match in zip(qa_items, replies, matches)
        if group.isdigit()
    ]
    by_relation = accuracy_by_group([q.fact.relation.name for _, q, _, _ in in_context], [m for *_, m in in_context])
    by_relation = dict(sorted(by_relation.items(), key=lambda item: item[1]))
    wrong = wrong_answer_sources((doc, question, reply) for doc, question, reply, _ in in_context)
    icl = {str(n_facts): qa.pop(str(n_facts)) for n_facts in FACT_COUNTS}
    closed_book = qa.pop("closed_book")
    needle_cells = qa  # what is left: one group per (length, depth)

    task_groups, task_chats, task_gold = zip(
        *(
            (family.id, chat, output)
            for family in train_families() + heldout_families()
            for chat, output in task_items(rng, family)
        )
    )
    tasks = accuracy_by_group(task_groups, exact_matches(model, tokenizer, task_chats, task_gold, max_new_tokens=32))
    train_tasks = {family.id: tasks[family.id] for family in train_families()}
    heldout_tasks = {family.id: tasks[family.id] for family in heldout_families()}

    results = {
        "native_window_tokens": SEQ_LEN,
        "icl_accuracy_by_facts": icl,
        "icl_accuracy_by_relation": by_relation,
        "icl_wrong_answer_sources": wrong,
        "closed_book_accuracy": closed_book,
        "needle_icl_accuracy": mean(needle_cells.values()),
        "needle_icl_accuracy_by_cell": needle_cells,
        "task_fewshot_accuracy": mean([*train_tasks.values(), *heldout_tasks.values()]),
        "task_fewshot_accuracy_train_families": mean(train_tasks.values()),
        "task_fewshot_accuracy_heldout_families": mean(heldout_tasks.values()),
        "task_fewshot_accuracy_by_family": tasks,
        "model_parameters": model.num_parameters(),
        "checkpoint_bytes": sum(path.stat().st_size for path in Path(args.model).iterdir() if path.is_file()),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
    }
    wrong_summary = f"{wrong['same_entity']} / {wrong['same_relation']} / {wrong['other_fact']}; {wrong['not_a_fact']}"
    rows = [
        ("native window (tokens)", f"{SEQ_LEN}", ">= 512"),
        *(
            (
                f"in-context QA, {n} facts",
                f"{icl[n]:.3f}",
                ">= 0.95" if int(n) <= 4 else (">= 0.90" if n == "8" else ""),
            )
            for n in icl
        ),
        (
            f"in-context QA by relation ({FACT_COUNTS[0]}-{FACT_COUNTS[-1]} facts), weakest first",
            ", ".join(f"{name} {value:.2f}" for name, value in by_relation.items()),
            "",
        ),
        (
            "in-context wrong answers: another fact's value (the asked entity's / relation's / neither); no fact's",
            wrong_summary,
            "",
        ),
        ("closed-book QA", f"{closed_book:.3f}", "near chance"),
        ("needle in context", f"{results['needle_icl_accuracy']:.3f}", ">= 0.95"),
        ("tasks 3-shot, train families", f"{results['task_fewshot_accuracy_train_families']:.3f}", ""),
        ("tasks 3-shot, held-out families", f"{results['task_fewshot_accuracy_heldout_families']:.3f}", ""),
        ("parameters", f"{results['model_parameters'] / 1e6:.2f}M", ""),
        ("checkpoint (with tokenizer)", f"{results['checkpoint_bytes'] / 1e6:.1f} MB", "<= 25 MB"),
    ]
    table = "\n".join(
        [
            "## Base model (`python -m benchmarks.base_model`)",
            "",
            (
                f"Embedded default model, greedy decoding, exact match on fresh documents (seed {args.seed}); "
                f"{results['machine']}, {results['eval_seconds']} s."
            ),
            "",
            "| figure | value | target |",
            "| --- | --- | --- |",
            *(f"| {name} | {value} | {target} |" for name, value, target in rows),
        ]
    )
    write_results("base_model", results, table, args.json, markdown=not args.no_markdown, headline=headline(results))


def headline(r: dict) -> Headline:
    """The README's rows: how well the embedded default reads documents, and follows task descriptions."""
    icl = r["icl_accuracy_by_facts"]
    return [
        (
            f"embedded default, in-context QA with {' / '.join(icl)} facts (goals 0.95 up to 4 facts, 0.90 at 8)",
            " / ".join(f"{value:.2f}" for value in icl.values()),
        ),
        (
            "embedded default, a task from its description and 3 examples: trained / unseen task families",
            f"{r['task_fewshot_accuracy_train_families']:.3f} / {r['task_fewshot_accuracy_heldout_families']:.3f}",
        ),
    ]


if __name__ == "__main__":
    main()
