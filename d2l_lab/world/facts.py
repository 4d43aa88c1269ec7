"""Prose documents of invented facts, each fact paired with one question.

These are the documents Doc-to-LoRA turns into adapters. Several facts share an
entity and several entities share a relation, so answering needs the binding
of entity AND relation, not either alone. Every (entity, relation) pair occurs
at most once per document, so every question has exactly one gold answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from d2l_lab.world.rng import RandomSource, as_rng
from d2l_lab.world.vocab import NAMES, RELATIONS, Relation

MAX_FACTS_PER_DOCUMENT = 64

_DISTRACTOR_TEMPLATES: tuple[str, ...] = (
    "{e} went for a long walk after lunch.",
    "{e} read a book by the window.",
    "{e} was very busy that morning.",
    "{e} laughed at a funny story.",
    "{e} often sings while cooking.",
    "{e} slept late on the weekend.",
    "{e} waved at the people on the road.",
    "It rained for most of the afternoon.",
    "The market was quiet that day.",
    "Nobody could remember the last time it snowed.",
    "The evening was calm and warm.",
    "Many people like to walk by the river.",
    "The bus was late again.",
    "The bakery sold fresh bread in the morning.",
)
"""Filler sentences that name document entities but state nothing a question asks."""


@dataclass(frozen=True)
class Fact:
    """``entity`` has ``value`` for ``relation``; ``value`` is the exact answer string."""

    entity: str
    relation: Relation
    value: str


@dataclass(frozen=True)
class QA:
    """A question about one fact and its gold answer (the fact's value)."""

    question: str
    answer: str
    fact: Fact

    @classmethod
    def about(cls, fact: Fact) -> QA:
        return cls(question=fact.relation.ask(fact.entity), answer=fact.value, fact=fact)


@dataclass(frozen=True)
class FactDocument:
    """A document, the facts it states, one question per fact, and its noise.

    ``distractors`` are the pieces of ``text`` that state no queryable fact
    (filler sentences, noise log lines, non-queryable fields); ``kind`` names
    the rendering ("prose", "json", "log", "markdown", "csv").
    """

    text: str
    facts: tuple[Fact, ...]
    questions: tuple[QA, ...]
    distractors: tuple[str, ...]
    kind: str = "prose"


def sample_facts(
    rng: random.Random,
    n_facts: int,
    relations: Sequence[Relation] = RELATIONS,
    n_entities: int | None = None,
) -> tuple[Fact, ...]:
    """Draw ``n_facts`` facts about distinct (entity, relation) pairs, in random order.

    By default the number of entities lies between the fewest that can hold
    ``n_facts`` facts and about half of ``n_facts``, so entities usually carry
    more than one fact. Entity-valued relations never point at their own entity.
    """
    fewest_entities = math.ceil(n_facts / len(relations))
    if n_entities is None:
        n_entities = rng.randint(fewest_entities, max(fewest_entities, math.ceil(n_facts / 2)))
    if not fewest_entities <= n_entities <= len(NAMES):
        raise ValueError(f"{n_entities} entities cannot hold {n_facts} facts over {len(relations)} relations")
    entities = rng.sample(NAMES, n_entities)
    pairs = rng.sample([(e, r) for e in entities for r in relations], n_facts)
    facts = []
    for entity, relation in pairs:
        value = relation.values.draw(rng)
        while value == entity:
            value = relation.values.draw(rng)
        facts.append(Fact(entity, relation, value))
    return tuple(facts)


def entities_of(facts: Sequence[Fact]) -> tuple[str, ...]:
    """Distinct entities in order of first appearance (never set order, which varies per process)."""
    return tuple(dict.fromkeys(fact.entity for fact in facts))


def make_fact_document(
    rng_or_seed: RandomSource,
    n_facts: int,
    n_distractor_sentences: int | None = None,
    relations: Sequence[Relation] = RELATIONS,
) -> FactDocument:
    """A prose document of ``n_facts`` (1..64) fact sentences with distractors interleaved.

    ``n_distractor_sentences`` defaults to ``n_facts // 2``, which keeps 16
    facts well under 400 words.
    """
    if not 1 <= n_facts <= MAX_FACTS_PER_DOCUMENT:
        raise ValueError(f"n_facts must be in 1..{MAX_FACTS_PER_DOCUMENT}, got {n_facts}")
    rng = as_rng(rng_or_seed)
    if n_distractor_sentences is None:
        n_distractor_sentences = n_facts // 2
    facts = sample_facts(rng, n_facts, relations)
    entities = entities_of(facts)
    distractors = tuple(
        rng.choice(_DISTRACTOR_TEMPLATES).format(e=rng.choice(entities)) for _ in range(n_distractor_sentences)
    )
    sentences = [fact.relation.state(fact.entity, fact.value, rng) for fact in facts]
    for distractor in distractors:
        sentences.insert(rng.randint(0, len(sentences)), distractor)
    return FactDocument(
        text=" ".join(sentences),
        facts=facts,
        questions=tuple(QA.about(fact) for fact in facts),
        distractors=distractors,
    )


def make_fact_documents(seed: int, count: int, facts_range: tuple[int, int] = (1, 16)) -> Iterator[FactDocument]:
    """``count`` prose documents from one seeded stream, with a uniform fact count in ``facts_range``.

    The default upper bound of 16 keeps a document inside the model's
    512-token window together with its question.
    """
    rng = random.Random(seed)
    for _ in range(count):
        yield make_fact_document(rng, rng.randint(*facts_range))
