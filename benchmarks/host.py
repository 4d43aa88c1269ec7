"""Adapter host costs: how long swapping the active adapter set takes, and what a big adapter
adds to generation.

    python -m benchmarks.host --json runs/host.json

Runs on a tiny random-weight Llama (hidden 256, 4 layers) on the CPU. Swaps use resident
adapters on all seven projections of every layer (the most copying a swap can need). The
generation ratio is for a rank-64 adapter on the default target (``down_proj``, what
Doc-to-LoRA generates), and also reported for all seven projections. Times are medians; ratios
are medians of back-to-back pairs, so machine noise hits both arms alike.
"""

from __future__ import annotations

import random
import statistics

import torch

from benchmarks.report import Headline, machine, median_ms, parse_args, write_results
from d2l_memory import DEFAULT_TARGETS, TARGETABLE, AdapterHost
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer

RESIDENT = 64
SET_SIZES = (1, 4, 16)


def main() -> None:
    args = parse_args(__doc__)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = tiny_model("llama", hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=4)
    model.generation_config.eos_token_id = None  # both arms always generate all 64 tokens
    host = AdapterHost(model, tiny_tokenizer())
    for i in range(RESIDENT):
        host.add(f"m{i}", random_adapter(model, rank=8, modules=TARGETABLE, seed=i))
    ids = host.resident

    def swap(size: int) -> float:
        def activate() -> None:
            with host.active(rng.sample(ids, size)):
                pass

        activate()
        return median_ms(activate, repeats=200)

    swaps = {size: swap(size) for size in SET_SIZES}

    host.add("r64_default", random_adapter(model, rank=64, modules=DEFAULT_TARGETS, seed=998))
    host.add("r64_all", random_adapter(model, rank=64, modules=TARGETABLE, seed=999))
    prompt = "the code of the city is what ?" * 4

    def generate_ms(adapters: list[str] | None) -> float:
        return median_ms(lambda: host.generate(prompt, adapters=adapters, max_new_tokens=64), repeats=1)

    def generate_ratio(adapter_id: str) -> float:
        generate_ms(None), generate_ms([adapter_id])  # warm-up
        return statistics.median(generate_ms([adapter_id]) / generate_ms(None) for _ in range(15))

    ratio_default, ratio_all = generate_ratio("r64_default"), generate_ratio("r64_all")
    base_ms = statistics.median(generate_ms(None) for _ in range(5))

    results = {
        "swap_ms_1": round(swaps[1], 4),
        "swap_ms_4": round(swaps[4], 4),
        "swap_ms_16": round(swaps[16], 4),
        "generate_ratio_r64": round(ratio_default, 4),
        "generate_ratio_r64_all_projections": round(ratio_all, 4),
        "generate_ms_base": round(base_ms, 2),
        "resident_adapters": RESIDENT,
        "targets": list(TARGETABLE),
        "machine": machine(),
    }
    table = "\n".join(
        [
            "## Adapter host (`python -m benchmarks.host`)",
            "",
            f"Tiny Llama (hidden 256, 4 layers), {RESIDENT} resident rank-8 adapters on all 7 projections; {results['machine']}. Median times; ratios are medians of back-to-back pairs.",
            "",
            "| figure | value | target |",
            "| --- | --- | --- |",
            f"| swap_ms_1 (activate a set of 1) | {results['swap_ms_1']:.3f} ms | <= 2 |",
            f"| swap_ms_4 | {results['swap_ms_4']:.3f} ms | |",
            f"| swap_ms_16 | {results['swap_ms_16']:.3f} ms | <= 10 |",
            f"| generate_ratio_r64 (64 tokens, rank-64 adapter on down_proj vs none) | {results['generate_ratio_r64']:.3f} | <= 1.15 |",
            f"| generate_ratio_r64_all_projections (rank 64 on all 7 projections) | {results['generate_ratio_r64_all_projections']:.3f} | (not a target) |",
            f"| generation without adapters, 64 tokens | {results['generate_ms_base']:.0f} ms | |",
        ]
    )
    write_results("host", results, table, args.json, markdown=not args.no_markdown, headline=headline(results))


def headline(r: dict) -> Headline:
    """The README's rows: what a swap costs, and what a big memory adds to generation."""
    return [
        ("swap the active adapter set (1 / 16 adapters)", f"{r['swap_ms_1']:.3f} ms / {r['swap_ms_16']:.3f} ms"),
        ("generation with a rank-64 memory vs none", f"{r['generate_ratio_r64']:.2f}x"),
    ]


if __name__ == "__main__":
    main()
