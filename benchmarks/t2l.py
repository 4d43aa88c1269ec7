"""Text-to-LoRA against prompting, a multi-task LoRA and oracle LoRAs, on descriptions and task families it never saw.

    python -m benchmarks.t2l --json runs/t2l.json [--seed N] [--queries N]       # the shipped checkpoint
    python -m benchmarks.t2l --json runs/t2l.json --compare [--runs DIR]       # and six trained variants

By default it measures the shipped checkpoint against the references that need no training (the
bare query, the description and 3 examples in the prompt): nothing needs training first.
``--compare`` adds the six variants trained under ``--runs``, a multi-task LoRA and per-family
oracle LoRAs (the two baselines are trained there on first use and kept; the variants must be
trained first, with the commands the run prints for any that is missing).

Two splits, each description asked ``--queries`` fresh bare queries of its family
(:func:`d2l_lab.t2l_evaluate.heldout_queries`, as ``evaluate_skills`` draws them), every method on
the same queries, greedy decoding, exact match:

* ``heldout_descriptions``: the held-out descriptions of the *training* families;
* ``heldout_tasks``: every description (20 each) of the held-out *families*: no description or
  example of theirs was ever trained on, so all are held out, and 4x the queries of their 5
  "held-out" wordings resolve the low accuracies this split has.

Methods:

* ``base``: the bare query, no adapter;
* ``description_in_prompt``: the description, then the query (``task_messages(description, (), query)``);
* ``fewshot3_in_prompt``: the description, 3 examples of the family, then the query. The
  description is included, as in ``benchmarks.base_model``'s 3-shot figures, so this is the
  strongest in-context reference (description and demonstrations);
* ``multitask_lora`` (``--compare``): one rank-8 LoRA on the T2L targets (q_proj, v_proj), trained
  by SFT on every training family's examples with a *training* description in the prompt
  (:func:`d2l_lab.train_t2l.train_lora`), evaluated with the held-out description in the prompt;
  trained once and kept in ``RUNS/multitask`` (an AdapterStore);
* ``oracle_lora`` (``--compare``; ``heldout_descriptions`` only, held-out families have none): the
  family's own oracle LoRA from ``RUNS/oracles`` on the bare query (trained there if missing);
* ``t2l_shipped``: the shipped hypernetwork (:data:`t2l_skills.DEFAULT_CHECKPOINT_DIR`) on the bare
  query, with the skill generated from the description;
* ``t2l_<L|M|S>_<recon|sft>`` (``--compare``): the hypernetwork in ``RUNS/<head>_<mode>/final``, the
  same way. A missing checkpoint stops the run with the command that trains it (tens of minutes on
  a CPU each: not something a benchmark should start).

Also:

* ``random_description``: the best T2L-SFT variant (by ``heldout_descriptions`` accuracy; the shipped
  checkpoint without ``--compare``) given a random string of the description's length (random
  letters, or a salad of words from every task description) instead of each held-out description
  of the training families, scored against the true gold outputs, next to its accuracy with the
  real descriptions;
* ``create_ms``: median milliseconds for ``SkillLibrary.create_skill`` (encode + hypernetwork +
  making the adapter resident; model loading excluded) over 30 distinct uncached descriptions,
  after a warm-up, for the best T2L variant (every variant and the shipped checkpoint are in
  ``create_ms_by_variant``);
* ``flops_vs_fewshot3``: the steady-state per-query FLOP ratio of T2L (base model forward on the
  bare prompt with the skill active, the skill created once) over 3-shot prompting (forward on the
  3-shot prompt), counted with ``torch.utils.flop_counter.FlopCounterMode`` on a sample of queries.
  Greedy generation is approximated by the prompt forward (the answer's few decoding steps cost
  about the same under both); ``flops.with_answer`` repeats the count with the gold answer
  appended, which is what decoding it adds. ``flops`` also holds the one-off creation FLOPs
  (encoder + hypernetwork) and the break-even number of queries per skill after which T2L costs
  less in total.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import string
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from benchmarks.report import Headline, benchmark_parser, machine, median_ms, write_results
from d2l_lab.chat import encode_chat
from d2l_lab.formats import Message, task_messages
from d2l_lab.t2l_evaluate import (
    HeldoutQueries,
    activate_rows,
    answers_with,
    heldout_queries,
)
from d2l_lab.train_t2l import (
    ChatMaker,
    T2LTrainSettings,
    oracle_factors,
    train_lora,
)
from d2l_lab.world import TaskFamily, heldout_families, train_families
from d2l_lab.world.tasks import TASK_FAMILIES
from d2l_memory.adapter import LoRAAdapter
from d2l_memory.embedded import load_host
from d2l_memory.host import AdapterHost
from d2l_memory.routing import TextEncoder
from d2l_memory.store import AdapterStore
from t2l_skills import (
    DEFAULT_CHECKPOINT_DIR,
    SkillLibrary,
    T2LConfig,
    TextToLoRA,
    load_encoder,
)
from t2l_skills.hypernet import Factors, stack_adapters

EVAL_SEED_OFFSET = 1_000_000
"""As in ``benchmarks.base_model``: evaluation streams training never draws from."""
HEADS = ("L", "M", "S")
MODES = ("recon", "sft")
VARIANTS = tuple(f"{head}_{mode}" for mode in MODES for head in HEADS)
TRAIN_COMMANDS = {
    "recon": "python -m d2l_lab.train_t2l --mode recon --head {head} --steps 1500 --oracles {runs}/oracles"
    " --out {runs}/{head}_recon --eval-queries 0",
    "sft": "python -m d2l_lab.train_t2l --mode sft --head {head} --steps 556 --out {runs}/{head}_sft --eval-queries 0",
}
"""The settings the compared checkpoints were trained with (their checkpoint/train_state.json)."""
SHIPPED = "t2l_shipped"
"""The shipped checkpoint's name among the methods."""
DEFAULT_QUERIES = 8
SHOTS = 3
MULTITASK_NAMESPACE = ("multitask",)
MULTITASK_STEPS = 300
MULTITASK_BATCH = 32
MULTITASK_LR = 3e-3
"""The oracles' SFT recipe (T2LTrainSettings' oracle_lr and oracle_batch), run 3x as long: 9,600
examples over 28 families, each with a training description in the prompt."""
CREATE_WARMUP = 3
FLOP_QUERIES = 32
RANDOM_GAP = 0.10
"""'Clearly worse': random strings score at least 10 points below the real descriptions."""


