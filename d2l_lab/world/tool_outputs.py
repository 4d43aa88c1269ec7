"""Facts rendered as the tool outputs an agent reads: JSON records, log lines, tables.

Agents mostly learn facts from structured output rather than prose. The facts
and the questions are the same as in prose documents (same relations, same
question templates); only the rendering differs, with each relation's
``field`` as its key or column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from d2l_lab.world.facts import QA, Fact, FactDocument, entities_of, sample_facts
from d2l_lab.world.rng import RandomSource, as_rng
from d2l_lab.world.vocab import RELATIONS, NumberPool

_STATUSES = ("active", "away", "busy", "offline")
_NOISE_EVENTS = (
    "DEBUG cache refreshed",
    "DEBUG heartbeat ok",
    "INFO backup finished",
    "WARN disk almost full",
    "INFO service restarted",
    "DEBUG queue is empty",
)
_ENTITY_NOISE_EVENTS = ("INFO user={e} logged in", "INFO user={e} logged out")


def _facts_by_entity(facts: Sequence[Fact]) -> dict[str, list[Fact]]:
    grouped: dict[str, list[Fact]] = {entity: [] for entity in entities_of(facts)}
    for fact in facts:
        grouped[fact.entity].append(fact)
    return grouped


def _json_value(fact: Fact) -> int | str:
    """Numbers become JSON numbers, as a real API would return them."""
    return int(fact.value) if isinstance(fact.relation.values, NumberPool) else fact.value


def _document(text: str, facts: tuple[Fact, ...], distractors: Sequence[str], kind: str) -> FactDocument:
    return FactDocument(
        text=text,
        facts=facts,
        questions=tuple(QA.about(fact) for fact in facts),
        distractors=tuple(distractors),
        kind=kind,
    )


def make_json_document(rng_or_seed: RandomSource, n_facts: int) -> FactDocument:
    """A JSON list with one record per entity: its name, its fact fields and a status.

    The ``status`` field is the noise: it is not a relation, so no question asks it.
    """
    rng = as_rng(rng_or_seed)
    facts = sample_facts(rng, n_facts)
    records = []
    for entity, entity_facts in _facts_by_entity(facts).items():
        record: dict[str, int | str] = {"name": entity}
        record.update({fact.relation.field: _json_value(fact) for fact in entity_facts})
        record["status"] = rng.choice(_STATUSES)
        records.append(record)
    distractors = [json.dumps({"status": record["status"]})[1:-1] for record in records]
    return _document(json.dumps(records), facts, distractors, "json")


def make_log_document(rng_or_seed: RandomSource, n_facts: int, n_noise_lines: int | None = None) -> FactDocument:
    """Timestamped log lines, one ``user=<name> key=value ...`` line per entity, among noise lines.

    Noise lines (``n_noise_lines``, default ``n_facts // 2``) include logins of
    the same users, so a user's name alone does not mark a fact line.
    """
    rng = as_rng(rng_or_seed)
    facts = sample_facts(rng, n_facts)
    if n_noise_lines is None:
        n_noise_lines = n_facts // 2
    entities = entities_of(facts)
    fact_events = [
        f"INFO user={entity} " + " ".join(f"{fact.relation.field}={fact.value}" for fact in entity_facts)
        for entity, entity_facts in _facts_by_entity(facts).items()
    ]
    noise_events = [
        rng.choice(_NOISE_EVENTS + _ENTITY_NOISE_EVENTS).format(e=rng.choice(entities)) for _ in range(n_noise_lines)
    ]
    events = [(event, False) for event in fact_events]
    for noise_event in noise_events:
        events.insert(rng.randint(0, len(events)), (noise_event, True))

    timestamp = datetime(2026, 1, rng.randint(1, 28)) + timedelta(seconds=rng.randint(0, 20 * 3600))
    lines, distractors = [], []
    for event, is_noise in events:
        timestamp += timedelta(seconds=rng.randint(1, 90))
        line = f"{timestamp:%Y-%m-%d %H:%M:%S} {event}"
        lines.append(line)
        if is_noise:
            distractors.append(line)
    return _document("\n".join(lines), facts, distractors, "log")


def make_table_document(
    rng_or_seed: RandomSource, n_facts: int, style: Literal["markdown", "csv"] = "markdown"
) -> FactDocument:
    """A table with a ``name`` column and one column per relation; unknown cells are left empty.

    Two to four relations are used, and just enough rows to hold the facts,
    so the table is dense; reading a cell needs both its row and its column.
    A table has no distractors: its empty cells are its noise.
    """
    rng = as_rng(rng_or_seed)
    relations = rng.sample(RELATIONS, rng.randint(2, 4))
    facts = sample_facts(rng, n_facts, relations, n_entities=math.ceil(n_facts / len(relations)))
    header = ["name"] + [relation.field for relation in relations]
    rows = []
    for entity, entity_facts in _facts_by_entity(facts).items():
        value_by_relation = {fact.relation.name: fact.value for fact in entity_facts}
        rows.append([entity] + [value_by_relation.get(relation.name, "") for relation in relations])
    if style == "markdown":
        lines = [_markdown_row(header), _markdown_row(["---"] * len(header))]
        lines += [_markdown_row([cell or "-" for cell in row]) for row in rows]
    else:
        lines = [",".join(row) for row in [header, *rows]]
    return _document("\n".join(lines), facts, (), style)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
