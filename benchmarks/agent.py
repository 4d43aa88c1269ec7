"""The agent benchmark: a LangGraph agent (checkpointer + store) reads 100 tool outputs of ~2,600
tokens each, folding each into LoRA memory, and answers questions about early and late outputs.

    python -m benchmarks.agent --json runs/agent.json [--seed N]

The run is :mod:`d2l_lab.long_task` on the embedded default with the shipped checkpoints
(the same as ``d2l-memory demo``). ``baseline_max_prompt_tokens`` comes from the same graph
without the internalize node (every output stays in the prompt); ``oracle_in_context_accuracy``
answers the same questions with only the relevant output in the prompt, cut to the lines around
the fact that fit the model's 512-token window (the best case for reading).
Targets: ``max_prompt_tokens`` at most a tenth of the baseline's; ``accuracy`` at least 0.8 x
``oracle_in_context_accuracy``.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.report import Headline, machine, parse_args, write_results
from d2l_lab.demo import embedded_comparison
from d2l_lab.long_task import LongTaskSettings


def main() -> None:
    args = parse_args(__doc__)
    torch.manual_seed(args.seed)
    settings = LongTaskSettings(seed=args.seed)
    results = {
        "seed": args.seed,
        "machine": machine(),
        "settings": settings.model_dump(),
        **embedded_comparison(settings),
    }
    write_results(
        "agent", results, markdown(results), args.json, markdown=not args.no_markdown, headline=headline(results)
    )


def markdown(r: dict[str, Any]) -> str:
    prompt_ok = r["max_prompt_tokens"] <= r["baseline_max_prompt_tokens"] / 10
    accuracy_ok = r["accuracy"] >= 0.8 * r["oracle_in_context_accuracy"]
    run = (
        f"{r['machine']}, seed {r['seed']}; {r['steps']} agent steps, {r['pages']} tool outputs,"
        f" {r['tokens_internalized']:,} tokens internalized into {r['memories']} memories"
        f" ({r['memory_bytes'] / 2**20:.0f} MiB) at {r['internalize_tokens_per_second']:,.0f} tokens/s;"
        f" {r['tool_errors']} failed memory tool calls. Our prompt is the whole conversation, every output"
        ' replaced by its receipt (no trimming); the baseline keeps the outputs. "Reading" asks each question'
        " with the lines around its fact (up to 448 tokens of the output) in the prompt."
    )
    rows = [
        (
            "largest prompt (tokens)",
            f"{r['max_prompt_tokens']:,}",
            f"baseline {r['baseline_max_prompt_tokens']:,}",
            "<= 1/10 of baseline",
            "yes" if prompt_ok else "no",
        ),
        (
            f"accuracy on {r['questions']} questions",
            f"{r['accuracy']:.3f}",
            f"reading {r['oracle_in_context_accuracy']:.3f}",
            ">= 0.8 x reading",
            "yes" if accuracy_ok else "no",
        ),
        (
            "early outputs / latest output",
            f"{r['accuracy_early']:.3f} / {r['accuracy_late']:.3f}",
            f"{r['oracle_early']:.3f} / {r['oracle_late']:.3f}",
            "",
            "",
        ),
        ("questions routed to their output's memory", f"{r['routing_accuracy']:.3f}", "", "", ""),
        (
            f"skill from a held-out wording ({r['skill_queries']} inputs)",
            f"{r['skill_accuracy']:.3f}",
            f"base {r['skill_base_accuracy']:.3f}",
            "",
            "",
        ),
        ("seconds per agent step", f"{r['seconds_per_step']:.2f}", "", "", ""),
    ]
    table = ["| measure | ours | reference | target | met |", "| --- | --- | --- | --- | --- |"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    heading = "## Agent: 100 tool outputs folded into LoRA memory (`python -m benchmarks.agent`)"
    return "\n".join([heading, "", run, "", *table])


def headline(r: dict[str, Any]) -> Headline:
    """The README's rows: the prompt against the prompt-growing baseline, and answers from memory."""
    return [
        (
            "agent, largest prompt: ours (receipts) / prompt-growing baseline",
            f"{r['max_prompt_tokens']:,} / {r['baseline_max_prompt_tokens']:,} tokens",
        ),
        (
            "agent, questions from memory / reading the fact's lines / routed to the right memory",
            f"{r['accuracy']:.2f} / {r['oracle_in_context_accuracy']:.2f} / {r['routing_accuracy']:.2f}",
        ),
    ]


if __name__ == "__main__":
    main()