def parse_args() -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="queries per held-out description")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also the six trained variants, a multi-task LoRA and the oracle LoRAs, from --runs",
    )
    parser.add_argument(
        "--runs", type=Path, default=Path("runs/t2l"), help="with --compare: T2L variants, oracles, multi-task LoRA"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="with --compare: comma-separated T2L variants (development; default all six)",
    )
    parser.add_argument("--multitask-steps", type=int, default=MULTITASK_STEPS)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args()


# --- what is compared -------------------------------------------------------------------------
def training_steps(run: Path) -> int | None:
    """How many steps the variant in ``run`` was trained for (None without its training state)."""
    state = run / "checkpoint" / "train_state.json"
    return json.loads(state.read_text())["step"] if state.exists() else None


def load_variants(runs: Path, variants: Sequence[str], device: torch.device) -> dict[str, TextToLoRA]:
    """Every requested T2L checkpoint; a missing one stops the run with the command that trains it."""
    missing = [v for v in variants if not (runs / v / "final").is_dir()]
    if missing:
        commands = [TRAIN_COMMANDS[v.split("_")[1]].format(head=v.split("_")[0], runs=runs) for v in missing]
        raise SystemExit(
            f"missing T2L checkpoints {missing} under {runs}; train them with\n  "
            + "\n  ".join(commands)
            + "\n(or leave them out with --variants while developing)"
        )
    return {f"t2l_{v}": TextToLoRA.load(runs / v / "final", device=device) for v in variants}


