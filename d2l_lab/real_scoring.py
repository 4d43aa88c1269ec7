"""Asking a host questions about real documents, and scoring its replies.

Shared by the real-model benchmark and the adapter-scale calibration, so a scale is picked on the
same prompts, decoding and scoring the benchmark reports. Each question is asked on its own turn,
greedily; replies are scored by normalized answer-contained (a chatty model answers in sentences)
and by exact match.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence

from d2l_lab.evaluate import greedy_answers
from d2l_lab.real_docs import RealDocument, RealQA, contains, exact
from d2l_memory import AdapterHost
from d2l_memory.host import AdapterSelection

Item = tuple[AdapterSelection, str | None, RealQA]
"""Adapters to activate, the document in the prompt (or None) and the question."""


def messages(document: str | None, question: str) -> list[dict[str, str]]:
    content = question if document is None else f"{document}\n\n{question}"
    return [{"role": "user", "content": content}]


def answers(host: AdapterHost, items: Sequence[Item], max_new_tokens: int = 24) -> list[str]:
    chats = [messages(document, qa.question) for _, document, qa in items]

    def activate(rows: Sequence[int]):
        return host.active_rows([items[i][0] for i in rows])

    return greedy_answers(host.model, host.tokenizer, chats, max_new_tokens=max_new_tokens, activate=activate)


def scores(host: AdapterHost, items: Sequence[Item]) -> dict[str, float]:
    """``{"contains": .., "exact": ..}``: the shares of replies that contain / equal the gold answer."""
    replies = answers(host, items)
    golds = [qa.answer for _, _, qa in items]
    return {
        "contains": round(statistics.mean(contains(r, g) for r, g in zip(replies, golds)), 4),
        "exact": round(statistics.mean(exact(r, g) for r, g in zip(replies, golds)), 4),
    }


def pick(documents: Sequence[RealDocument], rng: random.Random, questions: int) -> list[tuple[RealDocument, RealQA]]:
    """Documents in a seeded order, one question each, until ``questions`` are asked."""
    order = rng.sample(list(documents), len(documents))
    return [(doc, rng.choice(doc.questions)) for doc in order[:questions]]
