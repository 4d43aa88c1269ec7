"""The base-model benchmark's account of wrong in-context answers."""

import random

from benchmarks.base_model import wrong_answer_sources
from d2l_lab.world import Fact, FactDocument, make_fact_document


def traceable(document: FactDocument) -> tuple[Fact, Fact, Fact] | None:
    """A fact, another of its entity and another of its relation, all three values unique in the document."""
    values = [fact.value for fact in document.facts]
    unique = [fact for fact in document.facts if values.count(fact.value) == 1]
    for asked in unique:
        same_entity = [o for o in unique if o != asked and o.entity == asked.entity]
        same_relation = [o for o in unique if o != asked and o.relation == asked.relation]
        if same_entity and same_relation:
            return asked, same_entity[0], same_relation[0]
    return None


def test_wrong_answers_are_traced_to_the_fact_they_came_from() -> None:
    document, (asked, same_entity, same_relation) = next(
        (doc, found)
        for doc in (make_fact_document(random.Random(seed), 8) for seed in range(200))
        if (found := traceable(doc)) is not None
    )
    qa = next(q for q in document.questions if q.fact == asked)
    replies = [asked.value, same_entity.value, same_relation.value, "no such value"]

    sources = wrong_answer_sources((document, qa, reply) for reply in replies)

    assert sources == {"same_entity": 1, "same_relation": 1, "other_fact": 0, "not_a_fact": 1}