def multitask_chat(families: Sequence[TaskFamily]) -> ChatMaker:
    """A training chat of the multi-task LoRA: a random family's example under one of its
    *training* descriptions (the held-out ones are kept for the evaluation)."""

    def make(rng: random.Random) -> list[Message]:
        family = rng.choice(families)
        query, output = family.make_example(rng)
        return task_messages(rng.choice(family.train_descriptions), (), query, output)

    return make


def multitask_lora(
    host: AdapterHost, store: AdapterStore, config: T2LConfig, steps: int, seed: int
) -> tuple[LoRAAdapter, dict[str, Any]]:
    """The multi-task baseline, trained once per (rank, steps, seed) and kept in ``store``;
    returns it with how it was trained (and whether this run trained it)."""
    adapter_id = f"multitask-r{config.rank}-{steps}x{MULTITASK_BATCH}-seed{seed}"
    info: dict[str, Any] = {"id": adapter_id, "steps": steps, "batch": MULTITASK_BATCH, "lr": MULTITASK_LR}
    if not store.exists(MULTITASK_NAMESPACE, adapter_id):
        started = time.perf_counter()
        adapter, stats = train_lora(
            host,
            adapter_id,
            multitask_chat(train_families()),
            [t.module for t in config.targets],
            config.rank,
            steps=steps,
            lr=MULTITASK_LR,
            batch=MULTITASK_BATCH,
            rng=random.Random(f"{seed}-multitask"),
            seed=seed,
            progress="multi-task LoRA",
        )
        extra = {**stats, "steps": steps, "batch": MULTITASK_BATCH, "lr": MULTITASK_LR}
        extra["train_seconds"] = round(time.perf_counter() - started, 1)
        store.put(
            adapter,
            namespace=MULTITASK_NAMESPACE,
            kind="skill",
            id=adapter_id,
            generator="sft-multitask",
            base_model=host.model_id,
            extra=extra,
        )
        info["trained_now"] = True
    else:
        info["trained_now"] = False
    record = store.record(MULTITASK_NAMESPACE, adapter_id)
    info |= {k: record.extra[k] for k in ("ce", "token_acc", "train_seconds")}
    return store.get(MULTITASK_NAMESPACE, adapter_id).to(host.device), info


def fewshot_chats(probe: HeldoutQueries, rng: random.Random) -> list[list[Message]]:
    """Each query under its description with ``SHOTS`` fresh examples of its family."""
    chats = []
    for owner, query in zip(probe.owners, probe.queries):
        family = probe.families[owner]
        examples = [family.make_example(rng) for _ in range(SHOTS)]
        chats.append(task_messages(probe.descriptions[owner], examples, query))
    return chats


def random_strings(rng: random.Random, like: Sequence[str]) -> tuple[list[str], list[str]]:
    """One random string per description, as many words long, and its kind: random letters
    (even rows) or a salad of words from every task description (odd rows)."""
    vocabulary = sorted(
        {w.strip(string.punctuation).lower() for f in TASK_FAMILIES for d in f.descriptions for w in d.split()}
    )
    vocabulary = [w for w in vocabulary if w]
    texts, kinds = [], []
    for index, description in enumerate(like):
        words = len(description.split())
        if index % 2 == 0:
            texts.append(
                " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(words))
            )
            kinds.append("letters")
        else:
            texts.append(" ".join(rng.choices(vocabulary, k=words)))
            kinds.append("words")
    return texts, kinds


@torch.no_grad()
def skills(hypernet: TextToLoRA, embeddings: torch.Tensor) -> Factors:
    """One skill per description embedding [n, e]: module -> (A [n, L, r, d_in], B [n, L, d_out, r])."""
    return hypernet(embeddings.to(next(hypernet.parameters()).device))


def score_split(
    host: AdapterHost,
    probe: HeldoutQueries,
    embeddings: torch.Tensor,
    fewshot: list[list[Message]],
    hypernets: Mapping[str, TextToLoRA],
    multitask: Factors | None,
    oracles: tuple[Factors, Mapping[str, int]] | None,
) -> dict[str, list[bool]]:
    """Whether each method answered each query of ``probe`` exactly (method -> [queries]); the
    multi-task and oracle LoRAs only where given."""
    bare, prompted = probe.bare(), probe.prompted()
    runs: dict[str, Callable[[], list[str]]] = {
        "base": lambda: answers_with(host, bare),
        "description_in_prompt": lambda: answers_with(host, prompted),
        "fewshot3_in_prompt": lambda: answers_with(host, fewshot),
    }
    if multitask is not None:
        runs["multitask_lora"] = lambda: answers_with(host, prompted, multitask)
    if oracles is not None:
        factors, rows = oracles
        owners = [rows[probe.families[owner].id] for owner in probe.owners]
        runs["oracle_lora"] = lambda: answers_with(host, bare, factors, owners)
    for name, hypernet in hypernets.items():
        runs[name] = lambda hypernet=hypernet: answers_with(host, bare, skills(hypernet, embeddings), probe.owners)
    correct = {}
    for name, run in tqdm(runs.items(), desc="methods", unit="method"):
        correct[name] = [answer == gold for answer, gold in zip(run(), probe.gold)]
    return correct


def mean(matches: Sequence[bool]) -> float:
    return sum(matches) / max(1, len(matches))


def by_family(probe: HeldoutQueries, matches: Sequence[bool]) -> dict[str, float]:
    """Accuracy per family of the queries in ``probe``."""
    groups: dict[str, list[bool]] = {}
    for owner, match in zip(probe.owners, matches):
        groups.setdefault(probe.families[owner].id, []).append(match)
    return {family: mean(group) for family, group in groups.items()}


# --- costs ------------------------------------------------------------------------------------
def create_ms(
    host: AdapterHost, hypernet: TextToLoRA, encoder: TextEncoder, warmup: Sequence[str], timed: Sequence[str]
) -> float:
    """Median ms of ``SkillLibrary.create_skill`` over distinct uncached descriptions (a fresh
    library, no store: every call encodes and generates); the skills are removed afterwards."""
    library = SkillLibrary(host, hypernet, encoder)
    for description in warmup:
        library.create_skill(description)
    descriptions = iter(timed)
    median = median_ms(lambda: library.create_skill(next(descriptions)), len(timed))
    for description in [*warmup, *timed]:
        host.remove(library.skill_id(description))
    return median


def count_flops(function: Callable[..., object], *args: object) -> int:
    """FLOPs of ``function(*args)`` as FlopCounterMode counts them (matmuls and attention)."""
    with FlopCounterMode(display=False) as counter:
        function(*args)
    return counter.get_total_flops()


@torch.no_grad()
def flop_costs(
    host: AdapterHost,
    hypernet: TextToLoRA,
    encoder: TextEncoder,
    probe: HeldoutQueries,
    fewshot: list[list[Message]],
    sample: Sequence[int],
) -> dict[str, Any]:
    """Mean FLOPs per query (batch of one, so no padding) of T2L and of 3-shot prompting over the
    queries ``sample``, with and without the gold answer appended, and of creating one skill."""
    tokenizer = host.tokenizer
    assert tokenizer is not None
    device = next(hypernet.parameters()).device

    def prompt_ids(chat: list[Message], answer: str | None) -> torch.Tensor:
        if answer is None:
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        else:
            ids = encode_chat(tokenizer, [*chat, {"role": "assistant", "content": answer}])[0]
        return torch.tensor([ids], device=host.device)  # [1, s]

    bare = probe.bare()
    totals = dict.fromkeys(("t2l", "fewshot3", "t2l_with_answer", "fewshot3_with_answer", "encoder", "hypernet"), 0)
    for query in tqdm(sample, desc="FLOPs", unit="query"):
        description, gold = probe.descriptions[probe.owners[query]], probe.gold[query]
        embedding = encoder.encode([description]).to(device)  # [1, e]
        totals["encoder"] += count_flops(encoder.encode, [description])
        totals["hypernet"] += count_flops(hypernet, embedding)
        with activate_rows(hypernet(embedding), [0], host.dtype)([0]):  # the skill, made once
            totals["t2l"] += count_flops(host.model, prompt_ids(bare[query], None))
            totals["t2l_with_answer"] += count_flops(host.model, prompt_ids(bare[query], gold))
        totals["fewshot3"] += count_flops(host.model, prompt_ids(fewshot[query], None))
        totals["fewshot3_with_answer"] += count_flops(host.model, prompt_ids(fewshot[query], gold))
    per = {key: value / len(sample) for key, value in totals.items()}
    creation = per["encoder"] + per["hypernet"]

    def break_even(t2l: float, fewshot3: float) -> int | None:
        """Queries per skill from which create + n * t2l < n * fewshot3 (None: never)."""
        return math.floor(creation / (fewshot3 - t2l)) + 1 if fewshot3 > t2l else None

    return {
        "queries": len(sample),
        "t2l_per_query": per["t2l"],
        "fewshot3_per_query": per["fewshot3"],
        "creation": creation,
        "creation_encoder": per["encoder"],
        "creation_hypernet": per["hypernet"],
        "break_even_queries": break_even(per["t2l"], per["fewshot3"]),
        "with_answer": {
            "t2l_per_query": per["t2l_with_answer"],
            "fewshot3_per_query": per["fewshot3_with_answer"],
            "ratio": per["t2l_with_answer"] / per["fewshot3_with_answer"],
            "break_even_queries": break_even(per["t2l_with_answer"], per["fewshot3_with_answer"]),
        },
    }


