"""Meta-training a Doc-to-LoRA hypernetwork by context distillation.

Teacher: the base model with the document in its prompt. Student: the base model plus the
generated adapter, seeing only the questions. The hypernetwork learns to make the student match
the teacher's next-token distribution on the answer tokens (KL over the teacher's top-k), with
optional cross-entropy on the gold answers and an L1 penalty on the generated factors.
An interference term runs the teacher's own prompt again with other documents' memories active
and asks for the teacher's answers: a memory must stay quiet about what it does not hold.

Documents are cut into a sampled number of chunks (a curriculum from one chunk upward), so the
hypernetwork learns that chunk adapters concatenated along the rank must add up to the document.
Works on CPU and CUDA; checkpoints every few minutes and resumes where it stopped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from d2l_lab.chat import encode_chat
from d2l_lab.training import Progress, load_state, lr_factor, mixed_precision, optimizer_step, save_state
from d2l_memory.chunking import wrapped_chunks
from d2l_memory.host import AdapterHost
from d2l_memory.hypernet import DocToLoRA, require_fit
from d2l_memory.internalize import hypernet_factors, pad_batch
from d2l_memory.lora_layer import ActiveSet, per_row_active_set, use_active_set


@dataclass(frozen=True)
class DistillExample:
    """A document and question/answer pairs about it (answers as the teacher should say them)."""

    document: str
    qas: Sequence[tuple[str, str]]


MessagesFn = Callable[[str | None, Sequence[tuple[str, str]]], list[dict[str, str]]]
"""Builds the chat for a document (None for the student) and its question/answer pairs."""


class DistillSettings(BaseModel):
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    top_k: int = Field(16, ge=1, description="teacher tokens the KL is taken over")
    kl_weight: float = 1.0
    ce_weight: float = 0.5
    l1_weight: float = 0.0
    interference_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the KL that keeps in-context reading intact under unrelated memories; off by"
        " default because it costs a second student forward over the teacher's prompt (train_d2l turns it on)",
    )
    interference_memories: int = Field(
        4, ge=1, description="unrelated memories active in that term (at most batch_size - 1; none at batch size 1)"
    )
    max_chunks: int = Field(4, ge=1, description="largest chunk count the curriculum reaches")
    curriculum_fraction: float = Field(0.5, ge=0, le=1, description="share of training spent growing chunk counts")
    time_budget_minutes: float | None = Field(
        None, gt=0, description="train for this long instead of `steps`; schedules follow the clock"
    )
    data_workers: int = Field(0, ge=0, description="processes encoding batches (0: in the training loop)")
    chunk_tokens_per_forward: int = Field(
        4096, ge=1, description="padded tokens per hypernetwork forward; chunks are grouped by length"
    )
    checkpoint_minutes: float = 5.0
    seed: int = 0


def chunk_count(rng: random.Random, progress: float, settings: DistillSettings) -> int:
    """Half the samples use one chunk; the rest up to a maximum that grows with progress."""
    ramp = 1.0 if settings.curriculum_fraction == 0 else min(1.0, progress / settings.curriculum_fraction)
    ceiling = 1 + round(ramp * (settings.max_chunks - 1))
    return 1 if rng.random() < 0.5 else rng.randint(1, ceiling)


EncodedChat = tuple[list[int], list[bool]]
"""Token ids of a conversation and, per token, whether it is an answer (assistant) token."""


@dataclass
class _Encoded:
    chunks: list[list[int]]  # wrapped chunks of the document
    teacher: EncodedChat
    student: EncodedChat


def _encode(tokenizer: PreTrainedTokenizerBase, example: DistillExample, chunks: int, messages: MessagesFn) -> _Encoded:
    wrapped, _ = wrapped_chunks(tokenizer, example.document, chunks)
    teacher, student = encode_pair(tokenizer, messages(example.document, example.qas), messages(None, example.qas))
    return _Encoded(wrapped, teacher, student)


class _EncodedBatches(IterableDataset):
    """An endless stream of encoded batches; each worker draws from its own seeded generator."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        examples: Callable[[random.Random], DistillExample],
        messages: MessagesFn,
        settings: DistillSettings,
        progress: Progress,
        start_step: int,
    ) -> None:
        self.tokenizer, self.examples, self.messages = tokenizer, examples, messages
        self.settings, self.progress, self.start_step = settings, progress, start_step

    def __iter__(self) -> Iterator[list[_Encoded]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        settings = self.settings
        rng = random.Random(f"{settings.seed}-{self.start_step}-{worker}")
        step = self.start_step + worker
        while True:
            progress = self.progress(step)
            yield [
                _encode(self.tokenizer, self.examples(rng), chunk_count(rng, progress, settings), self.messages)
                for _ in range(settings.batch_size)
            ]
            step += workers


def _as_is(batch: list[_Encoded]) -> list[_Encoded]:
    return batch


# --- context-distillation pieces, shared with the per-document baseline (distill_baseline.py) ----
def encode_pair(
    tokenizer: PreTrainedTokenizerBase,
    teacher_messages: Sequence[Mapping[str, str]],
    student_messages: Sequence[Mapping[str, str]],
) -> tuple[EncodedChat, EncodedChat]:
    """Encode the teacher's chat (with the document) and the student's (without) for distillation.

    The KL compares the two at their answer tokens one for one, so both must say the same answers.
    """
    teacher, student = encode_chat(tokenizer, teacher_messages), encode_chat(tokenizer, student_messages)
    if sum(teacher[1]) != sum(student[1]):
        raise ValueError("teacher and student answers tokenized differently; check the chat format")
    return teacher, student


def pad_chats(chats: Sequence[EncodedChat], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad encoded chats: ids [b, s], attention mask [b, s] and answer mask [b, s] (bool)."""
    ids, attention = pad_batch([ids for ids, _ in chats], pad_id)
    answer, _ = pad_batch([[int(a) for a in answer] for _, answer in chats], 0)
    return ids, attention, answer.bool()


@dataclass(frozen=True)
class AnswerLogits:
    """The logits of a padded batch at the positions that predict an answer token, and only there:
    the LM head (a fifth of a small model's compute, at a vocabulary of 49k) skips the positions at which
    no row predicts an answer token (a kept position some rows do not answer at is masked by ``predicting``).

    ``logits`` [b, k, V]: kept position j predicts the token after it; ``predicting`` [b, k]: whether
    that token is an answer token of the row; ``gold`` [b, k]: that token.
    """

    logits: torch.Tensor
    predicting: torch.Tensor
    gold: torch.Tensor

    def rows(self, which: torch.Tensor) -> AnswerLogits:
        """The rows a boolean mask [b] picks."""
        which = which.to(self.logits.device)
        return AnswerLogits(self.logits[which], self.predicting[which], self.gold[which])

    def log_probs(self) -> torch.Tensor:
        """Float32 log-probs predicting each answer token, row by row: [n, V]."""
        return self.logits[self.predicting].float().log_softmax(-1)

    def gold_tokens(self) -> torch.Tensor:
        """The answer tokens, in the order of :meth:`log_probs`: [n]."""
        return self.gold[self.predicting]


def forward_logits(
    host: AdapterHost, active: ActiveSet | None, ids: torch.Tensor, attention: torch.Tensor, answer: torch.Tensor
) -> AnswerLogits:
    """The hosted model's logits predicting the answer tokens (mask ``answer`` [b, s]) of ids [b, s],
    with ``active`` applied (None: the base model)."""
    device = host.device
    predicting = answer[:, 1:].to(device)  # the token at p + 1 is predicted at p
    keep = predicting.any(0).nonzero().squeeze(-1)  # [k]
    with use_active_set(active):
        logits = host.model(
            input_ids=ids.to(device), attention_mask=attention.to(device).long(), logits_to_keep=keep
        ).logits  # [b, k, V]
    return AnswerLogits(logits, predicting[:, keep], ids.to(device)[:, 1:][:, keep])


@torch.no_grad()
def teacher_top_k(
    host: AdapterHost, ids: torch.Tensor, attention: torch.Tensor, answer: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (base model, no adapters) top-k log-probs and token ids per answer token: [n, k] each."""
    logp = forward_logits(host, None, ids, attention, answer).log_probs()  # [n, V]
    top_logp, top_ids = logp.topk(top_k, dim=-1)
    return top_logp, top_ids


def distill_terms(teacher: tuple[torch.Tensor, torch.Tensor], student: AnswerLogits) -> dict[str, torch.Tensor]:
    """The student's loss terms on the answer tokens.

    ``kl``: KL(teacher || student) over k + 1 outcomes: the teacher's top-k tokens and one bucket
    for everything else. A true KL (never negative, zero only when the student matches the
    teacher on those outcomes) that needs only the teacher's top-k to be kept.
    ``ce``: cross-entropy on the gold answer tokens; ``token_acc``: greedy accuracy.
    """
    top_logp, top_ids = teacher  # [n, k] each
    student_logp = student.log_probs()  # [n, V]
    teacher_logp = _with_rest(top_logp)  # [n, k + 1]
    student_top = _with_rest(student_logp.gather(-1, top_ids))  # [n, k + 1]
    ce, token_acc = _gold_terms(student_logp, student.gold_tokens())
    return {"kl": (teacher_logp.exp() * (teacher_logp - student_top)).sum(-1).mean(), "ce": ce, "token_acc": token_acc}


def answer_ce(student: AnswerLogits) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and greedy token accuracy on the gold answer tokens, without a teacher."""
    return _gold_terms(student.log_probs(), student.gold_tokens())


def _gold_terms(logp: torch.Tensor, gold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE and greedy accuracy of answer-token log-probs [n, V] against the gold tokens [n]."""
    return F.nll_loss(logp, gold), (logp.argmax(-1) == gold).float().mean()


def _with_rest(top_logp: torch.Tensor) -> torch.Tensor:
    """Append log(1 - sum(p_top)) as one more outcome: [n, k] -> [n, k + 1]."""
    rest = torch.log1p(-top_logp.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))  # [n, 1]
    return torch.cat([top_logp, rest], dim=-1)


def distill_loss(
    host: AdapterHost,
    hypernet: DocToLoRA,
    batch: Sequence[_Encoded],
    settings: DistillSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss and its unweighted terms: ``kl``, ``ce``, ``token_acc`` and, when the
    interference term runs, ``interference_kl``."""
    pad = host.pad_token_id
    # Teacher: document in the prompt, no adapters.
    t_ids, t_mask, t_answer = pad_chats([e.teacher for e in batch], pad)
    teacher = teacher_top_k(host, t_ids, t_mask, t_answer, settings.top_k)

    # Hypernetwork over every chunk of every document, then regroup chunks per document.
    flat_chunks = [c for e in batch for c in e.chunks]
    factors = chunk_factors(host, hypernet, flat_chunks, settings.chunk_tokens_per_forward)
    per_row = _group_chunks(factors, [len(e.chunks) for e in batch])

    s_ids, s_mask, s_answer = pad_chats([e.student for e in batch], pad)
    active = per_row_active_set("student", per_row)
    terms = distill_terms(teacher, forward_logits(host, active, s_ids, s_mask, s_answer))
    l1 = torch.stack([A.abs().mean() + B.abs().mean() for A, B in factors.values()]).sum()
    loss = settings.kl_weight * terms["kl"] + settings.ce_weight * terms["ce"] + settings.l1_weight * l1
    stats = {name: value.item() for name, value in terms.items()}

    others = min(settings.interference_memories, len(batch) - 1)
    if settings.interference_weight and others:
        # Interference: the teacher's own prompt (document in context) with other documents'
        # memories active must still give the teacher's answers. Without this term nothing in
        # training sees an adapter beside a document it does not hold, and in-context reading
        # collapses once unrelated memories are on.
        unrelated = per_row_active_set("unrelated", _unrelated_memories(per_row, others))
        kl = distill_terms(teacher, forward_logits(host, unrelated, t_ids, t_mask, t_answer))["kl"]
        loss = loss + settings.interference_weight * kl
        stats["interference_kl"] = kl.item()
    return loss, stats


def _unrelated_memories(
    per_row: dict[str, tuple[torch.Tensor, torch.Tensor]], count: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Row i gets the memories of rows i+1 .. i+count (cyclically) concatenated along the rank.
    Rolling the batch gives every document other documents' memories, never its own, without a
    second hypernetwork pass:
    A [docs, L, r, d_in] -> [docs, L, count*r, d_in]; B [docs, L, d_out, r] -> [docs, L, d_out, count*r]."""
    return {
        module: (
            torch.cat([A.roll(-shift, dims=0) for shift in range(1, count + 1)], dim=2),
            torch.cat([B.roll(-shift, dims=0) for shift in range(1, count + 1)], dim=3),
        )
        for module, (A, B) in per_row.items()
    }


def chunk_factors(
    host: AdapterHost, hypernet: DocToLoRA, chunks: Sequence[list[int]], tokens_per_forward: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The hypernetwork's factors for every chunk, in the given order:
    {module: (A [chunks, L, r, d_in], B [chunks, L, d_out, r])}.

    A batch mixes one-chunk documents of a few hundred tokens with eighths of short ones, so
    padding every chunk to the longest wastes most of the work; chunks run shortest first, in
    groups of at most ``tokens_per_forward`` padded tokens. The padding mask makes each chunk's
    factors independent of its group.
    """
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i]))
    groups: list[list[int]] = [[]]
    for i in order:  # ascending, so the chunk joining a group is its longest
        if groups[-1] and (len(groups[-1]) + 1) * len(chunks[i]) > tokens_per_forward:
            groups.append([])
        groups[-1].append(i)
    pieces: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for group in groups:
        for module, factors in hypernet_factors(host, hypernet, [chunks[i] for i in group]).items():
            pieces.setdefault(module, []).append(factors)
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))  # chunk i sits at row position[i] of the sorted run
    position = position.to(host.device)
    return {
        module: (torch.cat([A for A, _ in parts])[position], torch.cat([B for _, B in parts])[position])
        for module, parts in pieces.items()
    }


def _group_chunks(
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]], counts: list[int]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Concatenate each document's chunk factors along the rank, zero-padding to the longest:
    A [chunks, L, r, d_in] -> [docs, L, K*r, d_in]; B [chunks, L, d_out, r] -> [docs, L, d_out, K*r]."""
    most = max(counts)
    grouped = {}
    for module, (A, B) in factors.items():
        rows_A, rows_B, start = [], [], 0
        for count in counts:
            a = torch.cat(list(A[start : start + count]), dim=1)  # [L, count*r, d_in]
            b = torch.cat(list(B[start : start + count]), dim=2)  # [L, d_out, count*r]
            missing = (most - count) * A.shape[2]
            rows_A.append(F.pad(a, (0, 0, 0, missing)))
            rows_B.append(F.pad(b, (0, missing)))
            start += count
        grouped[module] = (torch.stack(rows_A), torch.stack(rows_B))
    return grouped


def train_hypernet(
    host: AdapterHost,
    hypernet: DocToLoRA,
    examples: Callable[[random.Random], DistillExample],
    messages: MessagesFn,
    settings: DistillSettings,
    out_dir: str | Path,
    *,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> DocToLoRA:
    """Train ``hypernet`` in place; checkpoints into ``out_dir`` and resumes from it.

    A calibrated ``adapter_scale`` was picked for the weights as they were, so training starts
    it over at 1 (``d2l_lab.calibrate_scale`` picks one for the trained weights)."""
    require_fit(host.layout, hypernet.config, hidden_size=hypernet.config.hidden_size)
    hypernet.config = hypernet.config.model_copy(update={"adapter_scale": 1.0})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in host.model.parameters():
        p.requires_grad_(False)
    hypernet.to(host.device).train()
    optimizer = torch.optim.AdamW(hypernet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, elapsed = load_state(out_dir, hypernet, optimizer)
    last_save = time.monotonic()
    progress = Progress(settings.steps, settings.time_budget_minutes, elapsed_before=elapsed, started=last_save)
    batches = DataLoader(
        _EncodedBatches(host.tokenizer, examples, messages, settings, progress, step),
        batch_size=None,
        num_workers=settings.data_workers,
        collate_fn=_as_is,
        prefetch_factor=4 if settings.data_workers else None,
    )
    timed = settings.time_budget_minutes is not None
    bar = tqdm(
        total=100 if timed else settings.steps,
        initial=0 if timed else step,
        desc="meta-training",
        unit="%" if timed else "step",
    )
    for batch in batches:
        if progress(step) >= 1:
            break
        with mixed_precision(host.device):
            loss, stats = distill_loss(host, hypernet, batch, settings)
        optimizer_step(optimizer, loss, hypernet, settings.lr * lr_factor(step, progress(step), settings.warmup_steps))
        step += 1
        bar.update(min(100, round(100 * progress(step))) - bar.n if timed else 1)
        bar.set_postfix(step=step, loss=f"{loss.item():.3f}", acc=f"{stats['token_acc']:.2f}")
        if on_step is not None:
            on_step(step, stats)
        if time.monotonic() - last_save > settings.checkpoint_minutes * 60:
            save_state(out_dir, hypernet, optimizer, step, progress.elapsed(), record=settings.model_dump())
            last_save = time.monotonic()
    save_state(out_dir, hypernet, optimizer, step, progress.elapsed(), record=settings.model_dump())
    bar.close()
    return hypernet.eval()
