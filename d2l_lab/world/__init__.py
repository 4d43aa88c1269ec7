"""Synthetic world: invented facts, needle documents, tool outputs and skill tasks.

No pretrained model or dataset is reachable, so the model is pretrained and
evaluated on this world. Its facts are invented, so no model can know them
closed-book, and its language is small and regular, so a tiny model can learn
it. Everything is standard library and deterministic per seed.
"""

from d2l_lab.world.corpus import iter_corpus_texts, vocabulary_texts
from d2l_lab.world.facts import (
    MAX_FACTS_PER_DOCUMENT,
    QA,
    Fact,
    FactDocument,
    make_fact_document,
    make_fact_documents,
    sample_facts,
)
from d2l_lab.world.needle import NeedleDocument, make_needle_document
from d2l_lab.world.rng import RandomSource
from d2l_lab.world.tasks import (
    HELDOUT_FAMILY_IDS,
    TASK_FAMILIES,
    TaskFamily,
    heldout_families,
    task_family,
    train_families,
)
from d2l_lab.world.tool_outputs import (
    make_json_document,
    make_log_document,
    make_table_document,
)
from d2l_lab.world.vocab import (
    COLOURS,
    NAMES,
    NEEDLE_RELATIONS,
    PLACES,
    RELATIONS,
    Relation,
    relations_named,
)

__all__ = [
    "COLOURS",
    "HELDOUT_FAMILY_IDS",
    "MAX_FACTS_PER_DOCUMENT",
    "NAMES",
    "NEEDLE_RELATIONS",
    "PLACES",
    "QA",
    "RELATIONS",
    "TASK_FAMILIES",
    "Fact",
    "FactDocument",
    "NeedleDocument",
    "RandomSource",
    "Relation",
    "TaskFamily",
    "heldout_families",
    "iter_corpus_texts",
    "make_fact_document",
    "make_fact_documents",
    "make_json_document",
    "make_log_document",
    "make_needle_document",
    "make_table_document",
    "relations_named",
    "sample_facts",
    "task_family",
    "train_families",
    "vocabulary_texts",
]
