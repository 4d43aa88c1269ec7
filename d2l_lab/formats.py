"""How world items become chat messages: the one place that fixes the prompt formats.

Pretraining, evaluation, the Doc-to-LoRA teacher and student, and Text-to-LoRA
all import these functions, so a document or a task is always shown to the
model in exactly the way it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

from d2l_lab.world import QA

Message = dict[str, str]


def qa_messages(document_text: str | None, qas: Sequence[QA]) -> list[Message]:
    """A multi-turn chat asking every question of ``qas`` in order.

    The document opens the first user turn; later turns hold only their
    question. With ``document_text=None`` the questions are asked closed-book,
    which is also what the Doc-to-LoRA student sees (its document is in the adapter).
    """
    messages: list[Message] = []
    for turn, qa in enumerate(qas):
        question = qa.question if turn > 0 or document_text is None else f"{document_text}\n\n{qa.question}"
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": qa.answer}]
    return messages


def task_messages(
    description: str | None, examples: Sequence[tuple[str, str]], query: str, output: str | None = None
) -> list[Message]:
    """One user turn: the description, then ``Input:``/``Output:`` example lines, then the query.

    The assistant turn holds ``output`` when it is given (training data);
    without it the chat ends at the user turn, ready for generation.
    """
    lines = [
        line for task_input, task_output in examples for line in (f"Input: {task_input}", f"Output: {task_output}")
    ]
    lines.append(f"Input: {query}")
    prompt = "\n".join(lines)
    if description is not None:
        prompt = f"{description}\n\n{prompt}"
    messages = [{"role": "user", "content": prompt}]
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return messages
