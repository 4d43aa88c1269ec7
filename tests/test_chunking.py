"""Where internalization cuts a document into chunks: at sentence and line starts where it can."""

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from d2l_memory import D2LMemoryError
from d2l_memory.chunking import chunk_texts, document_chunks, split_at_sentences
from d2l_memory.embedded import load_default
from d2l_memory.internalize import Internalizer
from tests.test_integrations_support import build_memory


def test_cuts_fall_at_sentence_starts_nearest_an_even_split():
    assert [len(p) for p in split_at_sentences(list(range(30)), [5, 11, 18, 24], 12)] == [11, 7, 12]
    assert [len(p) for p in split_at_sentences(list(range(30)), [25], 10)] == [10, 10, 10]  # too long: cut inside


def test_a_short_first_line_does_not_become_a_chunk_of_its_own():
    # a 3-token title, then one 997-token sentence: two even chunks, not 3 + 499 + 498
    assert [len(p) for p in split_at_sentences(list(range(1000)), [3, 700], 512)] == [500, 500]
    # a short sentence stays whole when the next one can end at a sentence start too
    assert [len(p) for p in split_at_sentences(list(range(32)), [6, 19], 16)] == [6, 13, 13]


def test_small_chunks_hold_whole_sentences():
    _, tokenizer = load_default()
    text = "Ama has 3 pets. The door code of Bo is 4471. Cyd was born in Dunera.\nbadge=K12 user=Eli"
    texts = chunk_texts(tokenizer, text, 16)  # 7 to 13 tokens each: no two fit together
    assert [t.strip() for t in texts] == [
        "Ama has 3 pets.",
        "The door code of Bo is 4471.",
        "Cyd was born in Dunera.",
        "badge=K12 user=Eli",
    ]


def test_line_ends_count_where_the_newline_is_part_of_the_previous_token():
    words = ["Ama", "has", "pets", "Bo", "is", "here", "Cyd", "was", "born", ".\n", ".\n\n", " ", "."]
    vocab = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="."))
    vocab.pre_tokenizer = pre_tokenizers.Split(Regex(r"\.\s*| |[^\s.]+"), behavior="isolated")  # ".\n" is one token
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocab)
    chunks, count = document_chunks(tokenizer, "Ama has pets.\nBo is here.\n\nCyd was born.", 6)
    assert count == 18
    assert [tokenizer.convert_ids_to_tokens(c) for c in chunks] == [
        ["Ama", " ", "has", " ", "pets", ".\n"],
        ["Bo", " ", "is", " ", "here", ".\n\n"],
        ["Cyd", " ", "was", " ", "born", "."],
    ]


def test_chunk_tokens_is_checked_and_kept_with_the_memory(tmp_path):
    memory = build_memory(tmp_path)
    internalizer = memory.internalizer
    trained = internalizer.hypernet.config.chunk_tokens
    for bad in (0, trained + 1):
        with pytest.raises(D2LMemoryError, match="chunk_tokens must be between 1 and"):
            Internalizer(memory.host, internalizer.hypernet, chunk_tokens=bad)
    small = Internalizer(memory.host, internalizer.hypernet, store=memory.store, chunk_tokens=12)
    stored = small.internalize("the code of the city 0 1 is 1 . the code of the city 0 2 is 2 .", extra={"chunks": 0})
    assert stored.chunk_count == 2
    assert stored.record.extra["chunk_tokens"] == 12 and stored.record.extra["chunks"] == 2
