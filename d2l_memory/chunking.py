"""How a document is wrapped and cut into chunks before the hypernetwork reads it.

Training and internalization must wrap documents identically, so both call
:func:`document_chunks`. Each chunk is wrapped in the model's chat template as a user turn
(the published recipe), with the template's prefix and suffix re-added around every chunk.
"""

from __future__ import annotations

import itertools
import math
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
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids
    return Wrapping(encode(prefix), encode(after), before[len(prefix) :])


def wrapped_chunks(
    tokenizer: PreTrainedTokenizerBase, text: str, pieces: int | None = None, *, max_tokens: int | None = None
) -> tuple[list[list[int]], int]:
    """Cut a document into ``pieces`` near-equal chunks (fewer only when it has fewer tokens), or
    into as few as fit ``max_tokens`` each; every chunk is wrapped as a user turn. Also returns
    the document's own token count."""
    wrap, ids = _wrapping_and_ids(tokenizer, text)
    parts = split_evenly(ids, max_tokens) if max_tokens is not None else split_into(ids, pieces or 1)
    return [wrap.before + part + wrap.after for part in parts], len(ids)


def wrapped_head(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> list[int]:
    """The first ``max_tokens`` tokens of a text, wrapped as a user turn (empty when the text,
    with the template's leading whitespace, has no token at all)."""
    wrap, ids = _wrapping_and_ids(tokenizer, text)
    return wrap.before + ids[:max_tokens] + wrap.after if ids else []


def _wrapping_and_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[Wrapping, list[int]]:
    """The template's wrapping, and the text's ids as the template renders them (lead included)."""
    wrap = template_wrapping(tokenizer)
    return wrap, tokenizer(wrap.lead + text, add_special_tokens=False).input_ids


def chunk_texts(tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int) -> list[str]:
    """The text each chunk adapter of a memory was made from, in chunk order (unwrapped)."""
    wrap = template_wrapping(tokenizer)
    chunks, _ = document_chunks(tokenizer, text, chunk_tokens)  # the very cut internalization makes
    return [tokenizer.decode(chunk[len(wrap.before) : len(chunk) - len(wrap.after)]) for chunk in chunks]


def split_evenly(ids: list[int], max_tokens: int) -> list[list[int]]:
    """Split into the fewest near-equal contiguous pieces of at most ``max_tokens`` each."""
    return split_into(ids, math.ceil(len(ids) / max_tokens))


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
