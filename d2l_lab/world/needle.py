"""Needle-in-a-haystack documents: boring filler with secret facts at a chosen depth.

They measure whether a fact is recalled regardless of where it sits in a long
document. The filler never contains a name, number or code, so the needle's
answer cannot be confused with anything around it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from d2l_lab.world.facts import QA, Fact
from d2l_lab.world.rng import RandomSource, as_rng
from d2l_lab.world.vocab import NAMES, NEEDLE_RELATIONS

FILLER_NOUNS: tuple[str, ...] = (
    "grass",
    "wind",
    "sky",
    "river",
    "road",
    "hill",
    "tree",
    "cloud",
    "field",
    "stone",
    "lake",
    "path",
    "leaf",
    "garden",
    "bridge",
    "fence",
)
FILLER_ADJECTIVES: tuple[str, ...] = (
    "green",
    "calm",
    "quiet",
    "wide",
    "soft",
    "still",
    "long",
    "bright",
    "grey",
    "dry",
    "old",
    "small",
)
_FILLER_TEMPLATES: tuple[str, ...] = (
    "The {noun} is {adjective}.",
    "The {noun} looks {adjective} today.",
    "The {adjective} {noun} is next to the {other_noun}.",
    "We walk past the {noun} and the {other_noun}.",
    "Nothing much happens near the {noun}.",
)


@dataclass(frozen=True)
class NeedleDocument:
    """Filler text with needle sentences inserted as one block.

    ``needle_word_offset`` counts the whitespace-separated words of ``text``
    before the first needle; divided by ``n_filler_words`` it is the realised
    depth.
    """

    text: str
    facts: tuple[Fact, ...]
    questions: tuple[QA, ...]
    needle_word_offset: int
    n_filler_words: int


def _filler_sentence(rng: random.Random) -> str:
    noun, other_noun = rng.sample(FILLER_NOUNS, 2)
    return rng.choice(_FILLER_TEMPLATES).format(
        noun=noun, other_noun=other_noun, adjective=rng.choice(FILLER_ADJECTIVES)
    )


def make_needle_document(
    rng_or_seed: RandomSource, n_filler_words: int, depth: float, n_needles: int = 1
) -> NeedleDocument:
    """About ``n_filler_words`` words of filler with ``n_needles`` secret facts at ``depth``.

    ``depth`` 0 puts the needles first, 1 puts them last. The filler overshoots
    the target by less than one sentence, and the needles go to the sentence
    boundary nearest the requested depth. Each needle is about a different
    entity, so every question has one answer.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if n_needles < 1:
        raise ValueError(f"n_needles must be at least 1, got {n_needles}")
    rng = as_rng(rng_or_seed)

    filler: list[str] = []
    boundaries = [0]  # word offset of the start of each filler sentence, then of the end
    while boundaries[-1] < n_filler_words:
        filler.append(_filler_sentence(rng))
        boundaries.append(boundaries[-1] + len(filler[-1].split()))
    target_offset = depth * boundaries[-1]
    insert_at = min(range(len(boundaries)), key=lambda i: abs(boundaries[i] - target_offset))

    facts = []
    for entity in rng.sample(NAMES, n_needles):
        relation = rng.choice(NEEDLE_RELATIONS)
        facts.append(Fact(entity, relation, relation.values.draw(rng)))
    needles = [fact.relation.state(fact.entity, fact.value, rng) for fact in facts]
    return NeedleDocument(
        text=" ".join(filler[:insert_at] + needles + filler[insert_at:]),
        facts=tuple(facts),
        questions=tuple(QA.about(fact) for fact in facts),
        needle_word_offset=boundaries[insert_at],
        n_filler_words=boundaries[-1],
    )