# --- report -----------------------------------------------------------------------------------
def target_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets, each with its value and whether it is met (those against the multi-task and
    oracle LoRAs only where they were measured)."""
    desc, tasks = results["heldout_descriptions"], results["heldout_tasks"]
    best, sft, rnd = desc[results["best_t2l"]], results["best_t2l_sft"], results["random_description"]
    rows: dict[str, tuple[str, bool]] = {}
    if "multitask_lora" in desc:
        rows["held-out descriptions: best T2L >= multi-task LoRA"] = (
            f"{best:.3f} vs {desc['multitask_lora']:.3f}",
            best >= desc["multitask_lora"],
        )
    if "oracle_lora" in desc:
        rows["held-out descriptions: best T2L >= 90% of oracle"] = (
            f"{best:.3f} vs {0.9 * desc['oracle_lora']:.3f}",
            best >= 0.9 * desc["oracle_lora"],
        )
    rows |= {
        "held-out families: T2L-SFT > base": (f"{tasks[sft]:.3f} vs {tasks['base']:.3f}", tasks[sft] > tasks["base"]),
        "held-out families: T2L-SFT > description in prompt": (
            f"{tasks[sft]:.3f} vs {tasks['description_in_prompt']:.3f}",
            tasks[sft] > tasks["description_in_prompt"],
        ),
        f"random strings <= real descriptions - {RANDOM_GAP:.2f}": (
            f"{rnd['accuracy']:.3f} vs {rnd['real_description_accuracy']:.3f}",
            rnd["accuracy"] <= rnd["real_description_accuracy"] - RANDOM_GAP,
        ),
        "create_ms <= 50": (f"{results['create_ms']:.1f} ms", results["create_ms"] <= 50),
    }
    return {name: {"value": value, "met": bool(met)} for name, (value, met) in rows.items()}


def markdown(results: Mapping[str, Any]) -> str:
    """BENCHMARKS.md's section: accuracies by method and split, random strings, costs, targets."""
    desc, tasks, flops = results["heldout_descriptions"], results["heldout_tasks"], results["flops"]
    queries, rnd = results["queries"], results["random_description"]
    compare = results["compare"]
    intro = (
        f"Embedded default model, greedy decoding, exact match; {queries['per_description']} bare queries per"
        f" description: {queries['heldout_descriptions']} under the training families' held-out descriptions,"
        f" {queries['heldout_tasks']} under every description of the held-out families; seed {results['seed']};"
        f" {results['machine']},"
        f" {results['seconds']:.0f} s. 3-shot prompts include the description."
    )
    if compare:
        intro += (
            f" Best T2L: {results['best_t2l']}; best T2L-SFT: {results['best_t2l_sft']}. Training steps: "
            + ", ".join(f"{variant} {steps}" for variant, steps in results["training_steps"].items())
            + "."
        )
    else:
        intro += (
            f" T2L: the shipped checkpoint ({SHIPPED}); `--compare` adds the trained variants, a multi-task LoRA"
            " and the oracle LoRAs."
        )
    noise = (
        f"Random strings instead of descriptions ({rnd['variant']}): {rnd['accuracy']:.3f}"
        f" (letters {rnd['by_kind']['letters']:.3f}, words {rnd['by_kind']['words']:.3f}) against"
        f" {rnd['real_description_accuracy']:.3f} with the real descriptions (base model {rnd['base_accuracy']:.3f})."
    )
    multitask = results["multitask_lora"]
    baseline = []
    if multitask is not None:
        baseline = [
            (
                f"Multi-task LoRA ({multitask['id']}): SFT {multitask['steps']} steps x {multitask['batch']} examples,"
                f" lr {multitask['lr']}, last-step train token accuracy {multitask['token_acc']:.3f},"
                f" {multitask['train_seconds']:.0f} s to train (once; cached in RUNS/multitask)."
            ),
            "",
        ]
    create = f"create a skill ({results['create_ms_variant']}, median of {results['create_descriptions']})"
    per_query = f"{flops['t2l_per_query'] / 1e6:.1f} M / {flops['fewshot3_per_query'] / 1e6:.1f} M"
    shipped = results["create_ms_by_variant"].get("shipped")
    costs = [
        (create, f"{results['create_ms']:.1f} ms"),
        *([("create a skill (shipped checkpoint)", f"{shipped:.1f} ms")] if shipped is not None else []),
        ("FLOPs per query, T2L / 3-shot prompt (skill made once)", f"{results['flops_vs_fewshot3']:.3f}"),
        ("same, with the answer's tokens", f"{flops['with_answer']['ratio']:.3f}"),
        ("FLOPs per query, T2L and 3-shot", per_query),
        ("FLOPs to create a skill (encoder + hypernetwork)", f"{flops['creation'] / 1e6:.1f} M"),
        ("break-even queries per skill", f"{flops['break_even_queries']}"),
    ]
    return "\n".join(
        [
            f"## Text-to-LoRA (`python -m benchmarks.t2l{' --compare' if compare else ''}`)",
            "",
            intro,
            "",
            "| method | held-out descriptions | held-out families |",
            "| --- | --- | --- |",
            *(f"| {m} | {desc[m]:.3f} | {f'{tasks[m]:.3f}' if m in tasks else '(none)'} |" for m in desc),
            "",
            noise,
            "",
            *baseline,
            "| cost | value |",
            "| --- | --- |",
            *(f"| {name} | {value} |" for name, value in costs),
            "",
            "| target | value | |",
            "| --- | --- | --- |",
            *(
                f"| {name} | {row['value']} | {'met' if row['met'] else 'missed'} |"
                for name, row in results["targets"].items()
            ),
        ]
    )


