"""Raw texts that cover the whole world, for training the tokenizer.

The tokenizer must see every word a document, question or task can contain,
so the stream starts with every closed word pool, every relation template and
every task description, then mixes generated documents of every kind.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from d2l_lab.world.facts import FactDocument, make_fact_document
from d2l_lab.world.needle import (
    FILLER_ADJECTIVES,
    FILLER_NOUNS,
    NeedleDocument,
    make_needle_document,
)
from d2l_lab.world.tasks import (
    ANIMALS,
    NUMBER_WORDS,
    OBJECTS,
    OPPOSITES,
    PAST_TENSE,
    TASK_FAMILIES,
    train_families,
)
from d2l_lab.world.tool_outputs import (
    make_json_document,
    make_log_document,
    make_table_document,
)
from d2l_lab.world.vocab import COLOURS, FRUITS, NAMES, NEEDLE_RELATIONS, PLACES, RELATIONS

_DOCUMENT_MAKERS: tuple[tuple[int, Callable[[random.Random], FactDocument | NeedleDocument]], ...] = (
    (3, lambda rng: make_fact_document(rng, rng.randint(1, 16))),
    (1, lambda rng: make_needle_document(rng, rng.randint(50, 300), rng.random(), rng.randint(1, 3))),
    (1, lambda rng: make_json_document(rng, rng.randint(1, 12))),
    (1, lambda rng: make_log_document(rng, rng.randint(1, 12))),
    (1, lambda rng: make_table_document(rng, rng.randint(1, 12), "markdown")),
    (1, lambda rng: make_table_document(rng, rng.randint(1, 12), "csv")),
)
"""(weight, maker) for each document kind; task texts get ``_TASK_WEIGHT``."""
_TASK_WEIGHT = 3


def vocabulary_texts(include_heldout: bool = True) -> Iterator[str]:
    """Every fixed word pool, every relation template (filled in), and the task descriptions."""
    pools = (
        NAMES,
        PLACES,
        COLOURS,
        FRUITS,
        ANIMALS,
        OBJECTS,
        NUMBER_WORDS,
        FILLER_NOUNS,
        FILLER_ADJECTIVES,
        tuple(OPPOSITES),
        tuple(PAST_TENSE) + tuple(PAST_TENSE.values()),
    )
    for pool in pools:
        yield " ".join(pool)
    example_rng = random.Random(0)
    for relation in RELATIONS + NEEDLE_RELATIONS:
        value = relation.values.draw(example_rng)
        filled_statements = [template.format(e=NAMES[0], v=value) for template in relation.statements]
        yield "\n".join([*filled_statements, relation.ask(NAMES[0]), value])
    for family in TASK_FAMILIES if include_heldout else train_families():
        yield "\n".join(family.descriptions if include_heldout else family.train_descriptions)


def _document_with_answers(document: FactDocument | NeedleDocument) -> str:
    return "\n".join([document.text, *(f"{qa.question} {qa.answer}" for qa in document.questions)])


def _task_text(rng: random.Random, include_heldout: bool) -> str:
    """A description followed by one to four input/output examples of its family."""
    family = rng.choice(TASK_FAMILIES if include_heldout else train_families())
    lines = [rng.choice(family.descriptions if include_heldout else family.train_descriptions)]
    for _ in range(rng.randint(1, 4)):
        task_input, task_output = family.make_example(rng)
        lines += [f"Input: {task_input}", f"Output: {task_output}"]
    return "\n".join(lines)


def iter_corpus_texts(seed: int, n_documents: int, include_heldout: bool = True) -> Iterator[str]:
    """The vocabulary texts, then ``n_documents`` generated texts of every kind.

    Documents come with their questions and answers appended. With
    ``include_heldout=False`` the held-out task families and descriptions are
    left out, for any use where the stream is also training data.
    """
    yield from vocabulary_texts(include_heldout)
    rng = random.Random(seed)
    weights = [weight for weight, _ in _DOCUMENT_MAKERS] + [_TASK_WEIGHT]
    for _ in range(n_documents):
        kind = rng.choices(range(len(weights)), weights=weights)[0]
        if kind == len(_DOCUMENT_MAKERS):
            yield _task_text(rng, include_heldout)
        else:
            yield _document_with_answers(_DOCUMENT_MAKERS[kind][1](rng))
