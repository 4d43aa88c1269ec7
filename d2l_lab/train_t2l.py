"""Training Text-to-LoRA on the task world, end to end (``sft``) or by reconstruction (``recon``).

    python -m d2l_lab.train_t2l --mode sft --out runs/t2l --minutes 20

``sft``: each step draws tasks (a *training* description of a *training* family, or a no-op
description, see :mod:`d2l_lab.t2l_data`), generates one adapter per task and runs the frozen base
model with each task's adapter on its bare example inputs. Real tasks are scored by cross-entropy
on the answer tokens; no-op tasks by the KL from the base model's own answer distribution (top-k
plus the rest, the KL meta-training uses), so noise learns to change nothing.

``recon``: first one oracle LoRA per training family is trained by plain SFT on its examples
(cached in ``OUT/oracles``, an :class:`~d2l_memory.store.AdapterStore`). Then the hypernetwork
learns to reproduce each oracle's delta ``B @ A`` from any of its family's training descriptions,
and a zero delta from no-op descriptions, by L1 on the deltas (the factors themselves are not
unique: ``B M`` and ``M^-1 A`` give the same delta).

``--init`` starts either mode from a saved hypernetwork: the way to carry the shipped one over to
a continued base model, whose oracles and answers moved a little, not from scratch.

Both modes: a batch is a function of (seed, step) only, so a resumed run sees exactly the data it
would have seen; checkpoints go to ``OUT/checkpoint`` (safetensors + JSON, never pickle) every few
minutes and at the end, and rerunning the same command continues from there; a step count or a
wall-clock budget drives warm-up and cosine decay; CPU or CUDA (bf16 autocast).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from d2l_lab.chat import encode_chat
from d2l_lab.formats import Message
from d2l_lab.meta_train import (
    answer_ce,
    distill_terms,
    forward_logits,
    pad_chats,
    teacher_top_k,
)
from d2l_lab.t2l_data import TaskDraw, draw_tasks, student_messages
from d2l_lab.t2l_evaluate import evaluate_skills
from d2l_lab.training import (
    Progress,
    load_state,
    lr_factor,
    mixed_precision,
    optimizer_step,
    save_state,
)
from d2l_lab.world import TaskFamily, heldout_families, train_families
from d2l_memory.adapter import LoRAAdapter, LoRAWeights
from d2l_memory.embedded import DEFAULT_MODEL_DIR, load_host
from d2l_memory.errors import D2LMemoryError, ModelError
from d2l_memory.host import AdapterHost
from d2l_memory.hypernet import require_fit
from d2l_memory.lora_layer import ActiveSet, per_row_active_set
from d2l_memory.routing import TextEncoder
from d2l_memory.store import AdapterStore
from t2l_skills.encoder import load_encoder
from t2l_skills.hypernet import (
    CONFIG_NAME,
    Factors,
    T2LConfig,
    TextToLoRA,
    delta_norms,
    lora_init_A,
    stack_adapters,
)

ORACLE_NAMESPACE = ("oracles",)


class T2LTrainSettings(BaseModel):
    mode: Literal["sft", "recon"] = "sft"
    steps: int = Field(2000, ge=1)
    time_budget_minutes: float | None = Field(
        None, gt=0, description="train for this long instead of `steps`; schedules follow the clock"
    )
    tasks_per_step: int = Field(16, ge=1, description="tasks (descriptions, so adapters) per batch")
    examples_per_task: int = Field(4, ge=1, description="example inputs each task's adapter is run on (sft)")
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = 0.01
    noop_share: float = Field(0.2, ge=0, le=1, description="share of tasks given a no-op description")
    noop_weight: float = Field(1.0, ge=0, description="weight of a no-op example's KL against a real one's CE")
    noop_norm_weight: float = Field(
        0.05, ge=0, description="weight of the Frobenius norm of a no-op task's whole delta (pushes it to zero)"
    )
    top_k: int = Field(16, ge=1, description="base-model tokens the no-op KL is taken over")
    oracle_steps: int = Field(100, ge=1, description="SFT steps per oracle LoRA (recon)")
    oracle_lr: float = Field(3e-3, gt=0)
    oracle_batch: int = Field(32, ge=1, description="examples per oracle SFT step")
    checkpoint_minutes: float = Field(5.0, gt=0)
    seed: int = 0


# --- loss pieces ------------------------------------------------------------------------------
def sft_loss(
    host: AdapterHost,
    hypernet: TextToLoRA,
    embeddings: torch.Tensor,
    draws: Sequence[TaskDraw],
    settings: T2LTrainSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """End-to-end loss of one batch: each task's adapter runs on its own examples (one row each).

    Every example row counts the same: the CE of real rows and the KL of no-op rows are weighted
    by their share of the rows (the KL also by ``noop_weight``). The KL alone leaves no-op tasks
    free to share the large delta every real task carries (a bare query needs telling to answer
    at all), so no-op tasks also pay ``noop_norm_weight`` times the norm of their whole delta.
    """
    per_task = len(draws[0].examples)
    factors = hypernet(embeddings)  # module -> (A [tasks, L, r, d_in], B [tasks, L, d_out, r])
    rows = {m: (A.repeat_interleave(per_task, 0), B.repeat_interleave(per_task, 0)) for m, (A, B) in factors.items()}
    chats = [
        encode_chat(host.tokenizer, student_messages(query, output)) for d in draws for query, output in d.examples
    ]
    ids, attention, answer = pad_chats(chats, host.pad_token_id)  # [rows, s] each
    noop = torch.tensor([d.noop for d in draws]).repeat_interleave(per_task)  # [rows]
    logits = forward_logits(host, per_row_active_set("t2l", rows), ids, attention, answer)

    loss, stats = logits.logits.new_zeros(()).float(), dict[str, float]()
    real_share = 1 - noop.float().mean().item()
    if real_share > 0:
        real = ~noop
        ce, accuracy = answer_ce(logits.rows(real))
        loss = loss + real_share * ce
        stats |= {"ce": ce.item(), "token_acc": accuracy.item()}
    if real_share < 1:
        teacher = teacher_top_k(host, ids[noop], attention[noop], answer[noop], settings.top_k)
        kl = distill_terms(teacher, logits.rows(noop))["kl"]
        noop_tasks = torch.tensor([d.noop for d in draws], device=embeddings.device)
        norm = delta_norms({m: (A[noop_tasks], B[noop_tasks]) for m, (A, B) in factors.items()}).mean()
        loss = loss + (1 - real_share) * (settings.noop_weight * kl + settings.noop_norm_weight * norm)
        stats |= {"noop_kl": kl.item(), "noop_norm": norm.item()}
    return loss, stats


def recon_loss(
    hypernet: TextToLoRA,
    embeddings: torch.Tensor,
    draws: Sequence[TaskDraw],
    oracles: Factors,
    oracle_rows: dict[str, int],
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean L1 between generated and oracle deltas (zero deltas for no-op descriptions).

    ``oracles`` holds every family's oracle factors stacked like generated ones (row
    ``oracle_rows[family id]``); deltas are formed per batch, never stored.
    """
    factors = hypernet(embeddings)
    device = embeddings.device
    pick = torch.tensor([oracle_rows[d.family.id] for d in draws], device=device)  # [b]
    keep = torch.tensor([0.0 if d.noop else 1.0 for d in draws], device=device)[:, None, None, None]  # [b, 1, 1, 1]
    errors, scales = [], []
    for module, (A, B) in factors.items():
        oracle_A, oracle_B = oracles[module]
        target = (oracle_B[pick] @ oracle_A[pick]) * keep  # [b, L, d_out, d_in]
        errors.append((B @ A - target).abs().mean())
        scales.append(target.abs().mean())
    loss = torch.stack(errors).mean()
    return loss, {"l1": loss.item(), "rel_l1": loss.item() / max(torch.stack(scales).mean().item(), 1e-12)}


