"""What Text-to-LoRA trains and is evaluated on: task draws, student chats and no-op descriptions.

A draw is a task family, one of its descriptions and examples of it. The student sees only the
example's input (no description, no demonstrations): whatever it knows about the task must come
from the adapter. A share of draws replace the description with a *no-op description*, random
letters, a word salad or a statement of fact, whose target is the base model's own behaviour, so
the hypernetwork learns to tell an instruction from noise and gives noise an adapter that changes
nothing (the published Text-to-LoRA makes decent adapters from random strings).

Every draw is a function of the ``random.Random`` it is given, so training data is reproducible
from (seed, step) alone.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from d2l_lab.formats import Message, task_messages
from d2l_lab.world import COLOURS, NAMES, PLACES, TaskFamily, make_fact_document
from d2l_lab.world.tasks import TASK_WORDS

_SALAD_WORDS: tuple[str, ...] = NAMES + PLACES + COLOURS + TASK_WORDS


@dataclass(frozen=True)
class TaskDraw:
    """One task of a training batch: its description (or a no-op one) and example pairs."""

    family: TaskFamily
    description: str
    noop: bool  # the description is noise: the target is the base model's behaviour
    examples: tuple[tuple[str, str], ...]  # (input, output); a no-op draw's outputs are unused


def student_messages(query: str, output: str | None = None) -> list[Message]:
    """The student's chat: the bare example input (and the gold output when training)."""
    return task_messages(None, (), query, output)


def noop_description(rng: random.Random) -> str:
    """Random letters, a salad of world words, or a statement of fact: anything but an instruction."""
    kind = rng.randrange(3)
    if kind == 0:
        return " ".join(
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 12))
        )
    if kind == 1:
        return " ".join(rng.choices(_SALAD_WORDS, k=rng.randint(1, 12)))
    return make_fact_document(rng, rng.randint(1, 2)).text


def draw_tasks(
    rng: random.Random, families: Sequence[TaskFamily], tasks: int, examples: int, noop_share: float
) -> list[TaskDraw]:
    """``tasks`` draws of a random family and one of its *training* descriptions, each with
    ``examples`` examples; each draw is a no-op one with probability ``noop_share``."""
    draws = []
    for _ in range(tasks):
        family = rng.choice(families)
        noop = rng.random() < noop_share
        description = noop_description(rng) if noop else rng.choice(family.train_descriptions)
        draws.append(TaskDraw(family, description, noop, tuple(family.make_example(rng) for _ in range(examples))))
    return draws
