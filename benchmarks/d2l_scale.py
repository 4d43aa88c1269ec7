"""Internalizing very long documents through a model of gemma-2-2b's shape (needs a GPU).

    python -m benchmarks.d2l_scale --json runs/d2l_scale.json [--tokens 32768 131072]

Random weights (no hub here): what is measured is time and memory, not answers. The model has
gemma-2-2b's shape (widths, depth, heads, vocabulary) in the Llama architecture, because
transformers runs Gemma2 attention only eagerly, which cannot hold a 128K-token prefill. The
hypernetwork has the published design's sizes (latent 512, 8 latents, 9 blocks, 16 heads,
rank 8 on every down_proj). Internalization reads the document in chunks of ``--chunk``
tokens, ``--chunk-batch`` chunks per forward, and is compared with one plain prefill forward
over the same tokens (FlashAttention-style SDPA), both in bf16.

``--hypernet published`` measures the published architecture instead
(:class:`~d2l_memory.published_d2l.PublishedDocToLoRA` with the sizes of the released gemma-2-2b
checkpoint, random weights), so a GPU run answers what an imported checkpoint costs.

``--shape tiny --device cpu`` runs the same code on a small model, so tests can check it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks.report import Headline, benchmark_parser, machine, write_results
from d2l_memory.host import AdapterHost
from d2l_memory.hypernet import DocToLoRA, HypernetConfig, target_shapes
from d2l_memory.internalize import DocumentHypernet, Internalizer
from d2l_memory.published_d2l import PublishedD2LConfig, PublishedDocToLoRA

SHAPES = {
    "gemma-2-2b": {
        "vocab_size": 256_000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
    },
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
}
PUBLISHED_HYPERNET = {"latent_dim": 512, "num_latents": 8, "num_blocks": 9, "num_heads": 16, "mlp_ratio": 4, "rank": 8}


def published_hypernet(host: AdapterHost, chunk: int) -> PublishedDocToLoRA:
    """The released gemma-2-2b Doc-to-LoRA architecture for ``host``'s shape, random weights."""
    rank = PUBLISHED_HYPERNET["rank"]
    config = PublishedD2LConfig(
        base_model=host.model_id,
        hidden_size=host.layout.hidden_size,
        num_layers=host.layout.num_layers,
        targets=target_shapes(host.layout, ["down_proj"]),
        rank=rank,
        alpha=2 * rank**1.5,
        latent_dim=PUBLISHED_HYPERNET["latent_dim"],
        num_latents=PUBLISHED_HYPERNET["num_latents"],
        num_blocks=PUBLISHED_HYPERNET["num_blocks"],
        chunk_tokens=chunk,
        prefix="",
        suffix="",
    )
    hypernet = PublishedDocToLoRA(config)
    with torch.no_grad():
        for p in hypernet.parameters():
            p.normal_(0, p.shape[-1] ** -0.5 if p.ndim > 1 else 0.1)
    return hypernet


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """Seconds and peak GiB (CUDA only) of one call, after a warm-up call."""
    cuda = device.type == "cuda"
    fn()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None


def kv_cache_bytes(shape: dict, tokens: int, bytes_per_value: int = 2) -> int:
    """Keys and values of every layer for ``tokens`` tokens."""
    return tokens * shape["num_hidden_layers"] * 2 * shape["num_key_value_heads"] * shape["head_dim"] * bytes_per_value


def _internalize(internalizer: Internalizer, chunks: list[list[int]]) -> None:
    for _ in internalizer.chunk_adapters(chunks):
        pass  # each adapter is dropped at once: memory stays bounded by one chunk batch


@torch.no_grad()
def _prefill(model: torch.nn.Module, ids: list[int]) -> None:
    model(input_ids=torch.tensor([ids], device=model.device), logits_to_keep=1)


