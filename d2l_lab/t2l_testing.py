"""A tiny base model that speaks the task world, for tests and CPU checks of Text-to-LoRA.

:func:`d2l_memory.testing.tiny_tokenizer` knows a handful of words, so task examples would be
mostly ``<unk>``; this tokenizer covers every word of the task world, so a short training run has
something real to learn.
"""

from __future__ import annotations

import random
import re

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from d2l_lab.world import TASK_FAMILIES
from d2l_memory.testing import tiny_model, word_tokenizer


def task_tokenizer(examples_per_family: int = 50) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task world's descriptions and example texts."""
    rng = random.Random(0)
    texts = ["Input Output"] + [d for family in TASK_FAMILIES for d in family.descriptions]
    texts += [text for family in TASK_FAMILIES for _ in range(examples_per_family) for text in family.make_example(rng)]
    words = sorted({token for text in texts for token in re.findall(r"[A-Za-z]+|[^\sA-Za-z]", text)})
    return word_tokenizer(words)


def task_model(tokenizer: PreTrainedTokenizerFast, **sizes: int) -> PreTrainedModel:
    """A random tiny Llama whose vocabulary fits ``tokenizer``."""
    return tiny_model("llama", vocab_size=len(tokenizer), **sizes)
