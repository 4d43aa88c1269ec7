"""Tests for the synthetic world generator (d2l_lab.world)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from d2l_lab.world import (
    COLOURS,
    HELDOUT_FAMILY_IDS,
    MAX_FACTS_PER_DOCUMENT,
    NAMES,
    NEEDLE_RELATIONS,
    PLACES,
    RELATIONS,
    TASK_FAMILIES,
    Fact,
    FactDocument,
    heldout_families,
    iter_corpus_texts,
    make_fact_document,
    make_fact_documents,
    make_json_document,
    make_log_document,
    make_needle_document,
    make_table_document,
    task_family,
    train_families,
)
from d2l_lab.world.vocab import CODE_VALUES, FRUITS, NumberPool

REPO_ROOT = Path(__file__).resolve().parents[1]

FACT_DOCUMENT_MAKERS: dict[str, Callable[[int, int], FactDocument]] = {
    "prose": make_fact_document,
    "json": make_json_document,
    "log": make_log_document,
    "markdown": lambda seed, n: make_table_document(seed, n, "markdown"),
    "csv": lambda seed, n: make_table_document(seed, n, "csv"),
}


def with_eight_facts(make: Callable[[int, int], FactDocument]) -> Callable[[int], FactDocument]:
    return lambda seed: make(seed, 8)


ALL_MAKERS: dict[str, Callable[[int], object]] = {
    **{kind: with_eight_facts(make) for kind, make in FACT_DOCUMENT_MAKERS.items()},
    "needle": lambda seed: make_needle_document(seed, 300, 0.4, 2),
    "corpus": lambda seed: list(iter_corpus_texts(seed, 30)),
}


def occurrences(token: str, text: str) -> int:
    """How often ``token`` occurs in ``text`` as a whole token (not inside a longer word or number)."""
    return len(re.findall(rf"(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])", text))


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ALL_MAKERS))
def test_same_seed_same_output_and_different_seed_different_output(kind: str) -> None:
    make = ALL_MAKERS[kind]
    assert make(7) == make(7)
    assert make(7) != make(8)


def test_output_is_identical_across_processes_with_different_hash_seeds() -> None:
    """Guards against iterating sets of strings, whose order changes with PYTHONHASHSEED.

    The child stubs the parent package: the world is stdlib-only, and the
    parent's imports (torch) would cost seconds per process.
    """
    script = (
        "import hashlib, sys, types\n"
        "parent = types.ModuleType('d2l_lab')\n"
        f"parent.__path__ = [{str(REPO_ROOT / 'd2l_lab')!r}]\n"
        "sys.modules['d2l_lab'] = parent\n"
        "from d2l_lab.world import iter_corpus_texts\n"
        "print(hashlib.sha256('\\x00'.join(iter_corpus_texts(3, 200)).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(result.stdout.strip())
    local = hashlib.sha256("\x00".join(iter_corpus_texts(3, 200)).encode()).hexdigest()
    assert digests == {local}


def test_a_shared_rng_gives_different_documents_per_call() -> None:
    rng = random.Random(0)
    assert make_fact_document(rng, 8) != make_fact_document(rng, 8)


# --- vocabulary -----------------------------------------------------------------------------------


def test_names_and_places_are_fixed_distinct_single_words() -> None:
    assert len(NAMES) == len(set(NAMES)) == 400
    assert len(PLACES) == len(set(PLACES)) == 40
    pools = [NAMES, PLACES, COLOURS, FRUITS]
    for word in (word for pool in pools for word in pool):
        assert word.isalpha()
    lowered = [{word.lower() for word in pool} for pool in pools]
    assert sum(map(len, lowered)) == len(set().union(*lowered)), "pools overlap"


def test_relations_are_well_formed() -> None:
    assert len(RELATIONS) >= 8
    relations = RELATIONS + NEEDLE_RELATIONS
    assert len({r.name for r in relations}) == len({r.field for r in relations}) == len(relations)
    for relation in relations:
        assert relation.statements and "{e}" in relation.question and "{v}" not in relation.question
        assert all("{e}" in s and "{v}" in s for s in relation.statements)
        if isinstance(relation.values, NumberPool):
            assert relation.values.low >= 0 and relation.values.high <= 9999


def test_codes_are_four_characters_mixing_letters_and_digits() -> None:
    rng = random.Random(0)
    for code in (CODE_VALUES.draw(rng) for _ in range(500)):
        assert re.fullmatch(r"[A-Z0-9]{4}", code)
        assert re.search(r"[A-Z]", code) and re.search(r"\d", code)


# --- fact documents -------------------------------------------------------------------------------


def assert_fact_is_stated(document: FactDocument, fact: Fact) -> None:
    """The document states ``fact`` in its own format."""
    if document.kind == "prose":
        statements = [s.format(e=fact.entity, v=fact.value) for s in fact.relation.statements]
        assert any(statement in document.text for statement in statements)
    elif document.kind == "json":
        record = next(r for r in json.loads(document.text) if r["name"] == fact.entity)
        assert str(record[fact.relation.field]) == fact.value
    elif document.kind == "log":
        assert any(
            {f"user={fact.entity}", f"{fact.relation.field}={fact.value}"} <= set(line.split())
            for line in document.text.splitlines()
        )
    else:
        rows = parse_table(document)
        assert rows[fact.entity][fact.relation.field] == fact.value


def parse_table(document: FactDocument) -> dict[str, dict[str, str]]:
    if document.kind == "csv":
        return {row["name"]: row for row in csv.DictReader(io.StringIO(document.text))}
    header, separator, *body = document.text.splitlines()
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert set(separator.replace("|", "").split()) == {"---"}
    rows = [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in body]
    return {row["name"]: row for row in rows}


@pytest.mark.parametrize("kind", sorted(FACT_DOCUMENT_MAKERS))
@pytest.mark.parametrize("n_facts", [1, 5, 16, MAX_FACTS_PER_DOCUMENT])
def test_every_question_is_answerable_and_unambiguous(kind: str, n_facts: int) -> None:
    for seed in range(10):
        document = FACT_DOCUMENT_MAKERS[kind](seed, n_facts)
        assert document.kind == kind
        assert len(document.facts) == len(document.questions) == n_facts
        pairs = [(fact.entity, fact.relation.name) for fact in document.facts]
        assert len(set(pairs)) == n_facts, "an (entity, relation) pair occurs twice"
        assert len({qa.question for qa in document.questions}) == n_facts
        for qa, fact in zip(document.questions, document.facts, strict=True):
            assert qa.fact == fact and qa.answer == fact.value
            assert qa.question == fact.relation.ask(fact.entity)
            assert fact.entity != fact.value
            assert occurrences(qa.answer, document.text) >= 1
            assert_fact_is_stated(document, fact)
        for distractor in document.distractors:
            assert distractor in document.text


def test_prose_distractors_state_no_values() -> None:
    values = set(PLACES) | set(COLOURS) | set(FRUITS)
    for seed in range(50):
        document = make_fact_document(seed, 16, n_distractor_sentences=10)
        assert len(document.distractors) == 10
        for distractor in document.distractors:
            words = set(re.findall(r"\w+", distractor))
            assert not words & values and not any(word.isdigit() for word in words)


def test_facts_share_entities_and_relations() -> None:
    """16 facts always force both kinds of sharing, so only the (entity, relation) pair identifies a fact."""
    for seed in range(50):
        facts = make_fact_document(seed, 16).facts
        assert max(Counter(fact.entity for fact in facts).values()) >= 2
        assert max(Counter(fact.relation.name for fact in facts).values()) >= 2


def test_sixteen_facts_with_distractors_fit_in_400_words() -> None:
    lengths = [len(make_fact_document(seed, 16).text.split()) for seed in range(100)]
    assert max(lengths) <= 400
    sentence_lengths = [len(s.split()) for s in re.split(r"(?<=\.) ", make_fact_document(0, 64).text)]
    assert max(sentence_lengths) <= 12


@pytest.mark.parametrize("n_facts", [0, MAX_FACTS_PER_DOCUMENT + 1])
def test_fact_count_out_of_range_is_rejected(n_facts: int) -> None:
    with pytest.raises(ValueError):
        make_fact_document(0, n_facts)


def test_make_fact_documents_yields_count_documents_within_the_range() -> None:
    documents = list(make_fact_documents(seed=1, count=40, facts_range=(2, 5)))
    assert len(documents) == 40
    assert {len(d.facts) for d in documents} <= {2, 3, 4, 5}
    assert len({d.text for d in documents}) == 40
    assert documents == list(make_fact_documents(seed=1, count=40, facts_range=(2, 5)))


def test_tool_outputs_parse_in_their_format() -> None:
    for seed in range(20):
        records = json.loads(make_json_document(seed, 10).text)
        assert isinstance(records, list) and all("name" in r and "status" in r for r in records)
        log_lines = make_log_document(seed, 10).text.splitlines()
        timestamps = [line[:19] for line in log_lines]
        assert all(re.fullmatch(r"2026-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in timestamps)
        assert timestamps == sorted(timestamps)
        for style in ("markdown", "csv"):
            table = make_table_document(seed, 10, style)
            assert len(parse_table(table)) == len({fact.entity for fact in table.facts})


# --- needle documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("n_filler_words", [200, 1000, 4000])
def test_needle_sits_at_the_requested_depth(depth: float, n_filler_words: int) -> None:
    for seed in range(3):
        document = make_needle_document(seed, n_filler_words, depth)
        words = document.text.split()
        (fact,) = document.facts
        needle = fact.relation.statements[0].format(e=fact.entity, v=fact.value)
        offset = document.needle_word_offset
        assert words[offset : offset + len(needle.split())] == needle.split()
        assert abs(offset / document.n_filler_words - depth) <= 0.05
        assert n_filler_words <= document.n_filler_words < n_filler_words + 12
        assert len(words) == document.n_filler_words + len(needle.split())


def test_needles_are_the_only_names_and_numbers_in_the_text() -> None:
    document = make_needle_document(5, 500, 0.3, n_needles=3)
    assert len(document.questions) == 3
    assert len({fact.entity for fact in document.facts}) == 3
    for qa in document.questions:
        assert occurrences(qa.answer, document.text) == 1
        assert occurrences(qa.fact.entity, document.text) == 1
    needle_text = " ".join(fact.relation.statements[0].format(e=fact.entity, v=fact.value) for fact in document.facts)
    assert needle_text in document.text
    filler = document.text.replace(needle_text, "")
    assert not re.search(r"\d", filler) and not set(filler.split()) & set(NAMES)


@pytest.mark.parametrize("depth", [-0.1, 1.1])
def test_needle_depth_out_of_range_is_rejected(depth: float) -> None:
    with pytest.raises(ValueError):
        make_needle_document(0, 100, depth)


# --- tasks ----------------------------------------------------------------------------------------


def test_at_least_30_families_with_20_distinct_descriptions() -> None:
    assert len(TASK_FAMILIES) >= 30
    assert len({family.id for family in TASK_FAMILIES}) == len(TASK_FAMILIES)
    all_descriptions = [d for family in TASK_FAMILIES for d in family.descriptions]
    assert len(set(all_descriptions)) == len(all_descriptions), "a description is repeated"
    for family in TASK_FAMILIES:
        assert len(family.descriptions) >= 20
        bags_of_words = {tuple(sorted(re.findall(r"\w+", d.lower()))) for d in family.descriptions}
        assert len(bags_of_words) == len(family.descriptions), f"{family.id}: a reordered twin"


def test_description_splits_are_disjoint_and_cover_every_description() -> None:
    for family in TASK_FAMILIES:
        train, heldout = family.train_descriptions, family.heldout_descriptions
        assert train and heldout and not set(train) & set(heldout)
        assert train + heldout == family.descriptions


def test_family_splits_are_disjoint_and_explicit() -> None:
    train, heldout = train_families(), heldout_families()
    assert train and heldout
    assert {f.id for f in heldout} == set(HELDOUT_FAMILY_IDS)
    assert not {f.id for f in train} & {f.id for f in heldout}
    assert len(train) + len(heldout) == len(TASK_FAMILIES)
    assert task_family("subtract_one").is_heldout and not task_family("add_one").is_heldout
    with pytest.raises(KeyError):
        task_family("no_such_family")


def test_examples_are_deterministic_short_and_varied() -> None:
    for family in TASK_FAMILIES:
        examples = [family.make_example(random.Random(seed)) for seed in range(30)]
        assert examples == [family.make_example(random.Random(seed)) for seed in range(30)]
        assert len(set(examples)) >= 5, f"{family.id}: examples barely vary"
        for task_input, task_output in examples:
            assert task_input.strip() and task_output.strip()
            assert len(task_output.split()) <= 12


@pytest.mark.parametrize(
    ("family_id", "check"),
    [
        ("reverse_words", lambda i, o: o.split() == i.split()[::-1]),
        ("count_words", lambda i, o: int(o) == len(i.split())),
        ("sort_digits", lambda i, o: o == "".join(sorted(i))),
        ("add_one", lambda i, o: int(o) == int(i) + 1),
        ("smaller_number", lambda i, o: int(o) == min(map(int, i.split()))),
        ("even_or_odd", lambda i, o: o == ("odd" if int(i) % 2 else "even")),
        ("replace_cat_with_dog", lambda i, o: "cat" in i.split() and "cat" not in o.split()),
        ("extract_place", lambda i, o: o in PLACES and o in i),
        ("past_tense", lambda i, o: len(i.split()) == len(o.split()) and i != o),
    ],
)
def test_examples_follow_their_task(family_id: str, check: Callable[[str, str], bool]) -> None:
    family = task_family(family_id)
    rng = random.Random(0)
    for _ in range(50):
        assert check(*family.make_example(rng))


def test_number_words_round_trip() -> None:
    to_words, to_number = task_family("number_to_words"), task_family("words_to_number")
    for seed in range(100):
        number, words = to_words.make_example(random.Random(seed))
        assert to_number.make_example(random.Random(seed)) == (words, number)


# --- corpus ---------------------------------------------------------------------------------------


def test_corpus_covers_all_vocabulary_and_descriptions() -> None:
    texts = list(iter_corpus_texts(0, 50))
    words = {word for text in texts for word in re.findall(r"\w+", text)}
    assert set(NAMES) | set(PLACES) | set(COLOURS) <= words
    corpus = "\n".join(texts)
    assert all(d in corpus for family in TASK_FAMILIES for d in family.descriptions)


def test_corpus_can_leave_out_heldout_tasks() -> None:
    corpus = "\n".join(iter_corpus_texts(0, 300, include_heldout=False))
    for family in TASK_FAMILIES:
        for description in family.heldout_descriptions:
            assert description not in corpus
        if family.is_heldout:
            assert not any(d in corpus for d in family.descriptions)