# --- plain LoRAs by SFT: oracles (recon) and baselines --------------------------------------
ChatMaker = Callable[[random.Random], list[Message]]
"""Draws one training chat (ending with the gold assistant turn) from the given random stream."""


def train_lora(
    host: AdapterHost,
    name: str,
    make_chat: ChatMaker,
    modules: Sequence[str],
    rank: int,
    *,
    steps: int,
    lr: float,
    batch: int,
    rng: random.Random,
    seed: int = 0,
    progress: str | None = None,
) -> tuple[LoRAAdapter, dict[str, float]]:
    """A rank-``rank`` LoRA on ``modules`` (paths inside a layer) of every layer, trained by SFT
    (cross-entropy on the assistant turn) on ``batch`` chats from ``make_chat`` per step; starts
    from the base model (PEFT init from ``seed``: B zero). Only the LoRA factors get gradients.

    ``progress``: a tqdm label, for runs long enough to watch; returns the adapter and the last
    step's CE and greedy token accuracy.
    """
    generator = torch.Generator().manual_seed(seed)
    targets = [t for t in host.layout.targets if t.key.module in modules]
    factors = {
        t.key: (
            lora_init_A(rank, t.d_in, generator=generator).to(host.device).requires_grad_(),  # [r, d_in]
            torch.zeros(t.d_out, rank, device=host.device, requires_grad=True),  # [d_out, r]
        )
        for t in targets
    }
    parameters = [factor for pair in factors.values() for factor in pair]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in tqdm(range(steps), desc=progress, unit="step", disable=progress is None):
        chats = [encode_chat(host.tokenizer, make_chat(rng)) for _ in range(batch)]
        ids, attention, answer = pad_chats(chats, host.pad_token_id)  # [b, s] each
        active = ActiveSet((name,), {key: (A.to(host.dtype), B.to(host.dtype)) for key, (A, B) in factors.items()})
        ce, accuracy = answer_ce(forward_logits(host, active, ids, attention, answer))
        optimizer.zero_grad(set_to_none=True)
        ce.backward(inputs=parameters)  # the LoRA factors only, never the base weights
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
    adapter = LoRAAdapter.single(name, {key: LoRAWeights(A.detach(), B.detach()) for key, (A, B) in factors.items()})
    return adapter, {"ce": ce.item(), "token_acc": accuracy.item()}