def headline(results: Mapping[str, Any]) -> Headline:
    """The README's rows (from a ``--compare`` run): skills against prompting and the trained baselines."""
    desc, tasks, rnd = results["heldout_descriptions"], results["heldout_tasks"], results["random_description"]
    return [
        (
            "Text-to-LoRA, held-out descriptions: best skill / description in prompt / multi-task LoRA / oracle LoRA",
            (
                f"{desc[results['best_t2l']]:.3f} / {desc['description_in_prompt']:.3f} / {desc['multitask_lora']:.3f}"
                f" / {desc['oracle_lora']:.3f}"
            ),
        ),
        (
            "Text-to-LoRA, task families never trained on: best SFT skill / base model",
            f"{tasks[results['best_t2l_sft']]:.3f} / {tasks['base']:.3f}",
        ),
        (
            "Text-to-LoRA, random strings instead of descriptions",
            f"{rnd['accuracy']:.3f} (base model {rnd['base_accuracy']:.3f})",
        ),
        ("create a skill (shipped checkpoint)", f"{results['create_ms_by_variant']['shipped']:.1f} ms"),
    ]


Splits = dict[str, tuple[HeldoutQueries, list[list[Message]]]]
"""Split name -> (its queries, their 3-shot chats)."""


def draw_splits(queries: int, streams: str) -> Splits:
    """Both splits' queries and 3-shot chats, each from its own stream (changing one changes nothing else)."""
    splits = {}
    for split, families in (("heldout_descriptions", train_families()), ("heldout_tasks", heldout_families())):
        rng = random.Random(f"{streams}-{split}")
        probe = heldout_queries(families, queries, rng, all_descriptions=split == "heldout_tasks")
        splits[split] = probe, fewshot_chats(probe, random.Random(f"{streams}-{split}-fewshot"))
    return splits


def random_description_scores(
    host: AdapterHost, encoder: TextEncoder, hypernet: TextToLoRA, probe: HeldoutQueries, rng: random.Random
) -> dict[str, Any]:
    """Accuracy of ``hypernet``'s skills made from random strings in place of ``probe``'s descriptions."""
    noise, kinds = random_strings(rng, probe.descriptions)
    answers = answers_with(host, probe.bare(), skills(hypernet, encoder.encode(noise)), probe.owners)
    correct = [answer == gold for answer, gold in zip(answers, probe.gold)]
    by_kind = {
        kind: mean([match for match, owner in zip(correct, probe.owners) if kinds[owner] == kind])
        for kind in ("letters", "words")
    }
    return {"accuracy": mean(correct), "by_kind": by_kind, "examples": noise[:4]}


def timed_descriptions() -> list[str]:
    """The 30 distinct descriptions create_ms is the median over: the held-out families' held-out ones."""
    return [d for f in heldout_families() for d in f.heldout_descriptions]


def creation_times(host: AdapterHost, encoder: TextEncoder, hypernets: Mapping[str, TextToLoRA]) -> dict[str, float]:
    """create_ms of every variant and of the shipped checkpoint, on the same 30 descriptions."""
    warmup = list(train_families()[0].train_descriptions[:CREATE_WARMUP])
    timed = timed_descriptions()
    shipped = {} if SHIPPED in hypernets else {"shipped": TextToLoRA.load(DEFAULT_CHECKPOINT_DIR, device=host.device)}
    return {
        name: create_ms(host, hypernet, encoder, warmup, timed)
        for name, hypernet in tqdm({**hypernets, **shipped}.items(), desc="create_ms")
    }


TrainedBaselines = tuple[Factors, dict[str, Any], tuple[Factors, dict[str, int]]]
"""The multi-task LoRA with how it was trained, and the oracle LoRAs with each family's row."""


