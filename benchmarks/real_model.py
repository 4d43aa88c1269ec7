"""Doc-to-LoRA on a real pretrained model reading real documents: SmolLM2-135M-Instruct by default.

    python -m benchmarks.real_model --json runs/real_model.json [--hypernet runs/d2l-smollm2/final] [--seed N]
    python -m benchmarks.real_model --json runs/real_model-smoke.json --smoke   # seconds: a tiny random model

The documents are this machine's own (:mod:`d2l_lab.real_docs`): Debian package records,
installed packages' metadata and pydoc of standard-library functions, from the held-out split
(sources no training document came from); ``--seed`` picks which documents and questions are
asked. Each question is asked on its own, greedily, and scored by normalized answer-contained
(the headline: a chatty model answers in sentences) and exact match, both reported. Methods on
the same questions: closed-book, in-context (document in the prompt) and Doc-to-LoRA (the document
internalized by ``--hypernet``, question alone). Per-document context distillation, far costlier,
runs on the first ``--distill-docs`` documents and is asked every question of each, beside
Doc-to-LoRA on those questions; it trains on those very questions and answers, and its setting
is picked on them, both in its favour.

JSON keys: ``closed_book``, ``in_context``, ``d2l`` (each ``{"contains": .., "exact": ..}``),
``d2l_over_icl`` (answer-contained), ``distill`` (the cheapest distillation setting tried that
answers as well as D2L on the distilled documents' questions, else the best: its ``contains``,
``exact``, ``lr``, ``steps`` and ``seconds_per_document``, with ``questions``, how many were asked,
and ``d2l_same_questions``, D2L's ``contains`` and ``exact`` on them), ``speedup_over_distill``,
``internalize_over_prefill`` (internalizing a document over one plain forward pass of it),
``needle`` (a fact hidden in real text 1x / 4x the chunk length, asked from memory),
``peft_max_abs_logit_diff`` (a memory exported with ``save_peft`` and loaded by PEFT, against the
host), ``train_steps`` / ``train_documents`` of the hypernetwork measured and its ``adapter_scale``
(calibrated on training documents by ``d2l_lab.calibrate_scale``; ``--adapter-scale`` overrides it).
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from benchmarks.report import ROOT, benchmark_parser, machine, write_results
from d2l_lab.distill_baseline import distill_adapter
from d2l_lab.meta_train import DistillSettings
from d2l_lab.real_docs import RealDocument, RealQA, real_documents, split
from d2l_lab.real_scoring import messages, pick, scores
from d2l_lab.training import read_checkpoint_record
from d2l_memory import AdapterHost, save_peft
from d2l_memory.embedded import SMOLLM2_D2L_DIR
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.internalize import Internalizer, Memory, load_document_hypernet
from d2l_memory.models import load_pretrained
from d2l_memory.testing import tiny_model, tiny_tokenizer

DISTILL_SETTINGS = ((1e-2, 3), (1e-2, 5), (1e-2, 10), (3e-3, 10), (1e-2, 30), (3e-3, 30))
"""(learning rate, steps) of context distillation tried, cheapest first."""
DISTILL_CE_WEIGHT = DistillSettings().ce_weight
"""Weight of the answers' cross-entropy beside the KL: meta-training's, so the baseline optimises
what the hypernetwork learned to optimise."""
NEEDLE = "The access code of the {name} server is {code}."
NEEDLE_QUESTION = "What is the access code of the {name} server?"


def parse_args():
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="smollm2", help="a folder, .gguf file, hub id or short name")
    parser.add_argument(
        "--hypernet",
        type=Path,
        help="a Doc-to-LoRA checkpoint trained for --model (default for smollm2: the shipped one)",
    )
    parser.add_argument(
        "--adapter-scale",
        type=float,
        help="multiply every memory's delta by this instead of the checkpoint's calibrated adapter_scale",
    )
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument(
        "--distill-docs", type=int, default=8, help="documents distilled one by one, every question of each asked"
    )
    parser.add_argument("--needles", type=int, default=8, help="needle documents per length")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model and an untrained hypernetwork")
    parser.add_argument(
        "--vllm",
        type=int,
        default=0,
        metavar="N",
        help="also serve the first N questions' memories on a vLLM server of the model (started here) and compare",
    )
    parser.add_argument(
        "--with-runs", nargs="*", default=(), help="JSON of other seeds' runs to show beside this one in the table"
    )
    args = parser.parse_args()
    if args.adapter_scale is not None and args.adapter_scale <= 0:
        parser.error(f"--adapter-scale must be above 0, got {args.adapter_scale}")
    return args


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    if args.smoke:
        host = AdapterHost(tiny_model("llama"), tiny_tokenizer(), model_id="tiny-llama")
        hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, latent_dim=32, num_latents=4, chunk_tokens=64))
        args.questions, args.distill_docs, args.needles = 4, 1, 1
    else:
        host = AdapterHost.from_pretrained(args.model)
        if args.hypernet is None and args.model == "smollm2":
            args.hypernet = SMOLLM2_D2L_DIR
        if args.hypernet is None:
            raise SystemExit("--hypernet is required (a Doc-to-LoRA checkpoint for --model), or --smoke")
        hypernet = load_document_hypernet(args.hypernet)
    if args.adapter_scale is not None:
        if not isinstance(hypernet, DocToLoRA):
            raise SystemExit("--adapter-scale applies to our own Doc-to-LoRA checkpoints")
        hypernet.config = hypernet.config.model_copy(update={"adapter_scale": args.adapter_scale})
    internalizer = Internalizer(host, hypernet)
    held = split(real_documents())[1]
    asked = pick(held, rng, args.questions)

    memories: dict[RealDocument, Memory] = {}
    internalize_seconds, prefill_seconds = [], []
    for doc, _ in tqdm(asked, desc="internalizing held-out documents", disable=args.smoke):
        started = time.perf_counter()
        memory = internalizer.internalize(doc.text, progress=False)
        internalize_seconds.append(time.perf_counter() - started)
        host.add(memory.id, memory.adapter)
        memories[doc] = memory
        ids = host.tokenizer(doc.text, return_tensors="pt").input_ids[:, : hypernet.config.chunk_tokens]
        started = time.perf_counter()
        host.logits(ids)
        prefill_seconds.append(time.perf_counter() - started)

    results: dict[str, Any] = {
        "seed": args.seed,
        "machine": machine(),
        "model": host.model_id,
        "questions": len(asked),
        "adapter_scale": getattr(hypernet.config, "adapter_scale", 1.0),
        "closed_book": scores(host, [(None, None, qa) for _, qa in asked]),
        "in_context": scores(host, [(None, doc.text, qa) for doc, qa in asked]),
        "d2l": scores(host, [([memories[doc].id], None, qa) for doc, qa in asked]),
    }
    results["d2l_over_icl"] = round(results["d2l"]["contains"] / max(results["in_context"]["contains"], 1e-9), 4)
    internalize_s = statistics.median(internalize_seconds)
    results["internalize_over_prefill"] = round(internalize_s / statistics.median(prefill_seconds), 2)
    results["distill"] = distillation(host, [doc for doc, _ in asked[: args.distill_docs]], memories)
    results["speedup_over_distill"] = round(results["distill"]["seconds_per_document"] / internalize_s, 1)
    results["needle"] = needles(host, internalizer, held, rng, args.needles)
    results["peft_max_abs_logit_diff"] = peft_difference(host, args, memories[asked[0][0]], asked[0][0].text)
    results.update(training_record(args.hypernet))
    if args.vllm:
        results["vllm"] = served_agreement(host, [(memories[doc], qa) for doc, qa in asked[: args.vllm]])
    runs = sorted([results, *(json.loads(Path(path).read_text()) for path in args.with_runs)], key=lambda r: r["seed"])
    write_results("real_model", results, table(runs), args.json, markdown=not (args.no_markdown or args.smoke))


def distillation(
    host: AdapterHost, documents: Sequence[RealDocument], memories: dict[RealDocument, Memory]
) -> dict[str, Any]:
    """Context distillation of each of ``documents``, asked every question of each, beside D2L on
    the same questions: the cheapest setting tried that answers as well as D2L, else the best."""
    questions = [(doc, qa) for doc in documents for qa in doc.questions]
    d2l = scores(host, [([memories[doc].id], None, qa) for doc, qa in questions])
    tried = []
    for lr, steps in DISTILL_SETTINGS:
        names, seconds = {}, []
        for i, doc in enumerate(documents):
            teacher, student = qa_chat(doc, reading=True), qa_chat(doc, reading=False)
            adapter, stats = distill_adapter(
                host, teacher, student, steps=steps, lr=lr, ce_weight=DISTILL_CE_WEIGHT, seed=i
            )
            names[doc] = f"distill-{lr:g}-{steps}-{i}"
            host.add(names[doc], adapter)
            seconds.append(stats["seconds"])
        distilled = scores(host, [([names[doc]], None, qa) for doc, qa in questions])
        tried.append({"lr": lr, "steps": steps, **distilled, "seconds_per_document": statistics.mean(seconds)})
        for name in names.values():
            host.remove(name)
        if distilled["contains"] >= d2l["contains"]:
            break
    as_good = [t for t in tried if t["contains"] >= d2l["contains"]]
    chosen = as_good[0] if as_good else max(tried, key=lambda t: t["contains"])
    return chosen | {"questions": len(questions), "d2l_same_questions": d2l}


def qa_chat(doc: RealDocument, *, reading: bool) -> list[dict[str, str]]:
    """Every question of a document with its gold answer, the document in the first turn when
    ``reading`` (the teacher) and nowhere otherwise (the student), as context distillation trains on."""
    chat: list[dict[str, str]] = []
    for turn, qa in enumerate(doc.questions):
        chat += [*messages(doc.text if reading and turn == 0 else None, qa.question)]
        chat.append({"role": "assistant", "content": qa.answer})
    return chat


def needles(
    host: AdapterHost, internalizer: Internalizer, held: Sequence[RealDocument], rng: random.Random, count: int
) -> dict[str, float]:
    """Answer-contained from memory for a made-up fact hidden at a random depth in real text of
    1x and 4x the chunk length."""
    chunk = internalizer.chunk_tokens
    results = {}
    for multiple in (1, 4):
        items = []
        for _ in range(count):
            name, code = rng.choice(["Orion", "Vega", "Lyra", "Draco", "Cygnus"]), str(rng.randint(1000, 9999))
            text, budget = [], chunk * multiple - 40
            while budget > 0:
                piece = rng.choice(held).text
                text.append(piece)
                budget -= host.count_tokens(piece)
            text.insert(rng.randint(0, len(text)), NEEDLE.format(name=name, code=code))
            memory = internalizer.internalize("\n\n".join(text), progress=False)
            host.add(memory.id, memory.adapter)
            items.append(([memory.id], None, RealQA(NEEDLE_QUESTION.format(name=name), code, "needle")))
        results[f"{multiple}x"] = scores(host, items)["contains"]
    return results


def peft_difference(host: AdapterHost, args, memory: Memory, text: str) -> float:
    """Largest logit difference between the host with a memory on and PEFT with it exported."""
    adapter = memory.adapter.to(dtype=torch.float32)
    host.add("exported", adapter)
    if args.smoke:
        fresh = tiny_model("llama")
        fresh.load_state_dict(host.model.state_dict())
    else:
        fresh = load_pretrained(args.model, dtype=torch.float32)[0]
    with tempfile.TemporaryDirectory() as folder:
        save_peft(adapter, folder, base_model=host.model_id)
        peft_model = PeftModel.from_pretrained(fresh, folder).eval()
        ids = host.tokenizer(text, return_tensors="pt").input_ids[:, :128]
        with torch.inference_mode():
            theirs = peft_model(input_ids=ids).logits
        ours = host.logits(ids, adapters=["exported"])
    return float(f"{(ours - theirs).abs().max().item():.3g}")


def served_agreement(host: AdapterHost, asked: Sequence[tuple[Memory, RealQA]]) -> dict[str, Any]:
    """The same memories served by a real vLLM server on a saved copy of the model: the share of
    greedy replies equal to the in-process host's, question by question."""
    from d2l_memory import VLLMHost, VLLMServer, vllm_environment

    with tempfile.TemporaryDirectory() as folder:
        host.model.save_pretrained(folder)
        host.tokenizer.save_pretrained(folder)
        python = vllm_environment(ROOT / ".venv-vllm")
        with (
            VLLMServer(
                folder, python=python, max_lora_rank=64, max_loras=4, log_path=Path(folder) / "vllm.log"
            ) as server,
            VLLMHost(
                AdapterHost.from_pretrained(folder).model, host.tokenizer, url=server.url, max_lora_rank=64
            ) as remote,
        ):
            equal = []
            for memory, qa in tqdm(asked, desc="vLLM against in process"):
                remote.add(memory.id, memory.adapter)
                chat = messages(None, qa.question)
                ours = host.generate(chat, adapters=[memory.id], max_new_tokens=24).text
                equal.append(remote.generate(chat, adapters=[memory.id], max_new_tokens=24).text == ours)
                remote.remove(memory.id)
    return {"questions": len(asked), "agreement": round(statistics.mean(equal), 4)}