def train_oracle(
    host: AdapterHost, family: TaskFamily, modules: Sequence[str], rank: int, settings: T2LTrainSettings
) -> tuple[LoRAAdapter, dict[str, float]]:
    """The family's oracle: a LoRA trained by SFT on ``family``'s bare examples alone."""
    return train_lora(
        host,
        family.id,
        lambda rng: student_messages(*family.make_example(rng)),
        modules,
        rank,
        steps=settings.oracle_steps,
        lr=settings.oracle_lr,
        batch=settings.oracle_batch,
        rng=random.Random(f"{settings.seed}-oracle-{family.id}"),
        seed=settings.seed,
    )


def oracle_factors(
    host: AdapterHost,
    families: Sequence[TaskFamily],
    config: T2LConfig,
    settings: T2LTrainSettings,
    store: AdapterStore,
) -> Factors:
    """Every family's oracle LoRA, trained once and kept in ``store``, stacked as generated
    factors are: module -> (A [families, L, r, d_in], B [families, L, d_out, r])."""
    modules = [t.module for t in config.targets]
    adapters = []
    for family in tqdm(families, desc="oracle LoRAs", unit="family"):
        if not store.exists(ORACLE_NAMESPACE, family.id):
            adapter, stats = train_oracle(host, family, modules, config.rank, settings)
            store.put(
                adapter,
                namespace=ORACLE_NAMESPACE,
                kind="skill",
                id=family.id,
                generator="t2l-oracle",
                base_model=host.model_id,
                extra={"family": family.id, "steps": settings.oracle_steps, **stats},
            )
        adapters.append(store.get(ORACLE_NAMESPACE, family.id).to(host.device))
    return stack_adapters(adapters, modules, config.num_layers)


