"""How a document is wrapped and cut into chunks before the hypernetwork reads it.

Training and internalization must wrap documents identically, so both call
:func:`document_chunks`. Each chunk is wrapped in the model's chat template as a user turn
(the published recipe), with the template's prefix and suffix re-added around every chunk.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

_SENTINEL = "\u2063DOC\u2063"  # invisible separator: never part of a real template


@dataclass(frozen=True)
class Wrapping:
    """What the chat template puts around a user turn's content, as token ids.

    ``lead`` is the whitespace the template leaves between its prefix and the content; it is
    tokenized with the content (" word", not " " + "word"), as it is in a rendered chat.
    """

    before: list[int]
    after: list[int]
    lead: str


def template_wrapping(tokenizer: PreTrainedTokenizerBase) -> Wrapping:
    if tokenizer.chat_template is None:
        return Wrapping([], [], "")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False)
    before, after = rendered.split(_SENTINEL)
    prefix = before.rstrip()
    return Wrapping(_token_ids(tokenizer, prefix), _token_ids(tokenizer, after), before[len(prefix) :])


def wrapped_chunks(
    tokenizer: PreTrainedTokenizerBase, text: str, pieces: int | None = None, *, max_tokens: int | None = None
) -> tuple[list[list[int]], int]:
    """Cut a document into ``pieces`` near-equal chunks (fewer only when it has fewer tokens), or
    into chunks of at most ``max_tokens`` cut at sentence and line ends where it can; every chunk
    is wrapped as a user turn. Also returns the document's own token count.

    Training cuts into ``pieces`` anywhere, so the hypernetwork also learns from facts cut in two;
    internalization cuts at ``max_tokens`` and keeps sentences whole where it can (not one longer
    than a chunk, nor one the punctuation rule misreads: "Dr. Bo" is two sentences to it).
    """
    wrap = template_wrapping(tokenizer)
    if max_tokens is None:
        ids = _token_ids(tokenizer, wrap.lead + text)
        parts = split_into(ids, pieces or 1)
    else:
        ids, starts = _ids_and_sentence_starts(tokenizer, wrap.lead + text)
        parts = split_at_sentences(ids, starts, max_tokens)
    return [wrap.before + part + wrap.after for part in parts], len(ids)


def wrapped_head(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> list[int]:
    """The first ``max_tokens`` tokens of a text, wrapped as a user turn (empty when the text,
    with the template's leading whitespace, has no token at all)."""
    wrap = template_wrapping(tokenizer)
    ids = _token_ids(tokenizer, wrap.lead + text)
    return wrap.before + ids[:max_tokens] + wrap.after if ids else []


def _token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The text's ids as they sit inside a rendered chat: no BOS/EOS of the tokenizer's own."""
    return tokenizer(text, add_special_tokens=False).input_ids


SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
"""The whitespace between two sentences, or around a line break (tool outputs are line-structured)."""


def _ids_and_sentence_starts(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """The text's ids and the token positions where a sentence or line begins (a chunk may start
    there). A tokenizer without offsets (a slow one) reports none, so its chunks are cut evenly."""
    if not getattr(tokenizer, "is_fast", False):
        return _token_ids(tokenizer, text), []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    token_starts = [start for start, _ in encoded["offset_mapping"]]  # char positions, ascending
    starts = []
    for gap in SENTENCE_BREAK.finditer(text):
        # the last token starting inside the gap (it may carry the gap's whitespace): one that
        # starts before the gap also holds the end of the previous sentence (".\n" is one token
        # in some vocabularies), and one that starts after it holds the next sentence's first word
        i = bisect.bisect_right(token_starts, gap.end()) - 1
        if i > 0 and token_starts[i] >= gap.start() and (not starts or starts[-1] < i):
            starts.append(i)
    return encoded.input_ids, starts


def split_at_sentences(ids: list[int], sentence_starts: list[int], max_tokens: int) -> list[list[int]]:
    """Split into pieces of at most ``max_tokens``, as near-equal as sentence boundaries allow.

    Each cut goes to the sentence start nearest an even split of what is left, among those that
    keep the piece within ``max_tokens`` and at least half an even share long. Failing that, a
    shorter piece ending at a sentence start, but only when the next piece can end at one too;
    otherwise the cut falls inside a sentence at the even split (a short title before one long
    sentence must not become a chunk of its own). So a 600-token document of 512-token chunks
    becomes two of about 300 (not 512 + 88), and 16-token chunks of short sentences hold one
    sentence each.
    """
    if not ids:
        return []
    cuts = [0]
    while len(ids) - cuts[-1] > max_tokens:
        cuts.append(_next_cut(len(ids), sentence_starts, cuts[-1], max_tokens))
    cuts.append(len(ids))
    return [ids[a:b] for a, b in itertools.pairwise(cuts)]


def _next_cut(length: int, sentence_starts: list[int], start: int, max_tokens: int) -> int:
    share = math.ceil((length - start) / math.ceil((length - start) / max_tokens))
    half = bisect.bisect_left(sentence_starts, start + (share + 1) // 2)
    fitting = sentence_starts[half : bisect.bisect_right(sentence_starts, start + max_tokens)]
    if fitting:
        return min(fitting, key=lambda i: abs(i - start - share))
    short = sentence_starts[bisect.bisect_right(sentence_starts, start) : half]
    if short:
        after = short[-1]
        reachable = bisect.bisect_right(sentence_starts, after + max_tokens) > bisect.bisect_right(
            sentence_starts, after
        )
        if length - after <= max_tokens or reachable:
            return after
    return start + share


def chunk_texts(tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int) -> list[str]:
    """The text each chunk adapter of a memory was made from, in chunk order (unwrapped)."""
    chunks, _ = document_chunks(tokenizer, text, chunk_tokens)  # the very cut internalization makes
    return unwrapped_texts(tokenizer, chunks)


def unwrapped_texts(tokenizer: PreTrainedTokenizerBase, chunks: list[list[int]]) -> list[str]:
    """Wrapped chunks (as :func:`document_chunks` gives them) back to their text, without the template."""
    wrap = template_wrapping(tokenizer)
    return [tokenizer.decode(chunk[len(wrap.before) : len(chunk) - len(wrap.after)]) for chunk in chunks]


def split_into(ids: list[int], pieces: int) -> list[list[int]]:
    """Split into ``pieces`` near-equal contiguous pieces (one per token when there are fewer)."""
    pieces = min(pieces, len(ids))
    if pieces < 1:
        return []
    size, extra = divmod(len(ids), pieces)
    bounds = [i * size + min(i, extra) for i in range(pieces + 1)]
    return [ids[start:end] for start, end in itertools.pairwise(bounds)]


def document_chunks(tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int) -> tuple[list[list[int]], int]:
    """The wrapped chunks of a document (token ids) and the document's own token count."""
    return wrapped_chunks(tokenizer, text, max_tokens=chunk_tokens)