def trained_baselines(host: AdapterHost, config: T2LConfig, runs: Path, steps: int, seed: int) -> TrainedBaselines:
    """The multi-task and oracle LoRAs of ``--compare``, trained under ``runs`` on first use."""
    with AdapterStore(runs / "multitask") as store:
        multitask, multitask_info = multitask_lora(host, store, config, steps, seed)
    multitask_factors = stack_adapters([multitask], [t.module for t in config.targets], config.num_layers)
    families = train_families()
    with AdapterStore(runs / "oracles") as oracle_store:
        oracles = oracle_factors(host, families, config, T2LTrainSettings(), oracle_store)
    return multitask_factors, multitask_info, (oracles, {family.id: row for row, family in enumerate(families)})


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    host = load_host(device=args.device)
    for parameter in host.model.parameters():
        parameter.requires_grad_(False)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.compare else []
    if args.compare:
        hypernets = load_variants(args.runs, variants, host.device)
    else:
        hypernets = {SHIPPED: TextToLoRA.load(DEFAULT_CHECKPOINT_DIR, device=host.device)}
    config = next(iter(hypernets.values())).config
    encoder = load_encoder("minilm")
    streams = f"{EVAL_SEED_OFFSET + args.seed}"
    multitask_factors, multitask_info, oracles = (
        trained_baselines(host, config, args.runs, args.multitask_steps, args.seed)
        if args.compare
        else (None, None, None)
    )

    splits = draw_splits(args.queries, streams)
    correct = {}
    for split, (probe, fewshot) in splits.items():
        embeddings = encoder.encode(list(probe.descriptions))  # [descriptions, e]
        with_oracles = oracles if split == "heldout_descriptions" else None
        correct[split] = score_split(host, probe, embeddings, fewshot, hypernets, multitask_factors, with_oracles)
    accuracy = {split: {m: mean(matches) for m, matches in per.items()} for split, per in correct.items()}
    described = accuracy["heldout_descriptions"]
    best = max(hypernets, key=lambda m: described[m])
    best_sft = max([m for m in hypernets if m.endswith("_sft")] or hypernets, key=lambda m: described[m])

    probe, fewshot = splits["heldout_descriptions"]
    noise = random_description_scores(host, encoder, hypernets[best_sft], probe, random.Random(f"{streams}-random"))
    timing = creation_times(host, encoder, hypernets)
    picks = random.Random(f"{streams}-flops").sample(range(len(probe.queries)), min(FLOP_QUERIES, len(probe.queries)))
    flops = flop_costs(host, hypernets[best], encoder, probe, fewshot, sorted(picks)) | {"variant": best}

    tasks_probe = splits["heldout_tasks"][0]
    results: dict[str, Any] = {
        "heldout_descriptions": described,
        "heldout_tasks": accuracy["heldout_tasks"],
        "heldout_tasks_by_family": {m: by_family(tasks_probe, c) for m, c in correct["heldout_tasks"].items()},
        "best_t2l": best,
        "best_t2l_sft": best_sft,
        "random_description": {
            "variant": best_sft,
            **noise,
            "real_description_accuracy": described[best_sft],
            "base_accuracy": described["base"],
        },
        "create_ms": timing[best],
        "create_ms_variant": best,
        "create_ms_by_variant": timing,
        "create_descriptions": len(timed_descriptions()),
        "flops_vs_fewshot3": flops["t2l_per_query"] / flops["fewshot3_per_query"],
        "flops": flops,
        "multitask_lora": multitask_info,
        "fewshot3_includes_description": True,
        "queries": {
            "per_description": args.queries,
            **{split: len(p.queries) for split, (p, _) in splits.items()},
            "descriptions": {split: len(p.descriptions) for split, (p, _) in splits.items()},
        },
        "compare": args.compare,
        "variants": variants,
        "training_steps": {v: training_steps(args.runs / v) for v in variants},
        "seed": args.seed,
        "machine": machine(),
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["targets"] = target_rows(results)
    section, rows = ("t2l", headline(results)) if args.compare else ("t2l_shipped", ())
    write_results(section, results, markdown(results), args.json, markdown=not args.no_markdown, headline=rows)


if __name__ == "__main__":
    main()
