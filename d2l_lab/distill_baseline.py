"""The per-document context-distillation baseline that Doc-to-LoRA is compared against.

Doc-to-LoRA turns a document into an adapter in one hypernetwork pass. The classic alternative
trains a fresh LoRA for every document by gradient descent on the same objective: the base
model plus the LoRA, seeing only the questions, should match the teacher (the base model with
the document in its prompt) on the answer tokens. It is the quality reference, and its cost
(forward and backward passes for every document, against one forward pass) is the point
of comparison. The loss pieces are meta-training's own (:mod:`d2l_lab.meta_train`); with
meta-training's ``ce_weight`` the two optimise exactly the same thing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import trange

from d2l_lab.meta_train import (
    distill_terms,
    encode_pair,
    forward_logits,
    pad_chats,
    teacher_top_k,
)
from d2l_memory.adapter import LoRAAdapter, LoRAWeights, ModuleKey
from d2l_memory.errors import AdapterError, ModelError
from d2l_memory.host import AdapterHost
from d2l_memory.introspection import DEFAULT_TARGETS
from d2l_memory.lora_layer import ActiveSet

Messages = Sequence[Mapping[str, str]]


def distill_adapter(
    host: AdapterHost,
    document_messages_teacher: Messages,
    student_messages: Messages,
    *,
    rank: int = 8,
    modules: Sequence[str] = DEFAULT_TARGETS,
    steps: int = 200,
    lr: float = 1e-3,
    top_k: int = 16,
    ce_weight: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> tuple[LoRAAdapter, dict[str, float]]:
    """Train a rank-``rank`` LoRA on ``modules`` of every layer so the student matches the teacher.

    ``document_messages_teacher`` is the chat with the document in context and the answers;
    ``student_messages`` the same questions and answers without the document (several questions
    go in one chat as successive turns). The loss is KL(teacher || student) over the teacher's
    ``top_k`` tokens at every answer token, plus ``ce_weight`` times the cross-entropy on the
    answers; Adam with gradient clipping at 1.

    Initialisation follows PEFT: ``A`` uniform in ``±1/sqrt(d_in)``, ``B`` zero, so training starts
    from the base model exactly (and ``steps=0`` returns an adapter that changes nothing).
    The base model is never modified: gradients flow only into the LoRA factors, which are kept in
    float32 and cast to the model's dtype for each forward.

    Returns the adapter (one part, ``"distilled"``, on the host's device, float32) and stats:
    ``steps``, ``seconds`` (wall time of making the adapter: the teacher pass and the training
    steps, not the before/after measurements), and ``initial_*`` / ``final_*`` values of
    ``loss``, ``kl``, ``ce`` and ``token_acc`` before and after training.
    """
    if rank < 1:
        raise AdapterError(f"the LoRA rank must be at least 1, got {rank}")
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps} and lr={lr}")
    if host.tokenizer is None:
        raise ModelError("distillation needs the host's tokenizer; pass one to AdapterHost(model, tokenizer)")
    started = time.perf_counter()
    teacher_chat, student_chat = encode_pair(host.tokenizer, document_messages_teacher, student_messages)
    pad = host.pad_token_id
    teacher = teacher_top_k(host, *pad_chats([teacher_chat], pad), top_k)  # log-probs, ids: [n, k] each
    ids, attention, answer = pad_chats([student_chat], pad)  # [1, s] each

    factors = _fresh_factors(host, modules, rank, seed)
    parameters = [factor for pair in factors.values() for factor in pair]

    def objective() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cast = {key: (A.to(host.dtype), B.to(host.dtype)) for key, (A, B) in factors.items()}
        active = ActiveSet(("distilled",), cast)
        terms = distill_terms(teacher, forward_logits(host, active, ids, attention, answer))
        return terms["kl"] + ce_weight * terms["ce"], terms

    @torch.no_grad()
    def measure(prefix: str) -> dict[str, float]:
        loss, terms = objective()
        return {f"{prefix}_loss": loss.item()} | {f"{prefix}_{name}": value.item() for name, value in terms.items()}

    _settle(host.device)
    seconds = time.perf_counter() - started  # the before/after measurements are not part of the cost
    initial = measure("initial")
    started = time.perf_counter()
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in trange(steps, desc="distilling", unit="step", disable=not progress):
        loss, _ = objective()
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=parameters)  # gradients for the LoRA factors only, never the base weights
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
    _settle(host.device)
    seconds += time.perf_counter() - started
    final = measure("final")

    adapter = LoRAAdapter.single(
        "distilled", {key: LoRAWeights(A.detach(), B.detach()) for key, (A, B) in factors.items()}
    )
    return adapter, {"steps": steps, "seconds": seconds} | initial | final


def _settle(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_factors(
    host: AdapterHost, modules: Sequence[str], rank: int, seed: int
) -> dict[ModuleKey, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT's initialisation: A uniform in ±1/sqrt(d_in), B zero; float32 leaves that require grad."""
    generator = torch.Generator().manual_seed(seed)  # on the CPU: a seed gives the same A on every device
    factors = {}
    for target in host.layout.select(modules):
        bound = 1 / math.sqrt(target.d_in)
        A = (torch.rand(rank, target.d_in, generator=generator) * 2 - 1) * bound  # [r, d_in]
        B = torch.zeros(target.d_out, rank)  # [d_out, r]
        factors[target.key] = (A.to(host.device).requires_grad_(), B.to(host.device).requires_grad_())
    return factors
