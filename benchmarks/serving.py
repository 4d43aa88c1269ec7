"""Memories served on vLLM against the in-process host: same answers, no crosstalk, throughput.

    python -m benchmarks.serving --json runs/serving.json [--seed N] [--server URL]

One run, both hosts, the embedded default and its shipped Doc-to-LoRA checkpoint. The fact
documents and questions of ``benchmarks.d2l`` (the same seed gives the same questions) are
internalized once; the in-process host and a :class:`~d2l_memory.vllm_host.VLLMHost` hold the
same memories. Without ``--server``
a vLLM server is started in ``.venv-vllm`` (made on first use, a few minutes).

JSON keys: ``agreement_with_host`` (share of questions whose greedy answer from a memory on vLLM
equals the in-process host's), ``crosstalk`` (concurrent replies that differ from the same
request's reply alone), ``throughput_ratio`` (N agents asking at once -> vLLM completion tokens/s
over in-process), ``adapter_load_ms`` (median first use of a memory: compose, write, load),
``composed_set_ms`` (median time to build and load a set of 4 memories), ``composed_agreement``
(sets of 2-4 memories compressed to rank 16: share of answers equal to the in-process set's)
and ``compression_error`` (their median relative error).
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.d2l import EVAL_SEED_OFFSET, fact_questions
from benchmarks.report import Headline, benchmark_parser, machine, write_results
from d2l_lab.formats import qa_messages
from d2l_lab.world import FactDocument
from d2l_memory.adapter import LoRAAdapter
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, DEFAULT_MODEL_DIR, load_host
from d2l_memory.host import AdapterHost, AdapterSelection
from d2l_memory.hypernet import DocToLoRA
from d2l_memory.internalize import Internalizer
from d2l_memory.vllm_host import VLLMHost
from d2l_memory.vllm_server import VLLMServer, vllm_environment

ROOT = Path(__file__).resolve().parent.parent
AGENT_COUNTS = (1, 4, 16)
QUESTIONS_PER_AGENT = 4
MAX_NEW_TOKENS = 12
COMPRESSED_RANK = 16  # sets of 3 and 4 rank-8 memories are compressed to it
Chat = list[dict[str, Any]]
Item = tuple[AdapterSelection, Chat]


@dataclass(frozen=True)
class Memory:
    id: str
    adapter: LoRAAdapter
    questions: list[Chat]


def parse_args():
    parser = benchmark_parser(__doc__)
    parser.add_argument("--server", help="a running vLLM server on the embedded default (default: start one)")
    parser.add_argument(
        "--docs-per-count", type=int, default=12, help="fact documents per fact count, as benchmarks.d2l"
    )
    parser.add_argument(
        "--with-runs", nargs="*", default=(), help="JSON of other seeds' runs to show beside this one in the table"
    )
    return parser.parse_args()


def fact_memories(host: AdapterHost, seed: int, docs_per_count: int) -> list[Memory]:
    """The fact documents and questions ``benchmarks.d2l`` asks with this seed (``docs_per_count``
    documents of each fact count), each internalized and resident on ``host``."""
    internalizer = Internalizer(host, DocToLoRA.load(D2L_CHECKPOINT_DIR))
    by_document: dict[str, tuple[FactDocument, list[Chat]]] = {}
    for doc, qa in fact_questions(random.Random(EVAL_SEED_OFFSET + seed), docs_per_count):
        by_document.setdefault(doc.text, (doc, []))[1].append(qa_messages(None, [qa])[:-1])
    made = []
    for doc, chats in by_document.values():
        memory = internalizer.internalize(doc.text, progress=False)
        host.add(memory.id, memory.adapter)
        made.append(Memory(memory.id, memory.adapter, chats))
    return made


def answer(host: AdapterHost, item: Item) -> tuple[str, int]:
    generation = host.generate(item[1], adapters=item[0], max_new_tokens=MAX_NEW_TOKENS)
    return generation.text, generation.completion_tokens


def concurrently(host: AdapterHost, agents: Sequence[Sequence[Item]]) -> tuple[list[list[str]], float]:
    """Every agent asks its questions one after another, all agents at once: replies and tokens/s."""

    def run(items: Sequence[Item]) -> list[tuple[str, int]]:
        return [answer(host, item) for item in items]

    started = time.perf_counter()
    with ThreadPoolExecutor(len(agents)) as pool:
        replies = list(pool.map(run, agents))
    seconds = time.perf_counter() - started
    tokens = sum(n for agent in replies for _, n in agent)
    return [[text for text, _ in agent] for agent in replies], tokens / seconds


def main() -> None:
    args = parse_args()
    local = load_host()
    memories = fact_memories(local, args.seed, args.docs_per_count)
    server = None
    if args.server is None:
        server = VLLMServer(DEFAULT_MODEL_DIR, python=vllm_environment(ROOT / ".venv-vllm"), max_loras=16).start()
    url = args.server or server.url
    try:
        results = measure(
            local, VLLMHost(load_host().model, local.tokenizer, url=url, model_id=local.model_id), memories
        )
    finally:
        if server is not None:
            server.stop()
    results = {"seed": args.seed, "machine": machine(), **results}
    runs = [results, *(json.loads(Path(path).read_text()) for path in args.with_runs)]
    runs.sort(key=lambda run: run["seed"])
    write_results("serving", results, table(runs), args.json, markdown=not args.no_markdown, headline=headline(runs))


def measure(local: AdapterHost, remote: VLLMHost, memories: list[Memory]) -> dict[str, Any]:
    load_ms = []
    for memory in memories:  # first use of each memory: compose, write the PEFT folder, load
        remote.add(memory.id, memory.adapter)
        started = time.perf_counter()
        remote.serve([memory.id])
        load_ms.append(1000 * (time.perf_counter() - started))
    items = [([memory.id], chat) for memory in memories for chat in memory.questions]
    ours = [answer(local, item)[0] for item in items]
    theirs = [answer(remote, item)[0] for item in items]
    agreement = sum(a == b for a, b in zip(ours, theirs)) / len(items)

    throughput, crosstalk, crosstalk_local, per_n = {}, 0, 0, {}
    for n in AGENT_COUNTS:
        agents = [
            [([m.id], chat) for chat in itertools.islice(itertools.cycle(m.questions), QUESTIONS_PER_AGENT)]
            for m in memories[:n]
        ]
        alone = [[answer(remote, item)[0] for item in agent] for agent in agents]
        replies_local, local_tps = concurrently(local, agents)
        replies_remote, remote_tps = concurrently(remote, agents)
        crosstalk += differing(replies_remote, alone)
        crosstalk_local += differing(replies_local, [[answer(local, item)[0] for item in agent] for agent in agents])
        throughput[str(n)] = round(remote_tps / local_tps, 2)
        per_n[str(n)] = {"vllm_tokens_per_s": round(remote_tps, 1), "in_process_tokens_per_s": round(local_tps, 1)}

    compressed = VLLMHost(remote.model, remote.tokenizer, url=remote.client.url, max_lora_rank=COMPRESSED_RANK)
    for memory in memories:
        compressed.add(memory.id, memory.adapter)
    set_ms, composed, errors = [], {}, []
    for size in (2, 3, 4):
        same = []
        for start in range(0, min(len(memories), 40) - size + 1, size):
            group = memories[start : start + size]
            members = [m.id for m in group]
            started = time.perf_counter()
            served = compressed.serve(members)
            if size == 4:
                set_ms.append(1000 * (time.perf_counter() - started))
            if size > 2:
                errors.append(served.relative_error)
            asked = [(members, chat) for m in group for chat in m.questions]
            same += [answer(compressed, item)[0] == answer(local, item)[0] for item in asked]
        composed[str(size)] = round(sum(same) / len(same), 4)
    compressed.close()
    remote.close()
    return {
        "agreement_with_host": round(agreement, 4),
        "questions": len(items),
        "crosstalk": crosstalk,
        "crosstalk_in_process": crosstalk_local,
        "throughput_ratio": throughput,
        "tokens_per_s": per_n,
        "adapter_load_ms": round(statistics.median(load_ms), 1),
        "composed_set_ms": round(statistics.median(set_ms), 1),
        "composed_agreement": composed,
        "compression_error": float(f"{statistics.median(errors):.3g}"),
        "compressed_rank": COMPRESSED_RANK,
    }


def differing(replies: list[list[str]], alone: list[list[str]]) -> int:
    return sum(a != b for agent, agent_alone in zip(replies, alone) for a, b in zip(agent, agent_alone))


def table(runs: Sequence[dict[str, Any]]) -> str:
    """One column per seed's run."""
    seeds = " | ".join(f"seed {run['seed']}" for run in runs)

    def row(what: str, target: str, figure) -> str:
        return f"| {what} | {' | '.join(figure(run) for run in runs)} | {target} |"

    counts = sorted({n for run in runs for n in run["throughput_ratio"]}, key=int)
    sizes = sorted({s for run in runs for s in run["composed_agreement"]}, key=int)
    lines = [
        "## Serving on vLLM",
        "",
        (
            f"`python -m benchmarks.serving --json runs/serving-SEED.json --seed SEED` on {runs[0]['machine']}: the"
            " embedded default served by vLLM for CPUs on the same machine, against the in-process host, with the"
            f" questions of `benchmarks.d2l` ({runs[0]['questions']} a seed, one memory each). Sets of 3 and 4"
            f" memories are compressed to rank {runs[0]['compressed_rank']}."
        ),
        "",
        f"| measure | {seeds} | target |",
        f"| --- | {' | '.join('---' for _ in runs)} | --- |",
        row("greedy answers equal to the in-process host's", ">= 0.98", lambda r: f"{r['agreement_with_host']:.3f}"),
        row("concurrent replies that differ from the same request alone", "0", lambda r: str(r["crosstalk"])),
        *(
            row(
                f"throughput with {n} agent(s) at once: vLLM / in-process tokens/s",
                ">= 3" if n == "16" else "",
                lambda r, n=n: (
                    f"{r['throughput_ratio'][n]:.2f}x ({r['tokens_per_s'][n]['vllm_tokens_per_s']:.0f}"
                    f" / {r['tokens_per_s'][n]['in_process_tokens_per_s']:.0f})"
                ),
            )
            for n in counts
        ),
        row(
            "first use of a memory (compose, write, load), median",
            "<= 200 ms",
            lambda r: f"{r['adapter_load_ms']:.0f} ms",
        ),
        row("a set of 4 memories built, compressed and loaded, median", "", lambda r: f"{r['composed_set_ms']:.0f} ms"),
        *(
            row(
                f"set of {s} memories: answers equal to the in-process set's",
                "",
                lambda r, s=s: f"{r['composed_agreement'][s]:.3f}",
            )
            for s in sizes
        ),
        row("relative error of those compressions, median", "", lambda r: f"{r['compression_error']:.1e}"),
    ]
    return "\n".join(lines)


def headline(runs: Sequence[dict[str, Any]]) -> Headline:
    agreement = min(run["agreement_with_host"] for run in runs)
    crosstalk = sum(run["crosstalk"] for run in runs)
    ratios = [run["throughput_ratio"]["16"] for run in runs]
    return [
        (
            "memories served on vLLM: answers equal to the in-process host's",
            f"at least {agreement:.2f} on every seed, crosstalk {crosstalk}",
        ),
        ("vLLM throughput over in-process, 16 agents at once (2-core CPU)", f"{min(ratios):.1f}-{max(ratios):.1f}x"),
    ]


if __name__ == "__main__":
    main()
