"""The embedded model's tokenizer: byte-level BPE trained on the synthetic world.

Byte-level BPE encodes any UTF-8 text (there is no unknown token), and trained
on the world's corpus it turns every world word into ONE token, in both its
mid-sentence form (" Zorvik") and its bare form ("Zorvik", as in JSON or CSV).
One-token entity names matter: a small model binds a name to a fact far more
easily when the name is a single position it can attend to and copy. Digits are
split one per token, and so are the capitals of codes, so numbers and codes are
copied one character at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from d2l_lab.world import iter_corpus_texts, vocabulary_texts

PAD, BOS, USER, ASSISTANT, END = "<pad>", "<bos>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = (PAD, BOS, USER, ASSISTANT, END)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""``<bos>`` then ``<|role|> content<|end|>`` per message.

The space after the role token makes a turn's first word the same token as
that word mid-sentence, so an answer is the very token the document holds.
"""

VOCAB_LIMIT = 8000
"""An upper bound only: training stops earlier, once every word of the corpus is one token."""

CORPUS_DOCUMENTS = 5_000


_CODE_LETTER = "[A-Z](?=[A-Z0-9])|(?<=[A-Z0-9])[A-Z]"
"""A capital next to a digit or another capital, as in badge codes (K7Q2) and log levels (INFO).

Such letters become tokens of their own, like digits: otherwise every random
letter run of a code would claim a vocabulary slot that is seen once.
"""


def _training_texts(seed: int) -> Iterator[str]:
    """The world corpus, plus every vocabulary word both after a space and alone on a line."""
    yield from iter_corpus_texts(seed, CORPUS_DOCUMENTS)
    for text in vocabulary_texts():
        words = text.split()
        yield " " + " ".join(words)
        yield "\n".join(words)


def train_tokenizer(seed: int = 0) -> PreTrainedTokenizerFast:
    """Train the BPE tokenizer on the world corpus of ``seed`` and wrap it for transformers."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CODE_LETTER), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_LIMIT,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_texts(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=END,
        additional_special_tokens=[USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer
