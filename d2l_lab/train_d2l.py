"""Meta-train the Doc-to-LoRA hypernetwork for the embedded default model.

    python -m d2l_lab.train_d2l --base DIR --out runs/d2l --device cuda --minutes 3

The training documents are the kinds an agent internalizes: prose fact documents, tool outputs
(JSON, logs, tables) and needles in filler, each with every question about it. The teacher is
the base model reading the document in its prompt; the student sees only the questions, and
(the interference term) the teacher's prompt again with other documents' memories on. ``--init``
continues from a saved hypernetwork, e.g. the shipped one.
The finished hypernetwork goes to ``OUT/final/`` (fp16 safetensors + JSON config), with its
training record (``train_state.json``: steps, settings) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from d2l_lab.formats import qa_messages
from d2l_lab.meta_train import DistillExample, DistillSettings, train_hypernet
from d2l_lab.real_docs import RealDocument, real_documents, split
from d2l_lab.self_qa import read_self_qa, with_self_qa
from d2l_lab.training import RECORD_NAME, read_checkpoint_record
from d2l_lab.world import (
    Relation,
    make_fact_document,
    make_json_document,
    make_log_document,
    make_needle_document,
    make_table_document,
    relations_named,
)
from d2l_memory.embedded import DEFAULT_MODEL_DIR, load_host
from d2l_memory.hypernet import DocToLoRA, HypernetConfig

MAX_FACTS = 8
MAX_NEEDLE_WORDS = 300  # the teacher must see the whole document inside its 512-token window


def world_example(rng: random.Random, focus: Sequence[Relation] = (), focus_share: float = 0.0) -> DistillExample:
    """One training document with all its questions, in random order.

    With probability ``focus_share`` it is a fact document over the ``focus`` relations only:
    a way to give more of training to the facts memories hold worst (numbers, for the shipped
    checkpoint; see ``benchmarks.d2l``'s fact QA by relation).
    """
    if focus and rng.random() < focus_share:
        doc = make_fact_document(rng, rng.randint(1, MAX_FACTS), relations=focus)
    elif (kind := rng.random()) < 0.55:
        doc = make_fact_document(rng, rng.randint(1, MAX_FACTS))
    elif kind < 0.8:
        make = rng.choice([make_json_document, make_log_document, make_table_document])
        doc = make(rng, rng.randint(1, 6))
    else:
        doc = make_needle_document(rng, rng.randint(20, MAX_NEEDLE_WORDS), rng.random())
    questions = rng.sample(list(doc.questions), len(doc.questions))
    return DistillExample(doc.text, questions)


def training_example(
    rng: random.Random,
    focus: Sequence[Relation] = (),
    focus_share: float = 0.0,
    real: Sequence[RealDocument] = (),
    real_share: float = 0.0,
) -> DistillExample:
    """A real document (with probability ``real_share``) or a world one, with all its questions."""
    if real and rng.random() < real_share:
        doc = rng.choice(real)
        return DistillExample(doc.text, rng.sample(list(doc.questions), len(doc.questions)))
    return world_example(rng, focus, focus_share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base",
        default=str(DEFAULT_MODEL_DIR),
        help="base model: a folder, a .gguf file, a hub id or 'smollm2' (default: the shipped one)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long (the schedule fits itself)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--latent-dim", type=int, default=192)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--max-chunks", type=int, default=4)
    parser.add_argument(
        "--context-layer",
        type=int,
        default=None,
        help="read only the state entering this decoder layer (e.g. a quarter of the depth: reading a document then"
        " runs that many layers); default: the input of every layer",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="data processes (default: cpu count - 2 on cuda, 0 on cpu)"
    )
    parser.add_argument(
        "--interference-weight",
        type=float,
        default=1.0,
        help="weight of the term that keeps in-context reading intact with unrelated memories active",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this saved hypernetwork (its sizes win over --rank/--latent-dim/--blocks; it must fit --base)",
    )
    parser.add_argument(
        "--focus-relations",
        default="",
        help="comma-separated relations (e.g. age,door_code) that get documents of their own",
    )
    parser.add_argument("--focus-share", type=float, default=0.0, help="share of documents over --focus-relations")
    parser.add_argument(
        "--real-share",
        type=float,
        default=0.0,
        help="share of documents from this machine's real ones (package records, metadata, pydoc; training split)",
    )
    parser.add_argument(
        "--self-qa",
        type=Path,
        default=None,
        help="a file of questions the base model wrote about the real documents (python -m d2l_lab.self_qa)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        focus = relations_named(args.focus_relations)
    except ValueError as error:
        parser.error(str(error))
    if args.self_qa is not None and args.real_share <= 0:
        parser.error("--self-qa adds questions to the real documents: it needs --real-share above 0")
    if args.init is not None and args.context_layer is not None:
        parser.error("--context-layer sizes a new hypernetwork: with --init the saved one's setting is used")
    real = split(real_documents())[0] if args.real_share > 0 else []
    if args.self_qa is not None:
        real = list(with_self_qa(real, read_self_qa(args.self_qa)))
    examples = partial(
        training_example, focus=focus, focus_share=args.focus_share, real=real, real_share=args.real_share
    )

    torch.manual_seed(args.seed)
    host = load_host(args.base, device=args.device)
    config = HypernetConfig.for_model(
        host.layout,
        base_model=host.model_id,
        rank=args.rank,
        latent_dim=args.latent_dim,
        num_blocks=args.blocks,
        num_heads=8,
        num_latents=32,
        chunk_tokens=512,
        context_layer=args.context_layer,
    )
    hypernet = DocToLoRA.load(args.init) if args.init is not None else DocToLoRA(config)
    settings = DistillSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_chunks=args.max_chunks,
        interference_weight=args.interference_weight,
        time_budget_minutes=args.minutes,
        data_workers=args.workers
        if args.workers is not None
        else (max(0, (os.cpu_count() or 2) - 2) if args.device == "cuda" else 0),
        seed=args.seed,
    )

    def log(step: int, stats: dict[str, float]) -> None:
        if step % 100 == 0:
            tqdm.write(f"step {step}: " + ", ".join(f"{name} {value:.3f}" for name, value in stats.items()))

    trained = train_hypernet(host, hypernet, examples, qa_messages, settings, args.out, on_step=log)
    trained.save(args.out / "final")
    # the checkpoint carries its training record (steps, settings) wherever it is copied to
    (args.out / "final" / RECORD_NAME).write_text(json.dumps(final_record(args.out, args.init), indent=2))
    print(f"saved {sum(p.numel() for p in trained.parameters()):,} parameters to {args.out / 'final'}")


def final_record(out: Path, init: Path | None) -> dict[str, Any]:
    """The run's training record (steps, settings); a run continued from ``init`` holds that
    checkpoint's record under ``"init"``, so its totals add up."""
    record = json.loads((out / RECORD_NAME).read_text())  # the run just wrote it
    if init is not None and (started := read_checkpoint_record(init)) is not None:
        record["init"] = started
    return record


if __name__ == "__main__":
    main()
