"""Fixed vocabulary of the fact world: entity names, value pools and relations.

Nothing here depends on a seed. The tokenizer is trained once on this world,
so every name and value comes from a closed set that it can cover with whole
words; a seed only decides which of them a document uses. Names and towns are
invented so that no model can know a fact about them without reading it.
"""

from __future__ import annotations

import itertools
import random
import string
from dataclasses import dataclass
from typing import Protocol

_NAME_ONSETS = (
    "Zor",
    "Tal",
    "Mir",
    "Kel",
    "Bran",
    "Dov",
    "Fen",
    "Gal",
    "Hal",
    "Jor",
    "Lun",
    "Mar",
    "Nel",
    "Pol",
    "Quin",
    "Rav",
    "Sel",
    "Tor",
    "Vel",
    "Yar",
)
_NAME_CODAS = (
    "vik",
    "emu",
    "ani",
    "ora",
    "ix",
    "ez",
    "una",
    "ito",
    "ak",
    "ben",
    "ira",
    "os",
    "ul",
    "eth",
    "amo",
    "ri",
    "dan",
    "ko",
    "ille",
    "ys",
)

NAMES: tuple[str, ...] = tuple(onset + coda for onset, coda in itertools.product(_NAME_ONSETS, _NAME_CODAS))
"""400 invented person names; every onset/coda pair, so the pool is fixed and regular."""

_PLACE_STEMS = ("Palm", "Bril", "Cor", "Dun", "Esk", "Glim", "Harn", "Ost")
_PLACE_ENDINGS = ("era", "wick", "holm", "bury", "mere")

PLACES: tuple[str, ...] = tuple(stem + ending for stem, ending in itertools.product(_PLACE_STEMS, _PLACE_ENDINGS))
"""40 invented town names, built from syllables no person name uses."""

WARM_COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "pink", "gold", "brown")
COLD_COLOURS: tuple[str, ...] = ("blue", "green", "purple", "grey", "silver", "teal")
COLOURS: tuple[str, ...] = WARM_COLOURS + COLD_COLOURS

FRUITS: tuple[str, ...] = (
    "pear",
    "plum",
    "grape",
    "lemon",
    "peach",
    "mango",
    "cherry",
    "melon",
    "banana",
    "lime",
    "fig",
    "kiwi",
)
"""Fruits start with a consonant so "a {fruit}" is always grammatical."""

_CODE_LETTERS = "".join(letter for letter in string.ascii_uppercase if letter not in "IO")
_CODE_DIGITS = string.digits


class ValuePool(Protocol):
    """Where the value of a relation comes from."""

    def draw(self, rng: random.Random) -> str:
        """Return one value as the exact string the text and the gold answer use."""
        ...


@dataclass(frozen=True)
class WordPool:
    """Values picked from a closed list of words (towns, colours, fruits, names)."""

    words: tuple[str, ...]

    def draw(self, rng: random.Random) -> str:
        return rng.choice(self.words)


@dataclass(frozen=True)
class NumberPool:
    """Whole numbers in ``[low, high]``; at most 4 digits so each stays a few tokens."""

    low: int
    high: int

    def draw(self, rng: random.Random) -> str:
        return str(rng.randint(self.low, self.high))


@dataclass(frozen=True)
class CodePool:
    """4-character codes such as ``K7Q2`` that mix letters and digits.

    At least one letter and one digit, so a code never reads as a number or a
    word. I and O are left out because they look like 1 and 0.
    """

    length: int = 4

    def draw(self, rng: random.Random) -> str:
        while True:
            code = "".join(rng.choice(_CODE_LETTERS + _CODE_DIGITS) for _ in range(self.length))
            if any(c in _CODE_LETTERS for c in code) and any(c in _CODE_DIGITS for c in code):
                return code


PLACE_VALUES = WordPool(PLACES)
COLOUR_VALUES = WordPool(COLOURS)
FRUIT_VALUES = WordPool(FRUITS)
PERSON_VALUES = WordPool(NAMES)
CODE_VALUES = CodePool()


