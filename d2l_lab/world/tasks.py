"""Task world for Text-to-LoRA: skill families, each with many descriptions and an example maker.

A hypernetwork learns to turn a task description into an adapter. To test that
it understood the description rather than memorised it, every family keeps its
last ``N_HELDOUT_DESCRIPTIONS`` descriptions out of training, and a few whole
families (``HELDOUT_FAMILY_IDS``) are held out. Each held-out family has a
trained sibling (drop first / drop last word, add / subtract one, ...), so it is
new as a task but built from known parts.

Tasks work on whole words from a small vocabulary and on digit strings, never
on letters or case: the model's tokenizer is word-level and may lowercase.
Outputs are at most 12 words.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from d2l_lab.world.vocab import COLD_COLOURS, COLOURS, FRUITS, NAMES, PLACES, WARM_COLOURS

Example = tuple[str, str]
ExampleMaker = Callable[[random.Random], Example]

N_HELDOUT_DESCRIPTIONS = 5

ANIMALS: tuple[str, ...] = (
    "cat",
    "dog",
    "fox",
    "owl",
    "bear",
    "duck",
    "horse",
    "goat",
    "sheep",
    "frog",
    "mouse",
    "wolf",
)
OBJECTS: tuple[str, ...] = (
    "cup",
    "book",
    "chair",
    "lamp",
    "key",
    "box",
    "hat",
    "ball",
    "bell",
    "coat",
    "pen",
    "bag",
)
TASK_WORDS: tuple[str, ...] = ANIMALS + FRUITS + OBJECTS
"""The words that word-list tasks draw from; colours are added only where a task is about them."""

_OPPOSITE_PAIRS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("old", "new"),
    ("fast", "slow"),
    ("day", "night"),
    ("left", "right"),
    ("open", "shut"),
    ("high", "low"),
    ("wet", "dry"),
    ("light", "dark"),
    ("early", "late"),
    ("full", "empty"),
    ("long", "short"),
    ("happy", "sad"),
    ("loud", "quiet"),
    ("hard", "soft"),
    ("near", "far"),
    ("rich", "poor"),
    ("first", "last"),
)
OPPOSITES: dict[str, str] = {**dict(_OPPOSITE_PAIRS), **{b: a for a, b in _OPPOSITE_PAIRS}}
"""Antonyms in both directions, so every word in the table has an opposite."""

PAST_TENSE: dict[str, str] = {
    "finds": "found",
    "takes": "took",
    "sees": "saw",
    "buys": "bought",
    "sells": "sold",
    "holds": "held",
    "paints": "painted",
    "opens": "opened",
    "drops": "dropped",
    "carries": "carried",
    "moves": "moved",
    "brings": "brought",
    "wants": "wanted",
    "cleans": "cleaned",
}

_UNITS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
NUMBER_WORDS: tuple[str, ...] = _UNITS + _TENS[2:]

_EXTRACTION_TEMPLATES: tuple[str, ...] = (
    "{name} bought {number} {colour} cups in {place}.",
    "In {place}, {name} saw {number} {colour} birds.",
    "{name} painted {number} doors {colour} in {place}.",
    "A {colour} bus took {name} and {number} friends to {place}.",
)
"""Sentences holding one name, place, number and colour each, for the extraction tasks."""


def number_in_words(number: int) -> str:
    """English words for 0..99, e.g. 42 -> "forty two", 40 -> "forty"."""
    if number < 20:
        return _UNITS[number]
    tens, units = divmod(number, 10)
    return _TENS[tens] if units == 0 else f"{_TENS[tens]} {_UNITS[units]}"


# --- example makers, grouped by input kind ------------------------------------------------------


def _words_task(
    transform: Callable[[list[str]], Sequence[str] | str],
    min_words: int = 2,
    max_words: int = 6,
) -> ExampleMaker:
    """Input: distinct words from ``TASK_WORDS``; output: ``transform`` of them."""

    def make(rng: random.Random) -> Example:
        words = rng.sample(TASK_WORDS, rng.randint(min_words, max_words))
        output = transform(words)
        return " ".join(words), output if isinstance(output, str) else " ".join(output)

    return make


def _digits_task(transform: Callable[[str], str], min_digits: int = 3, max_digits: int = 8) -> ExampleMaker:
    """Input: a string of random digits; output: ``transform`` of it."""

    def make(rng: random.Random) -> Example:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits)))
        return digits, transform(digits)

    return make


def _number_task(transform: Callable[[int], object], low: int, high: int) -> ExampleMaker:
    """Input: one number in ``[low, high]``; output: ``transform`` of it as text."""

    def make(rng: random.Random) -> Example:
        number = rng.randint(low, high)
        return str(number), str(transform(number))

    return make


def _number_pair_task(transform: Callable[[int, int], int], high: int) -> ExampleMaker:
    """Input: two different numbers in ``[0, high]``; output: ``transform`` of them."""

    def make(rng: random.Random) -> Example:
        first, second = rng.sample(range(high + 1), 2)
        return f"{first} {second}", str(transform(first, second))

    return make


def _classify_task(words_by_label: dict[str, Sequence[str]]) -> ExampleMaker:
    """Input: one word; output: the label whose word list holds it (labels drawn uniformly)."""

    def make(rng: random.Random) -> Example:
        label = rng.choice(list(words_by_label))
        return rng.choice(words_by_label[label]), label

    return make


def _extract_task(slot: str) -> ExampleMaker:
    """Input: a sentence with a name, place, number and colour; output: the one in ``slot``."""

    def make(rng: random.Random) -> Example:
        values = {
            "name": rng.choice(NAMES),
            "place": rng.choice(PLACES),
            "number": str(rng.randint(2, 999)),
            "colour": rng.choice(COLOURS),
        }
        return rng.choice(_EXTRACTION_TEMPLATES).format(**values), values[slot]

    return make


def _replace_cat_with_dog(rng: random.Random) -> Example:
    """Input: words with at least one cat; output: each cat replaced by dog."""
    words = [rng.choice(TASK_WORDS) for _ in range(rng.randint(2, 6))]
    words[rng.randrange(len(words))] = "cat"
    return " ".join(words), " ".join("dog" if word == "cat" else word for word in words)


def _keep_animals(rng: random.Random) -> Example:
    """Input: words with at least one animal; output: the animals, in order."""
    words = rng.sample(TASK_WORDS, rng.randint(2, 7))
    words[rng.randrange(len(words))] = rng.choice([a for a in ANIMALS if a not in words])
    return " ".join(words), " ".join(word for word in words if word in ANIMALS)


def _contains_colour(rng: random.Random) -> Example:
    """Input: words that hold a colour half of the time; output: yes or no."""
    words = rng.sample(TASK_WORDS, rng.randint(2, 6))
    has_colour = rng.random() < 0.5
    if has_colour:
        words[rng.randrange(len(words))] = rng.choice(COLOURS)
    return " ".join(words), "yes" if has_colour else "no"


def _opposite_words(rng: random.Random) -> Example:
    words = rng.sample(sorted(OPPOSITES), rng.randint(1, 4))
    return " ".join(words), " ".join(OPPOSITES[word] for word in words)


def _words_to_number(rng: random.Random) -> Example:
    number = rng.randint(0, 99)
    return number_in_words(number), str(number)


def _past_tense(rng: random.Random) -> Example:
    """Input: "<name> <verb> the <object> in <place>." in the present; output: the same in the past."""
    verb = rng.choice(sorted(PAST_TENSE))
    sentence = "{name} {verb} the {object} in {place}."
    slots = {"name": rng.choice(NAMES), "object": rng.choice(OBJECTS), "place": rng.choice(PLACES)}
    return sentence.format(verb=verb, **slots), sentence.format(verb=PAST_TENSE[verb], **slots)


# --- families -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFamily:
    """One skill: a stable id, hand-written descriptions and a deterministic example maker."""

    id: str
    descriptions: tuple[str, ...]
    make_example: ExampleMaker

    @property
    def train_descriptions(self) -> tuple[str, ...]:
        return self.descriptions[:-N_HELDOUT_DESCRIPTIONS]

    @property
    def heldout_descriptions(self) -> tuple[str, ...]:
        return self.descriptions[-N_HELDOUT_DESCRIPTIONS:]

    @property
    def is_heldout(self) -> bool:
        return self.id in HELDOUT_FAMILY_IDS


HELDOUT_FAMILY_IDS: tuple[str, ...] = (
    "drop_last_word",
    "sort_digits_descending",
    "subtract_one",
    "smaller_number",
    "words_to_number",
    "extract_name",
)

TASK_FAMILIES: tuple[TaskFamily, ...] = (
    TaskFamily(
        "reverse_words",
        (
            "Reverse the order of the words.",
            "Write the same words, but from last to first.",
            "Read the list backwards and write down each word as you go.",
            "Put the words in the opposite order.",
            "The last word should come first and the first word should come last.",
            "Flip the word list so that it runs from end to start.",
            "Return every word of the input in reverse sequence.",
            "Start with the final word and work your way back to the first one.",
            "Turn the list around.",
            "Keep all the words but reverse where they stand.",
            "Given some words, output them backwards, one word at a time.",
            "Write the list again in mirror order.",
            "Your answer is the input words read from right to left.",
            "Undo the order: the end of the list becomes the beginning.",
            "List the words in reverse.",
            "Copy the words, going from the back of the list to the front.",
            "What do you get if you read the words from the end? Write that.",
            "Backwards word order, please.",
            "Rearrange the words so they appear in the opposite direction.",
            "Take the words and output them in reversed order, keeping each word unchanged.",
        ),
        _words_task(lambda words: words[::-1]),
    ),
    TaskFamily(
        "first_word",
        (
            "Give the first word.",
            "Return only the word that comes first in the list.",
            "Which word opens the list? Answer with that word.",
            "Write down the word at the start and ignore the rest.",
            "Output the leading word.",
            "Keep the first word and drop everything after it.",
            "Say the very first word you see.",
            "The answer is the word in position one.",
            "Copy just the opening word of the input.",
            "Find the word at the front of the list.",
            "Only the initial word matters; write it.",
            "What is the first item? Reply with it alone.",
            "Pick the word that begins the sequence.",
            "Throw away all words except the one at the beginning.",
            "Tell me which word is first.",
            "Return the word that appears before all the others.",
            "From the list, take the first entry.",
            "Look at the start of the input and output that single word.",
            "Name the first word in the list.",
            "Your reply should be one word: the one at the head of the list.",
        ),
        _words_task(lambda words: words[0]),
    ),
    TaskFamily(
        "last_word",
        (
            "Give the last word.",
            "Return only the word at the end of the list.",
            "Which word closes the list? Answer with that word.",
            "Write down the final word and nothing else.",
            "Output the trailing word.",
            "Drop every word except the one at the very end.",
            "The answer is whatever word comes last.",
            "Copy the closing word of the input.",
            "Skip to the end of the list and report the word there.",
            "What is the final item? Reply with it alone.",
            "Find the word that no other word follows.",
            "Tell me the word the list finishes with.",
            "Ignore all words but the last one, and write that one.",
            "Pick the word sitting in the final position.",
            "Name the word at the tail of the sequence.",
            "Look at where the input ends and return that word.",
            "One word only: the last in line.",
            "From the words given, keep the one that comes after all the others.",
            "Return the ending word of the list.",
            "Read to the end; the word you stop on is the answer.",
        ),
        _words_task(lambda words: words[-1]),
    ),
    TaskFamily(
        "count_words",
        (
            "Count the words.",
            "How many words are in the list? Answer with a number.",
            "Return the number of words you are given.",
            "Write how many items the list contains.",
            "Tell me the length of the word list.",
            "Give the total count of words as digits.",
            "Your answer is a single number: how many words there are.",
            "Count every word and report the total.",
            "What is the word count of the input?",
            "Output the size of the list.",
            "Add up the words one by one and write the final count.",
            "Say how long the list is, measured in words.",
            "Find out how many words appear and reply with that number.",
            "The output should be the number of entries in the list.",
            "Report the quantity of words.",
            "Number of words, please.",
            "Tally the words and give the result.",
            "Look at the list and state how many words it holds.",
            "Instead of the words themselves, return how many of them there are.",
            "Measure the list: how many words does it have?",
        ),
        _words_task(lambda words: str(len(words)), min_words=1, max_words=9),
    ),
    TaskFamily(
        "repeat_each_word",
        (
            "Repeat each word twice.",
            "Write every word two times in a row.",
            "Double each word in place, so cat dog becomes cat cat dog dog.",
            "Say each word, then say it again before moving on.",
            "Every word should appear twice, next to itself.",
            "Copy the list, but write each item a second time right after it.",
            "Echo every word once.",
            "Make a list where each word is followed by the same word.",
            "Duplicate each word while keeping the order.",
            "For every word in the input, output that word two times.",
            "Stutter through the list: each word comes out twice.",
            "The output has twice as many words, since each one is repeated.",
            "Go through the words and write two copies of each.",
            "Give each word a twin that stands right behind it.",
            "Repeat the words one at a time, two copies each.",
            "Turn every single word into a pair of the same word.",
            "Write the list so that no word appears alone; each is doubled.",
            "Keep the order and say every word two times.",
            "Each word, twice, in the same order as given.",
            "Take each word and write it down two times before going to the next.",
        ),
        _words_task(lambda words: [word for word in words for _ in range(2)]),
    ),
    TaskFamily(
        "swap_first_last",
        (
            "Swap the first and the last word.",
            "Exchange the word at the start with the word at the end.",
            "Put the last word at the front and the first word at the back, leaving the middle alone.",
            "Trade places between the opening and closing words.",
            "Switch the two words at the ends of the list.",
            "The first and last words change places; nothing else moves.",
            "Move the final word to the beginning and the first word to the end.",
            "Keep the middle words where they are but swap the outer two.",
            "Write the list with its end words exchanged.",
            "Let the word at the front and the word at the back swap positions.",
            "Only the ends move: they trade spots.",
            "Flip the outermost words and copy the rest as is.",
            "Exchange positions one and last.",
            "Return the list, but with its first word and its last word switched.",
            "The word that starts the list should end it, and the word that ends it should start it.",
            "Swap the ends.",
            "Change the order so the first and final words are reversed, while inner words stay.",
            "Make the last word first and the first word last.",
            "Take the two end words and let them swap.",
            "Leave everything in place except the first and last words, which trade places.",
        ),
        _words_task(lambda words: [words[-1], *words[1:-1], words[0]]),
    ),
    TaskFamily(
        "drop_first_word",
        (
            "Remove the first word.",
            "Write all the words except the first one.",
            "Drop the word at the start and keep the rest.",
            "Delete the opening word of the list.",
            "Return the list without its first item.",
            "Skip the first word and copy everything after it.",
            "Cut off the head of the list.",
            "Everything but the first word, please.",
            "Leave out the word that comes first.",
            "The output is the input minus its leading word.",
            "Throw away the first word; the others stay in order.",
            "Start your answer from the second word.",
            "Take the list and chop off the front word.",
            "Keep every word that is not in the first position.",
            "Ignore the first entry and write down the remaining ones.",
            "Erase the word at the beginning.",
            "Give me the tail of the list: all words after the first.",
            "Shorten the list by one word, taking it from the front.",
            "What is left after you remove the first word? Write it.",
            "Begin copying at word two and go to the end.",
        ),
        _words_task(lambda words: words[1:]),
    ),
    TaskFamily(
        "drop_last_word",
        (
            "Remove the last word.",
            "Write all the words except the final one.",
            "Drop the word at the end and keep the rest.",
            "Delete the closing word of the list.",
            "Return the list without its last item.",
            "Copy every word until you reach the last one, then stop.",
            "Cut off the end of the list.",
            "Everything but the final word, please.",
            "Leave out the word that comes last.",
            "The output is the input minus its trailing word.",
            "Throw away the last word; the others stay in order.",
            "Stop your answer one word before the end.",
            "Take the list and chop off the back word.",
            "Keep every word that is not in the final position.",
            "Ignore the last entry and write down the remaining ones.",
            "Erase the word at the end.",
            "Give me the list without its tail word.",
            "Shorten the list by one word, taking it from the back.",
            "What is left after you remove the last word? Write it.",
            "Copy from the first word up to, but not including, the last.",
        ),
        _words_task(lambda words: words[:-1]),
    ),
    TaskFamily(
        "replace_cat_with_dog",
        (
            "Replace the word cat with the word dog.",
            "Wherever cat appears, write dog instead.",
            "Change each cat into a dog and keep the other words.",
            "Copy the list, but swap any cat for a dog.",
            "All cats become dogs; nothing else changes.",
            "Turn every cat in the list into dog.",
            "Substitute dog for cat.",
            "If you see cat, put dog in its place.",
            "No cats are allowed: write dog wherever a cat was.",
            "Rewrite the words so that cat is replaced by dog each time.",
            "Keep the order, keep the words, except cat, which becomes dog.",
            "Every time the word cat shows up, use dog instead.",
            "Swap out cat for dog throughout the list.",
            "The word cat must be changed to dog.",
            "Give the same list with dogs in place of cats.",
            "Replace cat by dog.",
            "Find each cat and make it a dog.",
            "Edit the list: cat turns into dog, other words stay the same.",
            "Dog takes the place of every cat.",
            "Write the list again, changing cat to dog wherever it occurs.",
        ),
        _replace_cat_with_dog,
    ),
    TaskFamily(
        "keep_animals",
        (
            "Keep only the animals.",
            "Write the words that name animals, in the same order.",
            "Remove every word that is not an animal.",
            "Filter the list down to its animals.",
            "Which of these words are animals? List them.",
            "Drop the fruits and the objects; keep the animals.",
            "Return just the animal words.",
            "Pick out the creatures from the list.",
            "Only animals may stay in the list.",
            "Go through the words and copy each one that is an animal.",
            "Output the animals you find, keeping their order.",
            "Cross out anything that is not an animal.",
            "Select the words that are animals and ignore the rest.",
            "Leave out every word except the names of animals.",
            "List the animals mentioned.",
            "The answer is the input with all non animals removed.",
            "Find the animals hiding among the other words.",
            "Keep a word if it is an animal; skip it otherwise.",
            "Give me the animals from this list.",
            "Write down each animal in the order it appears.",
        ),
        _keep_animals,
    ),
    TaskFamily(
        "count_animals",
        (
            "Count the animals.",
            "How many words in the list are animals?",
            "Return the number of animal words.",
            "Tell me how many animals appear in the list.",
            "Give the count of words that name an animal.",
            "Ignore the fruits and objects and count what is left.",
            "Your answer is a number: the animals in the input.",
            "Count only the animals, not the other words.",
            "Find every animal and report how many there are.",
            "What is the number of animals here?",
            "Add one for each animal you see and write the total.",
            "Report how many creatures the list mentions.",
            "Out of all the words, how many are animals? Answer with digits.",
            "Tally the animal words.",
            "The output is the animal count.",
            "Look for animals and say how many you found.",
            "Number of animals in the list, please.",
            "If there are no animals, write 0; otherwise write how many there are.",
            "Give a single number telling how many list items are animals.",
            "Check each word; if it is an animal, count it. Write the count.",
        ),
        _words_task(lambda words: str(sum(word in ANIMALS for word in words)), max_words=7),
    ),
    TaskFamily(
        "contains_colour",
        (
            "Does the list contain a colour? Answer yes or no.",
            "Say yes if any word is a colour, otherwise say no.",
            "Is there a colour among these words?",
            "Check the words for a colour and reply yes or no.",
            "Answer yes when a colour appears and no when none does.",
            "Look for a colour word. Found one? Say yes. If not, say no.",
            "Tell me whether some word in the list names a colour.",
            "Reply no if the list has no colours, and yes if it has at least one.",
            "Can you find a colour here? Yes or no.",
            "Decide if the input mentions any colour.",
            "Yes or no: is one of the words a colour?",
            "Scan the list. Write yes for a colour, no for no colour.",
            "Report whether a colour is present.",
            "If red, blue or any other colour is in the list, answer yes; if not, answer no.",
            "Is the list free of colours? If it is, say no; otherwise say yes.",
            "Check for colours and give a yes or no answer.",
            "Answer with one word, yes or no, depending on whether a colour appears.",
            "Does any colour show up in the words?",
            "Is a colour mentioned?",
            "Find out if the words include a colour, then answer yes or no.",
        ),
        _contains_colour,
    ),
    TaskFamily(
        "opposite_words",
        (
            "Give the opposite of each word.",
            "Write the antonym of every word.",
            "Replace each word with its opposite.",
            "For each word, say the word that means the reverse.",
            "Turn hot into cold, big into small, and so on for every word.",
            "What are the opposites of these words?",
            "Change every word to the word with the opposite meaning.",
            "Map each word to its antonym and keep the order.",
            "Say the contrary of each word, one by one.",
            "Output the opposite words.",
            "Flip the meaning of every word.",
            "Each word has an opposite; list those opposites.",
            "Answer with the antonyms, in the same order.",
            "If a word is up, write down; if it is day, write night; do this for all words.",
            "Write the reverse meaning for each item.",
            "Find the opposite of every word in the list.",
            "Give each word its counterpart with the other meaning.",
            "Swap every word for its antonym.",
            "Replace the words by their opposites, keeping their positions.",
            "Opposites, please, for each word given.",
        ),
        _opposite_words,
    ),
    TaskFamily(
        "sort_digits",
        (
            "Sort the digits from smallest to largest.",
            "Put the digits in increasing order.",
            "Arrange the digits so they go up.",
            "Write the same digits, lowest first and highest last.",
            "Order the digits in ascending order.",
            "Rearrange the digits so that each one is no larger than the next.",
            "Sort the digits.",
            "Start with the smallest digit and end with the biggest.",
            "List the digits in rising order.",
            "Return the digits sorted upward.",
            "Move small digits to the front and big digits to the back.",
            "What do the digits look like when sorted low to high?",
            "Rewrite the number with its digits in ascending order.",
            "Place the digits from the least to the greatest.",
            "Keep all digits, including repeats, but sort them from zero up to nine.",
            "Give the digits in order of size, smallest first.",
            "The answer uses the same digits, arranged from small to large.",
            "Order the digits the way you count: lower ones before higher ones.",
            "Sort each digit into place, going up.",
            "Put the digits in order, beginning with the lowest.",
        ),
        _digits_task(lambda digits: "".join(sorted(digits))),
    ),
    TaskFamily(
        "sort_digits_descending",
        (
            "Sort the digits from largest to smallest.",
            "Put the digits in decreasing order.",
            "Arrange the digits so they go down.",
            "Write the same digits, highest first and lowest last.",
            "Order the digits in descending order.",
            "Rearrange the digits so that each one is no smaller than the next.",
            "Sort the digits, biggest first.",
            "Start with the largest digit and end with the smallest.",
            "List the digits in falling order.",
            "Return the digits sorted downward.",
            "Move big digits to the front and small digits to the back.",
            "What do the digits look like when sorted high to low?",
            "Rewrite the number with its digits in descending order.",
            "Place the digits from the greatest to the least.",
            "Keep all digits, including repeats, but sort them from nine down to zero.",
            "Give the digits in order of size, largest first.",
            "The answer uses the same digits, arranged from large to small.",
            "Order the digits like a countdown: higher ones before lower ones.",
            "Sort each digit into place, going down.",
            "Put the digits in order, beginning with the highest.",
        ),
        _digits_task(lambda digits: "".join(sorted(digits, reverse=True))),
    ),
    TaskFamily(
        "reverse_digits",
        (
            "Reverse the digits.",
            "Write the digits backwards.",
            "Read the number from right to left and write what you read.",
            "Flip the order of the digits.",
            "The last digit comes first, and the first digit comes last.",
            "Mirror the digit string.",
            "Turn the number around.",
            "Return the digits in reverse order.",
            "Start from the final digit and go back to the first.",
            "Write the digit sequence from end to start.",
            "Undo the order of the digits.",
            "What is the number when read backwards?",
            "Copy the digits, going from the back to the front.",
            "Reverse the string of digits, keeping any zeros.",
            "Put the digits in the opposite order.",
            "Spell the number out backwards, digit by digit.",
            "Give the digits as they appear from right to left.",
            "Backwards, please: every digit of the number.",
            "Rearrange the digits so the sequence runs the other way.",
            "Take the digits and turn their order around.",
        ),
        _digits_task(lambda digits: digits[::-1]),
    ),
    TaskFamily(
        "digits_with_dashes",
        (
            "Put a dash between the digits.",
            "Separate the digits with dashes.",
            "Write the number with a dash after every digit except the last.",
            "Insert a hyphen between each pair of digits.",
            "Join the digits using dashes.",
            "Spread the digits out with a dash between them.",
            "Write 123 as 1-2-3 and do the same for the input.",
            "Split the number into digits and link them with dashes.",
            "Add dashes between the digits.",
            "Every two neighbouring digits should have a dash between them.",
            "Format the number as digits joined by hyphens.",
            "Break the number apart with dashes.",
            "Keep the digits in order, but put a dash between each one.",
            "Use a dash to separate each digit from the next.",
            "Rewrite the digits with hyphens in between.",
            "Place a dash in every gap between digits.",
            "Turn the number into a dashed digit string.",
            "Write out the digits one at a time, with dashes connecting them.",
            "Separate the digits; the separator is a dash.",
            "Show the number with dashes between all its digits.",
        ),
        _digits_task("-".join, min_digits=2, max_digits=6),
    ),
    TaskFamily(
        "sum_of_digits",
        (
            "Add up the digits.",
            "What is the sum of the digits?",
            "Return the total of all digits in the number.",
            "Add each digit together and write the result.",
            "Compute the digit sum.",
            "Find the sum you get by adding every digit.",
            "Treat each digit as a small number and add them all.",
            "Give the total when the digits are summed.",
            "Sum the digits of the input.",
            "How much do the digits add up to?",
            "Write the result of adding the digits one by one.",
            "The answer is the sum of the individual digits.",
            "Add the digits together, then report the total.",
            "Count up the value of each digit and give the sum.",
            "What do you get when you add all the digits?",
            "Combine the digits by addition.",
            "Report the digit total.",
            "Add every digit in the string and answer with the sum.",
            "Sum up each single digit.",
            "Break the number into digits, add them, and write the answer.",
        ),
        _digits_task(lambda digits: str(sum(map(int, digits))), min_digits=2, max_digits=5),
    ),
    TaskFamily(
        "add_one",
        (
            "Add one to the number.",
            "What number comes next?",
            "Increase the number by one.",
            "Write the number that is one bigger.",
            "Return the next number after the input.",
            "Count up by one.",
            "Give the number plus one.",
            "Make the number one larger.",
            "What do you get if you add 1?",
            "Step the number up by a single unit.",
            "Output the following number.",
            "Take the number and raise it by one.",
            "Write the successor of the number.",
            "The answer is one more than the input.",
            "Add 1.",
            "Go one number higher.",
            "Which number follows this one when counting?",
            "Increment the number.",
            "Write down the number you reach by counting one step up.",
            "Give the value that is exactly one above the input.",
        ),
        _number_task(lambda number: number + 1, 0, 9998),
    ),
    TaskFamily(
        "subtract_one",
        (
            "Subtract one from the number.",
            "What number comes before this one?",
            "Decrease the number by one.",
            "Write the number that is one smaller.",
            "Return the number right before the input.",
            "Count down by one.",
            "Give the number minus one.",
            "Make the number one less.",
            "What do you get if you take away 1?",
            "Step the number down by a single unit.",
            "Output the previous number.",
            "Take the number and lower it by one.",
            "Write the number that comes just before it.",
            "The answer is one less than the input.",
            "Subtract 1.",
            "Go one number lower.",
            "Which number comes right before this one when counting?",
            "Decrement the number.",
            "Write down the number you reach by counting one step down.",
            "Give the value that is exactly one below the input.",
        ),
        _number_task(lambda number: number - 1, 1, 9999),
    ),
    TaskFamily(
        "double_number",
        (
            "Double the number.",
            "Multiply the number by two.",
            "What is twice this number?",
            "Add the number to itself.",
            "Write two times the number.",
            "Return the number times 2.",
            "Make the number twice as big.",
            "Give double the value.",
            "Compute the number plus the same number again.",
            "Multiply by 2 and write the result.",
            "The answer is the input taken two times.",
            "How much is the number when doubled?",
            "Grow the number to twice its size.",
            "Write the result of 2 times the input.",
            "Take the number, and then take it again: the total is the answer.",
            "Double it.",
            "What do you get if you multiply the number by 2?",
            "Output the number that is two times larger.",
            "Give the product of the number and two.",
            "Find twice the value of the number.",
        ),
        _number_task(lambda number: 2 * number, 0, 4999),
    ),
    TaskFamily(
        "add_two_numbers",
        (
            "Add the two numbers.",
            "What is the sum of the two numbers?",
            "Return the total of both numbers.",
            "Add the first number to the second.",
            "Compute the sum.",
            "Put the two numbers together by adding them.",
            "Give the result of adding the numbers.",
            "How much do the two numbers make together?",
            "Sum the pair of numbers.",
            "Write the first number plus the second number.",
            "The answer is both numbers added up.",
            "Add them.",
            "Combine the two values with addition.",
            "Find the total you get from the two numbers.",
            "Take two numbers and write their sum.",
            "What do you get when you add the numbers together?",
            "Report the sum of the given pair.",
            "Work out the addition of the two numbers.",
            "Add up both values.",
            "Write one number: the sum of the two in the input.",
        ),
        _number_pair_task(lambda first, second: first + second, 4999),
    ),
    TaskFamily(
        "larger_number",
        (
            "Give the larger of the two numbers.",
            "Which number is bigger? Write it.",
            "Return the maximum of the two numbers.",
            "Pick the greater number.",
            "Write down the number with the higher value.",
            "Compare the two numbers and keep the larger one.",
            "Output the bigger number.",
            "Which of the pair is greater?",
            "Find the maximum.",
            "Keep the number that is more, drop the one that is less.",
            "The answer is the number that is larger.",
            "Between the two, name the bigger value.",
            "Choose the number that comes later when counting.",
            "Return whichever number is higher.",
            "Select the maximum value.",
            "Look at both numbers; write the one that is greater.",
            "The larger one, please.",
            "What is the bigger of the two values?",
            "Throw out the smaller number and write the other.",
            "Give the number that beats the other in size.",
        ),
        _number_pair_task(max, 9999),
    ),
    TaskFamily(
        "smaller_number",
        (
            "Give the smaller of the two numbers.",
            "Which number is smaller? Write it.",
            "Return the minimum of the two numbers.",
            "Pick the lesser number.",
            "Write down the number with the lower value.",
            "Compare the two numbers and keep the smaller one.",
            "Output the number that is less.",
            "Which of the pair is less?",
            "Find the minimum.",
            "Keep the number that is less, drop the one that is more.",
            "The answer is the number that is smaller.",
            "Between the two, name the lower value.",
            "Choose the number that comes first when counting.",
            "Return whichever number is lower.",
            "Select the minimum value.",
            "Look at both numbers; write the one that is less.",
            "The smaller one, please.",
            "What is the lesser of the two values?",
            "Throw out the larger number and write the other.",
            "Give the number that loses to the other in size.",
        ),
        _number_pair_task(min, 9999),
    ),
    TaskFamily(
        "even_or_odd",
        (
            "Is the number even or odd?",
            "Say even if the number can be split into two equal whole parts, otherwise say odd.",
            "Answer even or odd.",
            "Decide whether the number is even or odd.",
            "Check if the number divides by two. Write even or odd.",
            "Look at the last digit: 0, 2, 4, 6 or 8 means even, anything else means odd.",
            "Tell me the parity of the number.",
            "Write odd for odd numbers and even for even numbers.",
            "Is this number odd? Reply odd or even.",
            "Classify the number as even or odd.",
            "Can you split the number into pairs with nothing left over? Even if yes, odd if no.",
            "Label the number even or odd.",
            "Give one word, even or odd, for the number.",
            "What kind of number is this: even or odd?",
            "If dividing by two leaves a remainder, answer odd; otherwise answer even.",
            "Even or odd?",
            "Report whether the number is odd or even.",
            "Sort the number into one of two groups: even or odd.",
            "Find out if the number is a multiple of two and say even or odd.",
            "Determine the parity and write even or odd.",
        ),
        _number_task(lambda number: "even" if number % 2 == 0 else "odd", 0, 9999),
    ),
    TaskFamily(
        "number_to_words",
        (
            "Write the number in words.",
            "Spell out the number.",
            "How do you say this number in words?",
            "Turn the digits into English words.",
            "Write the number as you would say it out loud.",
            "Replace the digits with the number name.",
            "Give the word form of the number.",
            "Convert the number to words, like 42 becomes forty two.",
            "Say the number using words instead of digits.",
            "Write out the name of the number.",
            "Express the number in words.",
            "What is the number called? Write its name.",
            "No digits allowed: write the number with words.",
            "Translate the number into words.",
            "Spell the value in plain English.",
            "Write how the number is pronounced.",
            "Give the number, but in letters.",
            "Change the numeral into its written form.",
            "Name the number in words.",
            "Put the number into words, the way a person would read it.",
        ),
        _number_task(number_in_words, 0, 99),
    ),
    TaskFamily(
        "words_to_number",
        (
            "Write the number in digits.",
            "Turn the words into a number.",
            "What number do these words name? Use digits.",
            "Convert the written number to digits.",
            "Write the digits for the number that is spelled out.",
            "Replace the number words with the numeral.",
            "Give the digit form of the number.",
            "Convert words to digits, like forty two becomes 42.",
            "Say the number using digits instead of words.",
            "Write the numeral for these words.",
            "Express the number with digits.",
            "Which number is this? Write it with digits.",
            "No words allowed: write the number with digits.",
            "Translate the words into a number.",
            "Read the spelled out value and write it as digits.",
            "Write the number that the words describe.",
            "Give the number, but in digits.",
            "Change the written form into a numeral.",
            "Turn the number name into digits.",
            "Put the words into a number, the way you would write it on paper.",
        ),
        _words_to_number,
    ),
    TaskFamily(
        "warm_or_cold",
        (
            "Is the colour warm or cold?",
            "Say warm for colours like red and orange, and cold for colours like blue and green.",
            "Classify the colour as warm or cold.",
            "Answer warm or cold for the colour.",
            "Does this colour feel warm or cold?",
            "Decide whether the colour is a warm one or a cold one.",
            "Label the colour: warm or cold.",
            "Colours of fire are warm, colours of ice and water are cold. Which is this?",
            "Tell me if the colour is warm or cold.",
            "Put the colour in one of two groups, warm or cold.",
            "Write warm or cold.",
            "Which group does the colour belong to, the warm colours or the cold ones?",
            "Give one word for the colour: warm or cold.",
            "Is it a warm colour? If not, it is cold. Answer with one word.",
            "Sort the colour into warm or cold.",
            "Judge the temperature of the colour: warm or cold.",
            "Reply warm if the colour is like the sun, cold if it is like the sea.",
            "What kind of colour is this, warm or cold?",
            "Warm or cold?",
            "Name the colour family: warm or cold.",
        ),
        _classify_task({"warm": WARM_COLOURS, "cold": COLD_COLOURS}),
    ),
    TaskFamily(
        "animal_or_fruit",
        (
            "Is the word an animal or a fruit?",
            "Say animal or fruit.",
            "Classify the word as an animal or a fruit.",
            "Answer animal if it can walk, swim or fly, and fruit if it grows on a plant.",
            "Decide whether the word names an animal or a fruit.",
            "Label the word: animal or fruit.",
            "Can you eat it as a fruit, or is it an animal? Reply with one word.",
            "Which group does the word belong to, animals or fruits?",
            "Write animal or fruit for the word.",
            "Tell me if this is a fruit or an animal.",
            "Put the word in the right group: animal or fruit.",
            "Sort the word into animal or fruit.",
            "Give the category of the word, either animal or fruit.",
            "Is it alive and moving, or does it grow on a tree? Answer animal or fruit.",
            "What kind of thing is this, an animal or a fruit?",
            "Animal or fruit?",
            "Reply fruit for things like plum and pear, and animal for things like cat and fox.",
            "Name the type of the word: animal or fruit.",
            "Check whether the word is an animal. If not, it is a fruit. Write the answer.",
            "Decide the kind: animal or fruit.",
        ),
        _classify_task({"animal": ANIMALS, "fruit": FRUITS}),
    ),
    TaskFamily(
        "extract_place",
        (
            "What place is mentioned in the sentence?",
            "Extract the town name.",
            "Write the name of the place from the sentence.",
            "Where does this happen? Answer with the town.",
            "Find the town in the sentence and return it.",
            "Pull out the location.",
            "Which town does the sentence talk about?",
            "Give only the place name.",
            "Copy the name of the town and nothing else.",
            "The answer is the place where the event happens.",
            "Look for the location and write it.",
            "Return the town named in the text.",
            "Name the place.",
            "Where? Reply with the town from the sentence.",
            "Ignore the person, the number and the colour; keep the place.",
            "Pick the location out of the sentence.",
            "Tell me the town.",
            "Find the word that names a place and write it down.",
            "Extract where it happened.",
            "From this sentence, take the name of the town.",
        ),
        _extract_task("place"),
    ),
    TaskFamily(
        "extract_number",
        (
            "What number is in the sentence?",
            "Extract the number.",
            "Write the number that the sentence mentions.",
            "How many? Answer with the number from the sentence.",
            "Find the number and return it.",
            "Pull out the digits.",
            "Which number appears in the text?",
            "Give only the number.",
            "Copy the number and nothing else.",
            "The answer is the quantity in the sentence.",
            "Look for something written in digits and write it.",
            "Return the numeric value named in the text.",
            "Name the number.",
            "Ignore the person, the town and the colour; keep the number.",
            "Pick the number out of the sentence.",
            "Tell me the number.",
            "Find the part made of digits and copy it.",
            "Extract how many there are.",
            "From this sentence, take the number.",
            "Report the count given in the sentence.",
        ),
        _extract_task("number"),
    ),
    TaskFamily(
        "extract_colour",
        (
            "What colour is in the sentence?",
            "Extract the colour.",
            "Write the colour that the sentence mentions.",
            "Which colour? Answer with the colour from the sentence.",
            "Find the colour word and return it.",
            "Pull out the colour.",
            "Which colour appears in the text?",
            "Give only the colour.",
            "Copy the colour and nothing else.",
            "The answer is the colour of the thing in the sentence.",
            "Look for a word like red or blue and write it.",
            "Return the colour named in the text.",
            "Name the colour.",
            "Ignore the person, the town and the number; keep the colour.",
            "Pick the colour out of the sentence.",
            "Tell me the colour.",
            "Find the word that names a colour and write it down.",
            "Extract what colour it is.",
            "From this sentence, take the colour.",
            "Report which colour the sentence uses.",
        ),
        _extract_task("colour"),
    ),
    TaskFamily(
        "extract_name",
        (
            "Who is mentioned in the sentence?",
            "Extract the name of the person.",
            "Write the name that the sentence mentions.",
            "Who did it? Answer with the name.",
            "Find the person and return their name.",
            "Pull out the name.",
            "Which person appears in the text?",
            "Give only the name.",
            "Copy the name and nothing else.",
            "The answer is the person in the sentence.",
            "Look for a name and write it.",
            "Return the person named in the text.",
            "Name the person.",
            "Ignore the town, the number and the colour; keep the name.",
            "Pick the name out of the sentence.",
            "Tell me who.",
            "Find the word that names a person and write it down.",
            "Extract who the sentence is about.",
            "From this sentence, take the name.",
            "Report which person the sentence talks about.",
        ),
        _extract_task("name"),
    ),
    TaskFamily(
        "past_tense",
        (
            "Rewrite the sentence in the past tense.",
            "Change the sentence so it tells what already happened.",
            "Put the verb into the past.",
            "Say the same thing, but as something that is over.",
            "Turn the present sentence into a past sentence.",
            "Write the sentence again with the action in the past.",
            "Move the sentence from now to then.",
            "Change only the verb so the sentence talks about the past.",
            "Make it past tense.",
            "The action is over now; write the sentence that way.",
            "Use the past form of the verb and keep every other word.",
            "Rewrite it so that takes becomes took and finds becomes found.",
            "Tell the sentence as a story about the past.",
            "What would the sentence be if it happened before today?",
            "Switch the tense of the sentence to past.",
            "Put the sentence in the past tense without changing anything else.",
            "Write what happened, not what happens.",
            "Change the present verb to its past form.",
            "Past tense, please.",
            "Report the sentence as an event that is already finished.",
        ),
        _past_tense,
    ),
)


def task_family(family_id: str) -> TaskFamily:
    """The family with id ``family_id``; raises ``KeyError`` if there is none."""
    for family in TASK_FAMILIES:
        if family.id == family_id:
            return family
    raise KeyError(family_id)


def train_families() -> tuple[TaskFamily, ...]:
    return tuple(family for family in TASK_FAMILIES if not family.is_heldout)


def heldout_families() -> tuple[TaskFamily, ...]:
    return tuple(family for family in TASK_FAMILIES if family.is_heldout)
