"""Adapter host costs: how long swapping the active adapter set takes, and what a big adapter
adds to generation.

    python -m benchmarks.host --json runs/host.json

Runs on a tiny random-weight Llama (hidden 256, 4 layers) on the CPU, with adapters on all seven
projections of every layer (the most expensive case we support). Times are medians; the
generation cost is a ratio measured within one run, interleaving both arms so machine noise
hits them alike.
"""

from __future__ import annotations

import random

import torch

from benchmarks.report import machine, median_ms, parse_args, write_results
from d2l_memory import TARGETABLE, AdapterHost
from d2l_memory.testing import random_adapter, tiny_model, tiny_tokenizer

RESIDENT = 64
SET_SIZES = (1, 4, 16)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = tiny_model("llama", hidden_size=256, intermediate_size=688, num_layers=4, num_heads=8, num_kv_heads=4)
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

    host.add("r64", random_adapter(model, rank=64, modules=TARGETABLE, seed=999))
    prompt = "the code of the city is what ?" * 4

    def generate(adapters: list[str] | None) -> None:
        host.generate(prompt, adapters=adapters, max_new_tokens=64)

    generate(None), generate(["r64"])  # warm-up
    base, adapted = [], []
    for _ in range(7):
        base.append(median_ms(lambda: generate(None), repeats=1))
        adapted.append(median_ms(lambda: generate(["r64"]), repeats=1))
    ratio = sorted(adapted)[3] / sorted(base)[3]

    results = {
        "swap_ms_1": round(swaps[1], 4),
        "swap_ms_4": round(swaps[4], 4),
        "swap_ms_16": round(swaps[16], 4),
        "generate_ratio_r64": round(ratio, 4),
        "generate_ms_base": round(sorted(base)[3], 2),
        "resident_adapters": RESIDENT,
        "targets": list(TARGETABLE),
        "machine": machine(),
    }
    table = "\n".join(
        [
            "## Adapter host (`python -m benchmarks.host`)",
            "",
            f"Tiny Llama (hidden 256, 4 layers), {RESIDENT} resident rank-8 adapters on all 7 projections; {results['machine']}.",
            "",
            "| figure | value | target |",
            "| --- | --- | --- |",
            f"| swap_ms_1 (activate a set of 1) | {results['swap_ms_1']:.3f} ms | <= 2 |",
            f"| swap_ms_4 | {results['swap_ms_4']:.3f} ms | |",
            f"| swap_ms_16 | {results['swap_ms_16']:.3f} ms | <= 10 |",
            f"| generate_ratio_r64 (64 tokens, rank-64 adapter vs none) | {results['generate_ratio_r64']:.3f} | <= 1.15 |",
        ]
    )
    write_results("host", results, table, args.json, markdown=not args.no_markdown)


if __name__ == "__main__":
    main()
