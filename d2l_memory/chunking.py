"""How a document is wrapped and cut into chunks before the hypernetwork reads it.

Training and internalization must wrap documents identically, so both call
:func:`document_chunks`. Each chunk is wrapped in the model's chat template as a user turn
(the published recipe), with the template's prefix and suffix re-added around every chunk.
"""

from __future__ import annotations

import math

from transformers import PreTrainedTokenizerBase

_SENTINEL = "\u2063DOC\u2063"  # invisible separator: never part of a real template


def template_wrapping(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Token ids the chat template puts before and after a user turn's content."""
    if tokenizer.chat_template is None:
        return [], []
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False)
    before, after = rendered.split(_SENTINEL)
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return encode(before), encode(after)


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
    ids = tokenizer(text, add_special_tokens=False).input_ids
    before, after = template_wrapping(tokenizer)
    return [before + piece + after for piece in split_evenly(ids, chunk_tokens)], len(ids)
