"""Token counts for prompt budgets: the hosted base model's own tokenizer, when there is one.

Budgets (when to internalize a tool output, how much history stays verbatim) are about the
prompt of the model that reads it, so they are counted with that model's tokenizer. Only a
remote model, for which we hold no tokenizer, falls back to tiktoken, and tiktoken is optional:
it may be missing, and offline it cannot download its encodings, so both failures fall back to
a character estimate instead of breaking the agent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from d2l_memory.host import AdapterHost

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
"""Text -> its number of tokens."""

CHARS_PER_TOKEN = 4  # the usual estimate for English text under BPE tokenizers


def token_counter(host: AdapterHost | None = None, *, encoding: str = "o200k_base") -> TokenCounter:
    """The host's tokenizer; without a host, tiktoken's ``encoding`` if it loads, else an estimate."""
    if host is not None:
        return host.count_tokens
    try:
        import tiktoken
    except ImportError:
        logger.warning(
            'tiktoken is not installed (pip install "d2l-memory[tiktoken]"); estimating %d characters per token',
            CHARS_PER_TOKEN,
        )
        return estimate_tokens
    try:
        tokenizer = tiktoken.get_encoding(encoding)
    except Exception as err:  # noqa: BLE001 - offline it fails with whatever its HTTP client raises
        logger.warning("tiktoken encoding %r is unavailable (%s); estimating tokens", encoding, err)
        return estimate_tokens
    return lambda text: len(tokenizer.encode(text, disallowed_special=()))


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)
