"""Internalizing very long documents through a model of gemma-2-2b's shape (needs a GPU).

    python -m benchmarks.d2l_scale --json runs/d2l_scale.json [--tokens 32768 131072]

Random weights (no hub here): what is measured is time and memory, not answers. The model has
gemma-2-2b's shape (widths, depth, heads, vocabulary) in the Llama architecture, because
transformers runs Gemma2 attention only eagerly, which cannot hold a 128K-token prefill. The
hypernetwork has the published design's sizes (latent 512, 8 latents, 9 blocks, 16 heads,
rank 8 on every down_proj). Internalization reads the document in chunks of ``--chunk``
tokens, ``--chunk-batch`` chunks per forward, and is compared with one plain prefill forward
over the same tokens (FlashAttention-style SDPA), both in bf16.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks.report import machine, update_section
from d2l_memory.host import AdapterHost
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.internalize import Internalizer

GEMMA2_2B = dict(
    vocab_size=256_000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    max_position_embeddings=131_072 + 8,
)


def timed(fn) -> tuple[float, float]:
    """Seconds and peak GiB of one call, after a warm-up call."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32_768, 131_072])
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--chunk-batch", type=int, default=4)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(**GEMMA2_2B), dtype=torch.bfloat16, attn_implementation="sdpa"
        ).eval()
    host = AdapterHost(model, tokenizer=None, model_id="random-gemma-2-2b-shape")
    config = HypernetConfig.for_model(
        host.layout,
        latent_dim=512,
        num_latents=8,
        num_blocks=9,
        num_heads=16,
        mlp_ratio=4,
        rank=8,
        chunk_tokens=args.chunk,
    )
    hypernet = DocToLoRA(config).to("cuda", torch.bfloat16).eval()
    internalizer = Internalizer(host, hypernet, chunk_batch=args.chunk_batch)
    results: dict = {
        "machine": machine(),
        "base_parameters": sum(p.numel() for p in model.parameters()),
        "hypernet_parameters": sum(p.numel() for p in hypernet.parameters()),
        "chunk_tokens": args.chunk,
        "by_tokens": {},
    }
    for tokens in args.tokens:
        ids = torch.randint(10, GEMMA2_2B["vocab_size"], (tokens,)).tolist()
        chunks = [ids[i : i + args.chunk] for i in range(0, tokens, args.chunk)]

        def internalize() -> None:
            list(internalizer.chunk_adapters(chunks))

        def prefill() -> None:
            with torch.no_grad():
                model(input_ids=torch.tensor([ids], device="cuda"), logits_to_keep=1)

        seconds, peak = timed(internalize)
        try:
            prefill_seconds, prefill_peak = timed(prefill)
        except torch.OutOfMemoryError:
            prefill_seconds, prefill_peak = None, None
            torch.cuda.empty_cache()
        adapter = next(internalizer.chunk_adapters(chunks[:1]))
        results["by_tokens"][str(tokens)] = {
            "internalize_s": round(seconds, 4),
            "internalize_peak_gib": round(peak, 2),
            "prefill_s": prefill_seconds and round(prefill_seconds, 4),
            "prefill_peak_gib": prefill_peak and round(prefill_peak, 2),
            "adapter_bytes_bf16": adapter.nbytes * len(chunks),
            "kv_cache_bytes_bf16": tokens
            * GEMMA2_2B["num_hidden_layers"]
            * 2
            * GEMMA2_2B["num_key_value_heads"]
            * GEMMA2_2B["head_dim"]
            * 2,
        }
        print(tokens, results["by_tokens"][str(tokens)], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    rows = []
    for tokens, r in results["by_tokens"].items():
        prefill = "out of memory" if r["prefill_s"] is None else f"{r['prefill_s']:.2f} s"
        rows.append(
            f"| {tokens} | {r['internalize_s']:.2f} s | {r['internalize_peak_gib']:.1f} GiB | {prefill} |"
            f" {r['adapter_bytes_bf16'] / 2**20:.1f} MiB | {r['kv_cache_bytes_bf16'] / 2**30:.2f} GiB |"
        )
    update_section(
        "d2l_scale",
        "\n".join(
            [
                "## Internalizing long documents at gemma-2-2b scale (`python -m benchmarks.d2l_scale`)",
                "",
                f"Random-weight model of gemma-2-2b's shape (Llama architecture), hypernetwork of the published size"
                f" ({results['hypernet_parameters'] / 1e6:.0f}M parameters), chunks of {args.chunk} tokens, bf16; {results['machine']}.",
                "",
                "| tokens | internalize | peak memory | plain prefill | adapter | KV cache |",
                "| --- | --- | --- | --- | --- | --- |",
                *rows,
            ]
        ),
    )


if __name__ == "__main__":
    main()
