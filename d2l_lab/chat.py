"""Chat messages -> token ids, with a mask of the tokens the assistant says.

Training (base model, hypernetworks) puts its loss on assistant tokens only, and context
distillation aligns teacher and student on exactly those tokens, so one function decides where
they are for every tokenizer with a chat template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase


def _render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]], prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=prompt, return_dict=True)
    return list(encoded["input_ids"])


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]
) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and, per token, whether an assistant turn produced it.

    Works turn by turn: the tokens an assistant turn adds after its generation prompt are its
    own. That needs a template whose renderings of successive prefixes extend each other (true of
    every common chat template); a template that breaks it raises ValueError.
    """
    ids: list[int] = []
    mask: list[bool] = []
    for turn, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:turn], prompt=True)
            _extend(ids, mask, prompt, False)
            _extend(ids, mask, _render(tokenizer, messages[: turn + 1], prompt=False), True)
        else:
            _extend(ids, mask, _render(tokenizer, messages[: turn + 1], prompt=False), False)
    return ids, mask


def _extend(ids: list[int], mask: list[bool], rendered: list[int], is_answer: bool) -> None:
    if rendered[: len(ids)] != ids:
        raise ValueError("the chat template does not render conversation prefixes consistently")
    new = rendered[len(ids) :]
    ids.extend(new)
    mask.extend([is_answer] * len(new))
