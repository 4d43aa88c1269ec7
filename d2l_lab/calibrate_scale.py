"""Pick a Doc-to-LoRA checkpoint's adapter scale after training, on training documents.

    python -m d2l_lab.calibrate_scale --base smollm2 --hypernet runs/d2l-smollm2/final

A hypernetwork trained briefly writes deltas a little too faint: the same memories, multiplied
by a constant, answer more questions. This tries each of ``--scales`` on the same memories
(internalized once) and questions from the *training* split of the real corpus, never the
held-out split the benchmark asks, and keeps the best answer-contained, a tie going to the scale
nearest 1. It writes that scale into the checkpoint's config (``adapter_scale``, which
``DocToLoRA.to_adapters`` applies) and every scale's figures beside it in ``calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from d2l_lab.real_docs import RealDocument, real_documents, split
from d2l_lab.real_scoring import pick, scores
from d2l_memory import AdapterHost
from d2l_memory.embedded import load_host
from d2l_memory.hypernet import CONFIG_NAME, DocToLoRA
from d2l_memory.internalize import Internalizer

CALIBRATION_NAME = "calibration.json"
DEFAULT_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0)


def calibrate(
    host: AdapterHost,
    hypernet: DocToLoRA,
    documents: Sequence[RealDocument],
    scales: Sequence[float],
    *,
    questions: int,
    seeds: Sequence[int],
) -> dict[float, dict[str, float]]:
    """Answer-contained and exact match at each of ``scales`` (absolute: a memory made at the
    checkpoint's own scale s is multiplied by scale / s), over ``questions`` picked per seed from
    ``documents``, one memory per document, asked with that memory alone on."""
    internalizer = Internalizer(host, hypernet)
    asked = {seed: pick(documents, random.Random(seed), questions) for seed in seeds}
    distinct = list(dict.fromkeys(doc for picked in asked.values() for doc, _ in picked))  # seeds share documents
    memories = {doc: internalizer.internalize(doc.text, progress=False) for doc in tqdm(distinct, desc="internalizing")}
    per_seed: dict[float, list[dict[str, float]]] = {scale: [] for scale in scales}
    for scale in tqdm(scales, desc="scoring scales"):
        factor = scale / hypernet.config.adapter_scale
        names = {doc: f"{memory.id}@{scale:g}" for doc, memory in memories.items()}
        for doc, memory in memories.items():
            host.add(names[doc], memory.adapter.scaled(factor))
        for picked in asked.values():
            per_seed[scale].append(scores(host, [([names[doc]], None, qa) for doc, qa in picked]))
        for name in names.values():
            host.remove(name)
    return {
        scale: {key: round(statistics.mean(run[key] for run in runs), 4) for key in ("contains", "exact")}
        for scale, runs in per_seed.items()
    }


def best_scale(figures: dict[float, dict[str, float]]) -> float:
    """The scale with the highest answer-contained; a tie goes to the one nearest 1."""
    return max(figures, key=lambda scale: (figures[scale]["contains"], -abs(math.log(scale))))


def write_scale(folder: Path, hypernet: DocToLoRA, scale: float, record: dict) -> None:
    """Set the checkpoint's ``adapter_scale`` (its weights are untouched) and keep the figures beside it."""
    config = hypernet.config.model_copy(update={"adapter_scale": scale})
    (folder / CONFIG_NAME).write_text(config.model_dump_json(indent=2))
    (folder / CALIBRATION_NAME).write_text(json.dumps(record, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the base model: a folder, .gguf file, hub id or short name")
    parser.add_argument("--hypernet", type=Path, required=True, help="the Doc-to-LoRA checkpoint folder to calibrate")
    parser.add_argument("--scales", type=float, nargs="+", default=DEFAULT_SCALES)
    parser.add_argument("--questions", type=int, default=200, help="questions per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=(0, 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, leave the checkpoint as it is")
    args = parser.parse_args()
    if any(scale <= 0 for scale in args.scales):
        parser.error("--scales must all be above 0")

    torch.manual_seed(0)
    host = load_host(args.base, device=args.device)
    hypernet = DocToLoRA.load(args.hypernet, device=args.device)
    training = split(real_documents())[0]
    figures = calibrate(host, hypernet, training, args.scales, questions=args.questions, seeds=args.seeds)
    chosen = best_scale(figures)
    for scale, figure in figures.items():
        mark = "  <- chosen" if scale == chosen else ""
        print(f"scale {scale:g}: answer contained {figure['contains']:.3f}, exact {figure['exact']:.3f}{mark}")
    if not args.dry_run:
        record = {
            "adapter_scale": chosen,
            "documents": "training split of the real corpus",
            "questions_per_seed": args.questions,
            "seeds": list(args.seeds),
            "scales": {f"{scale:g}": figure for scale, figure in figures.items()},
        }
        write_scale(args.hypernet, hypernet, chosen, record)
        print(f"wrote adapter_scale {chosen:g} to {args.hypernet / CONFIG_NAME}")


if __name__ == "__main__":
    main()