@dataclass(frozen=True)
class Relation:
    """A queryable attribute of an entity, with the words used to state and ask it.

    ``statements`` are paraphrases of one fact, so a model must learn the fact
    rather than one surface form; ``field`` is the key the fact gets in tool
    outputs (JSON, logs, tables). Templates use ``{e}`` for the entity and
    ``{v}`` for the value.
    """

    name: str
    field: str
    values: ValuePool
    statements: tuple[str, ...]
    question: str

    def state(self, entity: str, value: str, rng: random.Random) -> str:
        """One sentence stating the fact, in a paraphrase chosen by ``rng``."""
        return rng.choice(self.statements).format(e=entity, v=value)

    def ask(self, entity: str) -> str:
        """The question whose gold answer is this relation's value for ``entity``."""
        return self.question.format(e=entity)


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "lives_in",
        "city",
        PLACE_VALUES,
        ("{e} lives in {v}.", "{e} has a home in the town of {v}.", "The home of {e} is in {v}."),
        "Where does {e} live?",
    ),
    Relation(
        "works_in",
        "office",
        PLACE_VALUES,
        ("{e} works in {v}.", "Every day {e} goes to work in {v}.", "The office of {e} is in {v}."),
        "Where does {e} work?",
    ),
    Relation(
        "born_in",
        "birthplace",
        PLACE_VALUES,
        ("{e} was born in {v}.", "The birthplace of {e} is {v}."),
        "Where was {e} born?",
    ),
    Relation(
        "favourite_colour",
        "colour",
        COLOUR_VALUES,
        (
            "The favourite colour of {e} is {v}.",
            "{e} likes the colour {v} the most.",
            "Of all colours, {e} loves {v} best.",
        ),
        "What is the favourite colour of {e}?",
    ),
    Relation(
        "car_colour",
        "car",
        COLOUR_VALUES,
        ("{e} drives a {v} car.", "The car of {e} is {v}."),
        "What colour is the car of {e}?",
    ),
    Relation(
        "favourite_fruit",
        "fruit",
        FRUIT_VALUES,
        ("The favourite fruit of {e} is the {v}.", "{e} eats a {v} every day."),
        "What is the favourite fruit of {e}?",
    ),
    Relation(
        "age",
        "age",
        NumberPool(18, 95),
        ("{e} is {v} years old.", "The age of {e} is {v}."),
        "How old is {e}?",
    ),
    Relation(
        "pet_count",
        "pets",
        NumberPool(2, 9),
        ("{e} has {v} pets.", "{e} keeps {v} pets at home."),
        "How many pets does {e} have?",
    ),
    Relation(
        "door_code",
        "door_code",
        NumberPool(1000, 9999),
        ("The door code of {e} is {v}.", "{e} opens the door with the code {v}."),
        "What is the door code of {e}?",
    ),
    Relation(
        "locker_number",
        "locker",
        NumberPool(1, 999),
        ("{e} uses locker {v}.", "The locker of {e} has the number {v}."),
        "What is the locker number of {e}?",
    ),
    Relation(
        "badge_code",
        "badge",
        CODE_VALUES,
        ("{e} wears badge {v}.", "The badge code of {e} is {v}."),
        "What is the badge code of {e}?",
    ),
    Relation(
        "boss",
        "boss",
        PERSON_VALUES,
        ("The boss of {e} is {v}.", "{v} is the boss of {e}."),
        "Who is the boss of {e}?",
    ),
)
"""Relations of prose and tool-output documents.

``boss`` is deliberately one-directional: a symmetric relation such as
"friend" would make "A is a friend of B" also answer a question about B.
"""


def relations_named(names: str) -> tuple[Relation, ...]:
    """The relations in a comma-separated list of names (as training scripts take them), in order."""
    by_name = {relation.name: relation for relation in RELATIONS}
    wanted = list(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))  # no repeats
    unknown = sorted(set(wanted) - set(by_name))
    if unknown:
        raise ValueError(f"unknown relation(s) {unknown}; known: {sorted(by_name)}")
    return tuple(by_name[name] for name in wanted)


NEEDLE_RELATIONS: tuple[Relation, ...] = (
    Relation(
        "secret_number",
        "secret_number",
        NumberPool(1000, 9999),
        ("The secret number of {e} is {v}.",),
        "What is the secret number of {e}?",
    ),
    Relation(
        "secret_code",
        "secret_code",
        CODE_VALUES,
        ("The secret code of {e} is {v}.",),
        "What is the secret code of {e}?",
    ),
)
"""Relations for needles. Their values are numbers and codes, which filler text never contains."""
