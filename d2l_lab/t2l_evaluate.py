"""How good generated skills are: exact match on descriptions the hypernetwork never saw.

Each held-out description of a family is asked a few of the family's queries, bare (as the
student sees them), and scored four ways with the same greedy decoding
(:func:`d2l_lab.evaluate.greedy_answers`):

* ``base``: the base model alone (what a bare query gets without help);
* ``prompted``: the base model with the description in its prompt (the in-context reference);
* ``skill``: the base model with the skill generated from the description;
* ``noop_agreement``: with a skill generated from a no-op description (noise), the share of
  answers equal to the base model's: 1.0 means noise changes nothing, as it should;
* ``noop_delta_ratio``: how large noise's adapters are next to the descriptions' (mean Frobenius
  norm of the whole delta): near 0 when the hypernetwork tells an instruction from noise.

:func:`heldout_queries`, :func:`answers_with` and :func:`share_equal` are the pieces, shared with
``benchmarks.t2l``, which scores more methods on the same kind of queries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from d2l_lab.evaluate import greedy_answers
from d2l_lab.formats import Message, task_messages
from d2l_lab.t2l_data import noop_description, student_messages
from d2l_lab.world import TaskFamily
from d2l_memory.errors import ModelError
from d2l_memory.host import AdapterHost
from d2l_memory.lora_layer import per_row_active_set, use_active_set
from d2l_memory.routing import TextEncoder
from t2l_skills.hypernet import Factors, TextToLoRA, delta_norms

MAX_NEW_TOKENS = 24
"""Task outputs are at most 12 words; digits are one token each, so give them room."""


@dataclass(frozen=True)
class HeldoutQueries:
    """The held-out descriptions of some families, each with a few queries of its own family."""

    descriptions: tuple[str, ...]
    families: tuple[TaskFamily, ...]  # the family of each description
    owners: tuple[int, ...]  # per query: the index of the description it is asked under
    queries: tuple[str, ...]
    gold: tuple[str, ...]  # per query, stripped as answers are

    def bare(self) -> list[list[Message]]:
        """The student's chats: the queries alone."""
        return [student_messages(query) for query in self.queries]

    def prompted(self, descriptions: Sequence[str] | None = None) -> list[list[Message]]:
        """Each query under its description (or under ``descriptions[owner]`` when given)."""
        descriptions = self.descriptions if descriptions is None else descriptions
        return [task_messages(descriptions[owner], (), query) for owner, query in zip(self.owners, self.queries)]


def heldout_queries(
    families: Sequence[TaskFamily], queries_per_description: int, rng: random.Random, *, all_descriptions: bool = False
) -> HeldoutQueries:
    """``queries_per_description`` fresh examples of its family for every held-out description of
    ``families`` (every description with ``all_descriptions``: all are unseen in a held-out family)."""
    pairs = [
        (family, description)
        for family in families
        for description in (family.descriptions if all_descriptions else family.heldout_descriptions)
    ]
    items = [  # (index of the description, query, gold output)
        (index, *family.make_example(rng))
        for index, (family, _) in enumerate(pairs)
        for _ in range(queries_per_description)
    ]
    return HeldoutQueries(
        descriptions=tuple(description for _, description in pairs),
        families=tuple(family for family, _ in pairs),
        owners=tuple(index for index, _, _ in items),
        queries=tuple(query for _, query, _ in items),
        gold=tuple(output.strip() for _, _, output in items),
    )


@torch.no_grad()
def evaluate_skills(
    host: AdapterHost,
    hypernet: TextToLoRA,
    encoder: TextEncoder,
    families: Sequence[TaskFamily],
    *,
    queries_per_description: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracies (and the no-op agreement) over the held-out descriptions of ``families``."""
    rng = random.Random(seed)
    noise = [noop_description(rng) for family in families for _ in family.heldout_descriptions]
    probe = heldout_queries(families, queries_per_description, rng)
    hypernet.eval()
    device = next(hypernet.parameters()).device
    skills = hypernet(encoder.encode(list(probe.descriptions)).to(device))  # per description
    noops = hypernet(encoder.encode(noise).to(device))

    bare = probe.bare()
    base = answers_with(host, bare)
    scores = {
        "base": share_equal(base, probe.gold),
        "prompted": share_equal(answers_with(host, probe.prompted()), probe.gold),
        "skill": share_equal(answers_with(host, bare, skills, probe.owners), probe.gold),
        "noop_agreement": share_equal(answers_with(host, bare, noops, probe.owners), base),
        "noop_delta_ratio": delta_norms(noops).mean().item() / max(delta_norms(skills).mean().item(), 1e-12),
    }
    return scores | {"descriptions": len(probe.descriptions), "queries": len(probe.queries)}


def answers_with(
    host: AdapterHost,
    chats: Sequence[Sequence[Message]],
    factors: Factors | None = None,
    owners: Sequence[int] | None = None,
) -> list[str]:
    """Greedy answers to ``chats``; with ``factors``, chat ``i`` runs with the adapter in row
    ``owners[i]`` of them (row 0 for every chat when ``owners`` is None)."""
    if host.tokenizer is None:
        raise ModelError("evaluation needs the host's tokenizer; pass one to AdapterHost(model, tokenizer)")
    activate = None
    if factors is not None:
        activate = activate_rows(factors, [0] * len(chats) if owners is None else owners, host.dtype)
    return greedy_answers(host.model, host.tokenizer, chats, MAX_NEW_TOKENS, activate=activate)


def activate_rows(
    factors: Factors, owners: Sequence[int], dtype: torch.dtype
) -> Callable[[Sequence[int]], AbstractContextManager]:
    """For greedy_answers: chat ``i`` runs with the adapter in row ``owners[i]`` of ``factors``."""

    def activate(chats: Sequence[int]) -> AbstractContextManager:
        rows = torch.tensor([owners[chat] for chat in chats], device=next(iter(factors.values()))[0].device)
        return use_active_set(
            per_row_active_set("t2l", {m: (A[rows].to(dtype), B[rows].to(dtype)) for m, (A, B) in factors.items()})
        )

    return activate


def share_equal(answers: Sequence[str], reference: Sequence[str]) -> float:
    """The share of answers equal to their reference (exact match when the reference is gold)."""
    return sum(a == b for a, b in zip(answers, reference)) / max(1, len(answers))