# --- the training loop ------------------------------------------------------------------------
class _DescriptionEmbeddings:
    """Embeddings of the training descriptions, computed once; no-op descriptions (one-offs) are
    encoded as they come."""

    def __init__(self, encoder: TextEncoder, families: Sequence[TaskFamily]) -> None:
        self.encoder = encoder
        known = sorted({d for family in families for d in family.train_descriptions})
        self.table = dict(zip(known, encoder.encode(known)))

    def __call__(self, draws: Sequence[TaskDraw]) -> torch.Tensor:
        fresh = [d.description for d in draws if d.description not in self.table]
        known = self.table | dict(zip(fresh, self.encoder.encode(fresh))) if fresh else self.table
        return torch.stack([known[d.description] for d in draws])  # [b, e]


def train_t2l(
    host: AdapterHost,
    hypernet: TextToLoRA,
    encoder: TextEncoder,
    families: Sequence[TaskFamily],
    settings: T2LTrainSettings,
    out_dir: str | Path,
    *,
    oracle_dir: str | Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TextToLoRA:
    """Train ``hypernet`` in place on ``families``; checkpoints into ``out_dir`` and resumes from it.

    ``oracle_dir`` (recon): where the oracle LoRAs are kept, ``out_dir/oracles`` by default; point
    several runs at one folder to train the oracles once.
    """
    if hypernet.config.encoder != encoder.name:
        raise D2LMemoryError(f"the hypernetwork reads {hypernet.config.encoder!r} embeddings, not {encoder.name!r}")
    require_fit(host.layout, hypernet.config)
    if host.tokenizer is None:
        raise ModelError("training needs the host's tokenizer; pass one to AdapterHost(model, tokenizer)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in host.model.parameters():
        p.requires_grad_(False)
    device = host.device
    hypernet.to(device).train()
    embed = _DescriptionEmbeddings(encoder, families)
    if settings.mode == "recon":
        with AdapterStore(oracle_dir or out_dir / "oracles") as oracle_store:
            oracles = oracle_factors(host, families, hypernet.config, settings, oracle_store)
        oracle_rows = {family.id: row for row, family in enumerate(families)}

        def batch_loss(embeddings: torch.Tensor, draws: list[TaskDraw]) -> tuple[torch.Tensor, dict[str, float]]:
            return recon_loss(hypernet, embeddings, draws, oracles, oracle_rows)
    else:

        def batch_loss(embeddings: torch.Tensor, draws: list[TaskDraw]) -> tuple[torch.Tensor, dict[str, float]]:
            return sft_loss(host, hypernet, embeddings, draws, settings)

    optimizer = torch.optim.AdamW(hypernet.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    checkpoint = out_dir / "checkpoint"
    step, elapsed = _resume(checkpoint, hypernet, optimizer)
    progress = Progress(settings.steps, settings.time_budget_minutes, elapsed_before=elapsed)
    timed = settings.time_budget_minutes is not None
    bar = tqdm(
        total=100 if timed else settings.steps,
        initial=min(100, round(100 * progress(step))) if timed else step,
        desc=f"T2L {settings.mode}",
        unit="%" if timed else "step",
    )
    last_save = time.monotonic()
    while progress(step) < 1:
        rng = random.Random(f"{settings.seed}-{step}")
        draws = draw_tasks(rng, families, settings.tasks_per_step, settings.examples_per_task, settings.noop_share)
        with mixed_precision(device):
            loss, stats = batch_loss(embed(draws).to(device), draws)
        optimizer_step(optimizer, loss, hypernet, settings.lr * lr_factor(step, progress(step), settings.warmup_steps))
        step += 1
        stats["loss"] = loss.item()
        bar.update(min(100, round(100 * progress(step))) - bar.n if timed else 1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in stats.items()} | {"step": step})
        if on_step is not None:
            on_step(step, stats)
        if time.monotonic() - last_save > 60 * settings.checkpoint_minutes:
            _save_checkpoint(checkpoint, hypernet, optimizer, step, progress.elapsed(), settings)
            last_save = time.monotonic()
    _save_checkpoint(checkpoint, hypernet, optimizer, step, progress.elapsed(), settings)
    bar.close()
    return hypernet.eval()


def _save_checkpoint(
    folder: Path,
    hypernet: TextToLoRA,
    optimizer: torch.optim.Optimizer,
    step: int,
    elapsed: float,
    settings: T2LTrainSettings,
) -> None:
    """A loadable hypernetwork (weights + config) plus the shared training state and settings."""
    hypernet.save(folder)
    save_state(folder, hypernet, optimizer, step, elapsed, {"settings": settings.model_dump()})


def _resume(folder: Path, hypernet: TextToLoRA, optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """Load a checkpoint into ``hypernet`` and ``optimizer``; returns (step, seconds trained)."""
    if (folder / CONFIG_NAME).exists():
        saved = T2LConfig.model_validate_json((folder / CONFIG_NAME).read_text())
        if saved != hypernet.config:
            raise D2LMemoryError(
                f"the checkpoint in {folder} is of a different hypernetwork ({saved.model_dump()});"
                " rerun with the same options or choose another output folder"
            )
    return load_state(folder, hypernet, optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("sft", "recon"), default="sft")
    parser.add_argument("--out", type=Path, required=True)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=2000)
    budget.add_argument("--minutes", type=float, default=None, help="stop after this long (the schedule fits itself)")
    parser.add_argument("--head", choices=("L", "M", "S"), default="M")
    parser.add_argument(
        "--base",
        default=str(DEFAULT_MODEL_DIR),
        help="base model: a folder, a .gguf file, a hub id or 'smollm2' (default: the shipped one)",
    )
    parser.add_argument("--encoder", default="minilm", help="'minilm', 'base' or a sentence-transformers folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--targets", default="q_proj,v_proj", help="comma-separated projections to adapt")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=16, help="tasks per step")
    parser.add_argument("--examples", type=int, default=4, help="examples per task (sft)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noop-share", type=float, default=0.2)
    parser.add_argument("--noop-norm-weight", type=float, default=0.05)
    parser.add_argument("--oracle-steps", type=int, default=100)
    parser.add_argument("--oracles", type=Path, default=None, help="oracle LoRA folder (recon; default OUT/oracles)")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this saved hypernetwork, e.g. the shipped one on a continued base (its sizes and"
        " head win over --head/--rank/--latent-dim/--targets; --encoder must be the one it reads)",
    )
    parser.add_argument("--eval-queries", type=int, default=4, help="queries per held-out description (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    host = load_host(args.base, device=args.device)
    encoder = load_encoder(args.encoder, host)
    if args.init is not None:
        hypernet = TextToLoRA.load(args.init)
    else:
        config = T2LConfig.for_model(
            host.layout,
            encoder,
            base_model=host.model_id,
            target_modules=tuple(args.targets.split(",")),
            head=args.head,
            rank=args.rank,
            latent_dim=args.latent_dim,
        )
        hypernet = TextToLoRA(config)
    settings = T2LTrainSettings(
        mode=args.mode,
        steps=args.steps,
        time_budget_minutes=args.minutes,
        tasks_per_step=args.tasks,
        examples_per_task=args.examples,
        lr=args.lr,
        noop_share=args.noop_share,
        noop_norm_weight=args.noop_norm_weight,
        oracle_steps=args.oracle_steps,
        seed=args.seed,
    )
    trained = train_t2l(host, hypernet, encoder, train_families(), settings, args.out, oracle_dir=args.oracles)
    trained.save(args.out / "final")
    print(f"saved {sum(p.numel() for p in trained.parameters()):,} parameters to {args.out / 'final'}")
    if args.eval_queries > 0:
        report = {
            group: evaluate_skills(
                host, trained, encoder, families, queries_per_description=args.eval_queries, seed=args.seed
            )
            for group, families in (("train_families", train_families()), ("heldout_families", heldout_families()))
        }
        (args.out / "eval.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
