"""How a document is wrapped and cut into chunks before the hypernetwork reads it.

Training and internalization must wrap documents identically, so both call
:func:`document_chunks`. Each chunk is wrapped in the model's chat template as a user turn
(the published recipe), with the template's prefix and suffix re-added around every chunk.
"""

from __future__ import annotations

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
    """Cut a document into ``pieces`` near-equal chunks (or as few as fit ``max_tokens``), each
    wrapped as a user turn; also returns the document's own token count."""
    wrap = template_wrapping(tokenizer)
    ids = tokenizer(wrap.lead + text, add_special_tokens=False).input_ids
    if max_tokens is None:
        max_tokens = math.ceil(len(ids) / max(1, pieces or 1))
    return [wrap.before + piece + wrap.after for piece in split_evenly(ids, max_tokens)], len(ids)


def chunk_texts(tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int) -> list[str]:
    """The text each chunk adapter of a memory was made from, in chunk order (unwrapped)."""
    wrap = template_wrapping(tokenizer)
    chunks, _ = document_chunks(tokenizer, text, chunk_tokens)  # the very cut internalization makes
    return [tokenizer.decode(chunk[len(wrap.before) : len(chunk) - len(wrap.after)]) for chunk in chunks]


def split_evenly(ids: list[int], max_tokens: int) -> list[list[int]]:
    """Split into the fewest near-equal contiguous pieces of at most ``max_tokens`` each."""
    if not ids:
        return []
    pieces = math.ceil(len(ids) / max_tokens)
    size, extra = divmod(len(ids), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(ids[start:end])
        start = end
    return out


def document_chunks(tokenizer: PreTrainedTokenizerBase, text: str, chunk_tokens: int) -> tuple[list[list[int]], int]:
    """The wrapped chunks of a document (token ids) and the document's own token count."""
    return wrapped_chunks(tokenizer, text, max_tokens=chunk_tokens)
