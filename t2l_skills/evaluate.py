"""How good generated skills are: exact match on descriptions the hypernetwork never saw.

Each held-out description of a family is asked a few of the family's queries, bare (as the
student sees them), and scored four ways with the same greedy decoding
(:func:`d2l_memory.embedded.evaluate.greedy_answers`):

* ``base``: the base model alone (what a bare query gets without help);
* ``prompted``: the base model with the description in its prompt (the in-context reference);
* ``skill``: the base model with the skill generated from the description;
* ``noop_agreement``: with a skill generated from a no-op description (noise), the share of
  answers equal to the base model's: 1.0 means noise changes nothing, as it should;
* ``noop_delta_ratio``: how large noise's adapters are next to the descriptions' (mean Frobenius
  norm of the whole delta): near 0 when the hypernetwork tells an instruction from noise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from d2l_memory.embedded.evaluate import greedy_answers
from d2l_memory.embedded.formats import Message, task_messages
from d2l_memory.errors import ModelError
from d2l_memory.host import AdapterHost
from d2l_memory.lora_layer import use_active_set
from d2l_memory.routing import TextEncoder
from d2l_memory.world import TaskFamily
from t2l_skills.data import noop_description, student_messages
from t2l_skills.hypernet import Factors, TextToLoRA, active_set, delta_norms

MAX_NEW_TOKENS = 24
"""Task outputs are at most 12 words; digits are one token each, so give them room."""


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
    pairs = [(family, description) for family in families for description in family.heldout_descriptions]
    descriptions = [description for _, description in pairs]
    noise = [noop_description(rng) for _ in pairs]
    items = [  # (index of the description, query, gold output)
        (index, *family.make_example(rng))
        for index, (family, _) in enumerate(pairs)
        for _ in range(queries_per_description)
    ]
    bare = [student_messages(query) for _, query, _ in items]
    prompted = [task_messages(descriptions[index], (), query) for index, query, _ in items]
    gold = [output.strip() for _, _, output in items]

    tokenizer = host.tokenizer
    if tokenizer is None:
        raise ModelError("evaluation needs the host's tokenizer; pass one to AdapterHost(model, tokenizer)")
    hypernet.eval()
    device = next(hypernet.parameters()).device
    skills = hypernet(encoder.encode(descriptions).to(device))  # per description
    noops = hypernet(encoder.encode(noise).to(device))
    owners = [index for index, _, _ in items]

    def answers(chats: list[list[Message]], factors: Factors | None = None) -> list[str]:
        activate = None if factors is None else _activate_rows(factors, owners, host.dtype)
        return greedy_answers(host.model, tokenizer, chats, MAX_NEW_TOKENS, activate=activate)

    base = answers(bare)
    scores = {
        "base": _share(base, gold),
        "prompted": _share(answers(prompted), gold),
        "skill": _share(answers(bare, skills), gold),
        "noop_agreement": _share(answers(bare, noops), base),
        "noop_delta_ratio": delta_norms(noops).mean().item() / max(delta_norms(skills).mean().item(), 1e-12),
    }
    return scores | {"descriptions": len(descriptions), "queries": len(items)}


def _activate_rows(
    factors: Factors, owners: Sequence[int], dtype: torch.dtype
) -> Callable[[Sequence[int]], AbstractContextManager]:
    """For greedy_answers: chat ``i`` runs with the adapter in row ``owners[i]`` of ``factors``."""

    def activate(chats: Sequence[int]) -> AbstractContextManager:
        rows = torch.tensor([owners[chat] for chat in chats], device=next(iter(factors.values()))[0].device)
        return use_active_set(active_set({m: (A[rows].to(dtype), B[rows].to(dtype)) for m, (A, B) in factors.items()}))

    return activate


def _share(answers: Sequence[str], reference: Sequence[str]) -> float:
    return sum(a == b for a, b in zip(answers, reference)) / max(1, len(answers))
