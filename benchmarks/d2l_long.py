"""One very long document internalized on the embedded default: time, memory, and a needle found in it.

    python -m benchmarks.d2l_long --json runs/d2l_long.json [--tokens 65536 262144 1048576]

Each length runs in a fresh process, so the peak resident memory it reports is its own.
Internalization reads the document a batch of chunks at a time, so what should grow with the
document is only what is proportional to it: its text and token ids, and the memory adapter
itself (one rank-8 adapter per 512-token chunk, half precision). A needle fact sits in the
middle; it is asked with only the chunk a lexical :class:`~d2l_memory.routing.ChunkFocus`
picks switched on.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

from benchmarks.report import Headline, benchmark_parser, machine, write_results
from d2l_lab.evaluate import is_exact
from d2l_lab.formats import qa_messages
from d2l_lab.world import make_needle_document
from d2l_memory import AdapterHost, ChunkFocus, LexicalEncoder
from d2l_memory.chunking import chunk_texts
from d2l_memory.embedded import D2L_CHECKPOINT_DIR, load_default
from d2l_memory.hypernet import DocToLoRA
from d2l_memory.internalize import Internalizer, memory_chunks

SAMPLE_WORDS = 20_000  # words of filler measured for this tokenizer's tokens per word


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(tokens: int, seed: int) -> dict[str, float | int | bool]:
    """Internalize a document of about ``tokens`` tokens in this process and ask its needle."""
    model, tokenizer = load_default()
    host = AdapterHost(model, tokenizer)
    internalizer = Internalizer(host, DocToLoRA.load(D2L_CHECKPOINT_DIR))
    rng = random.Random(seed)
    sample = make_needle_document(rng, SAMPLE_WORDS, 0.5).text
    words = int(SAMPLE_WORDS * tokens / host.count_tokens(sample))
    internalizer.internalize(sample[:4000], progress=False)  # warm-up: what any run pays, the document aside
    before = peak_rss_mib()
    document = make_needle_document(rng, words, 0.5)
    start = time.perf_counter()
    memory = internalizer.internalize(document.text, progress=True)
    seconds = time.perf_counter() - start
    after = peak_rss_mib()

    focus = ChunkFocus(LexicalEncoder())
    focus.add(memory.id, chunk_texts(tokenizer, document.text, internalizer.chunk_tokens))
    [qa] = document.questions
    chunks = focus.best([memory.id], qa.question)[memory.id]
    host.add("needle", memory_chunks(memory.adapter, memory.chunk_count, chunks))
    reply = host.generate(qa_messages(None, [qa])[:-1], adapters=["needle"], max_new_tokens=16).text
    return {
        "tokens": memory.token_count,
        "chunks": memory.chunk_count,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(memory.token_count / seconds),
        "peak_rss_growth_mib": round(after - before, 1),
        "adapter_mib": round(memory.adapter.nbytes / 2**20, 1),
        "needle_found": is_exact(reply.strip(), qa.answer),
    }


def markdown(results: dict) -> str:
    rows = results["by_tokens"]
    working = [r["peak_rss_growth_mib"] - 2 * r["adapter_mib"] for r in rows]
    lines = [
        "## One very long document (`python -m benchmarks.d2l_long`)",
        "",
        (
            f"Embedded default, one needle document per length (needle in the middle, asked with only the chunk a"
            f" lexical ChunkFocus picks switched on), each length in a fresh process; {results['machine']}."
            " Peak growth is the process's peak resident memory during internalization over its peak before."
        ),
        "",
        "| tokens | chunks | time | tokens/s | peak memory growth | adapter | growth less twice the adapter | needle |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[
            f"| {r['tokens']:,} | {r['chunks']:,} | {r['seconds']:.0f} s | {r['tokens_per_s']:,} |"
            f" {r['peak_rss_growth_mib']:.0f} MiB | {r['adapter_mib']:.0f} MiB |"
            f" {w:.0f} MiB | {'found' if r['needle_found'] else 'missed'} |"
            for r, w in zip(rows, working)
        ],
        "",
        (
            "Twice the adapter, because the chunk adapters and the memory they are concatenated into exist together"
            f" for a moment; what is left ({min(working):.0f}-{max(working):.0f} MiB from"
            f" {rows[0]['tokens']:,} to {rows[-1]['tokens']:,} tokens) is the working memory of a batch of chunks."
        ),
    ]
    return "\n".join(lines)


def headline(results: dict) -> Headline:
    """The README's row: the longest document's time, working memory and needle."""
    first, last = results["by_tokens"][0], results["by_tokens"][-1]

    def working(row: dict) -> float:
        return row["peak_rss_growth_mib"] - 2 * row["adapter_mib"]

    return [
        (
            (
                f"internalize one {last['tokens'] / 1e6:.0f}M-token document ({last['chunks']:,} chunks): time /"
                f" working memory (peak growth less twice the {last['adapter_mib']:.0f} MiB adapter) / its needle"
            ),
            (
                f"{last['seconds']:.0f} s / {working(last):.0f} MiB"
                f" ({working(first):.0f} MiB at {first['tokens'] // 1024}K)"
                f" / {'found' if last['needle_found'] else 'missed'}"
            ),
        )
    ]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[65_536, 262_144, 1_048_576])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one length, in this process
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.seed)))
        return
    rows = []
    for tokens in args.tokens:
        child = [sys.executable, "-m", "benchmarks.d2l_long", "--json", str(args.json), "--child", str(tokens)]
        out = subprocess.run([*child, "--seed", str(args.seed)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    results = {"by_tokens": rows, "seed": args.seed, "machine": machine()}
    write_results(
        "d2l_long", results, markdown(results), args.json, markdown=not args.no_markdown, headline=headline(results)
    )


if __name__ == "__main__":
    main()