def measure(
    shape_name: str,
    token_counts: Sequence[int],
    chunk: int,
    chunk_batch: int,
    device: torch.device,
    kind: str = "ours",
) -> dict:
    shape = SHAPES[shape_name]
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(**shape, max_position_embeddings=max(token_counts) + 8),
            dtype=dtype,
            attn_implementation="sdpa",
        ).eval()
    host = AdapterHost(model, tokenizer=None, model_id=f"random-{shape_name}-shape")
    hypernet: DocumentHypernet
    if kind == "published":
        hypernet = published_hypernet(host, chunk)
    else:
        hypernet = DocToLoRA(HypernetConfig.for_model(host.layout, chunk_tokens=chunk, **PUBLISHED_HYPERNET))
    hypernet = hypernet.to(device).to(dtype).eval()
    internalizer = Internalizer(host, hypernet, chunk_batch=chunk_batch)
    results: dict = {
        "machine": machine(),
        "shape": shape_name,
        "hypernet": kind,
        "base_parameters": sum(p.numel() for p in model.parameters()),
        "hypernet_parameters": sum(p.numel() for p in hypernet.parameters()),
        "chunk_tokens": chunk,
        "chunk_batch": chunk_batch,
        "by_tokens": {},
    }
    for tokens in token_counts:
        ids = torch.randint(10, shape["vocab_size"], (tokens,)).tolist()
        chunks = [ids[i : i + chunk] for i in range(0, tokens, chunk)]

        seconds, peak = timed(partial(_internalize, internalizer, chunks), device)
        try:
            prefill_seconds, prefill_peak = timed(partial(_prefill, model, ids), device)
        except torch.OutOfMemoryError:
            prefill_seconds, prefill_peak = None, None
            torch.cuda.empty_cache()
        adapter = next(internalizer.chunk_adapters(chunks[:1]))
        row = {
            "internalize_s": round(seconds, 4),
            "internalize_peak_gib": peak and round(peak, 2),
            "prefill_s": prefill_seconds and round(prefill_seconds, 4),
            "prefill_peak_gib": prefill_peak and round(prefill_peak, 2),
            "internalize_over_prefill": prefill_seconds and round(seconds / prefill_seconds, 3),
            "adapter_bytes_bf16": adapter.num_parameters * 2 * len(chunks),
            "kv_cache_bytes_bf16": kv_cache_bytes(shape, tokens),
        }
        results["by_tokens"][str(tokens)] = row
        print(tokens, row, flush=True)
    return results


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} GiB"


def _hypernet_words(results: dict) -> str:
    millions = results["hypernet_parameters"] / 1e6
    if results.get("hypernet") == "published":
        return f"the published Doc-to-LoRA architecture at its released gemma-2-2b sizes ({millions:.0f}M parameters)"
    return (
        "hypernetwork with the published design's sizes (latent 512, 8 latents, 9 blocks, 16 heads;"
        f" {millions:.0f}M parameters against the published ~315M, whose input projection is wider)"
    )


def markdown(results: dict) -> str:
    rows = []
    for tokens, r in results["by_tokens"].items():
        prefill = (
            "out of memory" if r["prefill_s"] is None else f"{r['prefill_s']:.2f} s, {_gib(r['prefill_peak_gib'])}"
        )
        rows.append(
            f"| {tokens} | {r['internalize_s']:.2f} s | {_gib(r['internalize_peak_gib'])} | {prefill} |"
            f" {r['adapter_bytes_bf16'] / 2**20:.1f} MiB | {r['kv_cache_bytes_bf16'] / 2**30:.2f} GiB |"
        )
    return "\n".join(
        [
            "## Internalizing long documents at gemma-2-2b scale (`python -m benchmarks.d2l_scale`)",
            "",
            (
                f"Random-weight model of gemma-2-2b's shape (Llama architecture, {results['base_parameters'] / 1e9:.2f}B"
                f" parameters), {_hypernet_words(results)}, chunks of {results['chunk_tokens']} tokens,"
                f" {results['chunk_batch']} per forward, bf16; {results['machine']}. Second of two runs each; peak is"
                " the GPU memory allocated."
            ),
            "",
            "| tokens | internalize | peak memory | plain prefill (time, peak) | adapter | KV cache |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def headline(results: dict) -> Headline:
    """The README's row: the longest document internalized against one plain prefill, on the GPU it ran on."""
    tokens, row = max(results["by_tokens"].items(), key=lambda item: int(item[0]))
    gpu = results["machine"].split(",")[0].split(" ", 1)[1]
    prefill = "out of memory" if row["prefill_s"] is None else f"{row['prefill_s']:.2f} s"
    return [
        (
            f"internalize {int(tokens) // 1024}K tokens at {results['shape']} scale vs prefill them ({gpu})",
            f"{row['internalize_s']:.2f} s vs {prefill}",
        )
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[32_768, 131_072])
    parser.add_argument("--chunk", type=int, default=8192)
    parser.add_argument("--chunk-batch", type=int, default=4)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gemma-2-2b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--hypernet",
        choices=["ours", "published"],
        default="ours",
        help="this library's design at the published sizes, or the published architecture (default %(default)s)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU (or --shape tiny --device cpu for a smoke run)")
    results = measure(args.shape, args.tokens, args.chunk, args.chunk_batch, device, args.hypernet)
    write_results(
        "d2l_scale", results, markdown(results), args.json, markdown=not args.no_markdown, headline=headline(results)
    )
    return results


if __name__ == "__main__":
    main()
