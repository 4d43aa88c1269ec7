"""Exact-match evaluation by batched greedy generation.

Shared by the base-model benchmark and the Doc-to-LoRA benchmarks: the same
prompts (from ``formats``), the same decoding and the same scoring, so a
teacher (document in the prompt) and a student (document in an adapter) are
measured alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from d2l_lab.formats import Message, qa_messages
from d2l_lab.world import QA

MAX_BATCH_TOKENS = 16_384
"""Prompt tokens per generation batch: large enough to keep a CPU busy, small enough for its memory."""


@torch.inference_mode()
def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chats: Sequence[Sequence[Message]],
    max_new_tokens: int = 12,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    activate: Callable[[Sequence[int]], AbstractContextManager] | None = None,
) -> list[str]:
    """The model's greedy reply to each chat (which ends with a user turn), stripped of whitespace.

    Prompts are sorted by length and batched by token budget with left
    padding, so similar lengths share a batch and little compute goes to padding.
    ``activate(indices)``, if given, returns the context that applies the adapters of the chats
    at those indices (one per batch row) while their batch generates.
    """
    prompts: list[list[int]] = tokenizer.apply_chat_template(
        [list(chat) for chat in chats], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers = [""] * len(prompts)
    device = next(model.parameters()).device
    start = 0
    while start < len(order):
        batch_size = max(1, max_batch_tokens // len(prompts[order[start]]))  # the first is the longest
        indices = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [prompts[i] for i in indices]}, padding_side="left", return_tensors="pt")
        with activate(indices) if activate is not None else nullcontext():
            output = model.generate(
                input_ids=batch["input_ids"].to(device),  # [b, prompt]
                attention_mask=batch["attention_mask"].to(device),  # [b, prompt]
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )  # [b, prompt + new]
        replies = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, reply in zip(indices, replies):
            answers[i] = reply.strip()
        start += batch_size
    return answers


def exact_matches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chats: Sequence[Sequence[Message]],
    gold: Sequence[str],
    max_new_tokens: int = 12,
) -> list[bool]:
    """Whether each greedy reply equals its gold answer exactly (after stripping whitespace)."""
    replies = greedy_answers(model, tokenizer, chats, max_new_tokens)
    return [is_exact(reply, answer) for reply, answer in zip(replies, gold)]


def is_exact(reply: str, gold: str) -> bool:
    """Exact match of a stripped greedy reply against a gold answer (stripped too)."""
    return reply == gold.strip()


def qa_replies(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: Iterable[tuple[str | None, QA]]
) -> list[str]:
    """The greedy reply to each (document text or None, question) pair, asked as its own single-turn chat.

    ``None`` asks closed-book, as for a Doc-to-LoRA student whose adapter holds the document.
    """
    chats = [qa_messages(document, [qa])[:-1] for document, qa in items]  # drop the gold assistant turn
    return greedy_answers(model, tokenizer, chats)


def qa_exact_matches(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: Iterable[tuple[str | None, QA]]
) -> list[bool]:
    """Whether the greedy reply to each (document text or None, question) pair is its gold answer."""
    items = list(items)
    return [is_exact(reply, qa.answer) for reply, (_, qa) in zip(qa_replies(model, tokenizer, items), items)]


def accuracy(matches: Sequence[bool]) -> float:
    return sum(matches) / len(matches) if matches else 0.0


def accuracy_by_group(groups: Sequence[str], matches: Sequence[bool]) -> dict[str, float]:
    """Accuracy of each group, in order of first appearance (all items go through one batched call)."""
    return {group: accuracy([m for g, m in zip(groups, matches) if g == group]) for group in dict.fromkeys(groups)}