def training_record(hypernet: Path | None) -> dict[str, Any]:
    """Steps and documents the hypernetwork was trained on, from the training record in its folder."""
    record = None if hypernet is None else read_checkpoint_record(hypernet)
    steps = documents = 0
    while record is not None:  # a continued run's record holds the one it started from under "init"
        steps += record["step"]
        documents += record["step"] * record["batch_size"]
        record = record.get("init")
    return {"train_steps": steps, "train_documents": documents}


def table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per seed (held-out questions and documents it picks) and the mean over seeds."""
    first = runs[0]

    def accuracy(key: str) -> str:
        return " / ".join(f"{run[key]['contains']:.3f}" for run in runs) + f" (mean {_mean(runs, key):.3f})"

    def figure(key: str, fmt: str) -> str:
        return " / ".join(format(run[key], fmt) for run in runs)

    distill = ", ".join(f"lr {run['distill']['lr']:g} x {run['distill']['steps']}" for run in runs)
    seeds = " / ".join(str(run["seed"]) for run in runs)
    return "\n".join(
        [
            "## A real model: SmolLM2-135M-Instruct on real documents",
            "",
            (
                f"`python -m benchmarks.real_model --seed N` for N = {seeds} on {first['machine']},"
                f" {first['questions']} held-out questions each, hypernetwork trained {first['train_steps']} steps"
                f" ({first['train_documents']} documents), memories scaled by {figure_scale(runs)}."
                " Answer contained, seed by seed:"
            ),
            "",
            "| method | answer contained | exact match |",
            "| --- | --- | --- |",
            f"| closed-book | {accuracy('closed_book')} | {figure_exact(runs, 'closed_book')} |",
            f"| in context | {accuracy('in_context')} | {figure_exact(runs, 'in_context')} |",
            f"| Doc-to-LoRA | {accuracy('d2l')} | {figure_exact(runs, 'd2l')} |",
            "",
            (
                f"- context distillation ({distill}) against D2L, answer contained on every question of the"
                f" documents distilled ({figure_count(runs)} questions), seed by seed: "
                + "; ".join(
                    f"{run['distill']['contains']:.2f} against {run['distill']['d2l_same_questions']['contains']:.2f}"
                    for run in runs
                )
                + " (distillation trains on those questions' answers)"
            ),
            f"- D2L over in-context: {figure('d2l_over_icl', '.2f')} (target >= 0.8)",
            f"- internalize vs distillation, times faster: {figure('speedup_over_distill', '.0f')} (target >= 100)",
            f"- internalize over a plain prefill: {figure('internalize_over_prefill', '.2f')} (target <= 1.5)",
            "- needle from memory, 1x / 4x the chunk: "
            + ", ".join(f"{run['needle']['1x']:.2f} / {run['needle']['4x']:.2f}" for run in runs),
            (
                f"- PEFT against the host, largest logit difference: {figure('peft_max_abs_logit_diff', '.1e')}"
                " (target <= 1e-4)"
            ),
            *(
                f"- served on vLLM (seed {run['seed']}): {run['vllm']['agreement']:.2f} of {run['vllm']['questions']}"
                " greedy replies equal to the in-process host's"
                for run in runs
                if "vllm" in run
            ),
        ]
    )


def figure_scale(runs: Sequence[dict[str, Any]]) -> str:
    scales = [f"{run.get('adapter_scale', 1.0):g}" for run in runs]
    return scales[0] if len(set(scales)) == 1 else " / ".join(scales) + " (seed by seed)"


def figure_count(runs: Sequence[dict[str, Any]]) -> str:
    return ", ".join(str(run["distill"]["questions"]) for run in runs)


def figure_exact(runs: Sequence[dict[str, Any]], key: str) -> str:
    return " / ".join(f"{run[key]['exact']:.3f}" for run in runs)


def _mean(runs: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.mean(run[key]["contains"] for run in runs)


if __name__ == "__main__":
    main()
