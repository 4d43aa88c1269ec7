"""``d2l-memory demo``: the long-horizon agent run on the embedded default, with its table and plot.

One LangGraph agent with LoRA memory (:mod:`d2l_lab.long_task`) works through the task; the
same script with every output kept in the prompt gives the prompt-growing baseline (only its
prompt sizes are measured: the embedded model cannot read 260K tokens); the questions are also
answered by reading the lines around each fact, the reference for answering from memory.

It runs on a plain install: without the ``skills`` extra the lexical encoder focuses memories and
the skill step is skipped, and without the ``plots`` extra the plot is; the table says which.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from d2l_lab.long_task import MAX_ANSWER_TOKENS, LongTaskSettings, compare_with_baseline
from integrations.chat_model import D2LChatModel
from integrations.defaults import EncoderChoice, default_agent_memory

PLOTS_INSTALL = 'pip install "d2l-memory[plots]"'


def embedded_comparison(
    settings: LongTaskSettings,
    *,
    store_dir: Path | None = None,
    progress: bool = True,
    encoder: EncoderChoice = "minilm",
) -> dict[str, Any]:
    """:func:`compare_with_baseline` on the embedded default with the shipped checkpoints.

    A memory without skills (the lexical ``encoder``) runs the task without its skill step.
    """
    with (
        tempfile.TemporaryDirectory() as tmp,
        default_agent_memory(store_dir or Path(tmp) / "store", encoder=encoder) as memory,
    ):
        if memory.skills is None:
            settings = settings.model_copy(update={"skill_queries": 0})
        model = D2LChatModel(host=memory.host, max_tokens=MAX_ANSWER_TOKENS)
        return compare_with_baseline(memory, model, settings, progress=progress) | {"encoder": encoder}


def run_demo(
    settings: LongTaskSettings,
    out_dir: Path,
    *,
    store_dir: Path | None = None,
    progress: bool = True,
    encoder: EncoderChoice = "minilm",
) -> dict[str, Any]:
    """Run the agent and the baseline, print the table, save ``summary.json`` and ``prompt_tokens.png``."""
    started = time.perf_counter()
    summary = embedded_comparison(settings, store_dir=store_dir, progress=progress, encoder=encoder)
    summary["total_seconds"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    plot = save_plot(summary, out_dir / "prompt_tokens.png")
    print(
        f"\nsaved {out_dir / 'summary.json'}"
        + (f" and the plot {plot}" if plot else f"; the plot needs matplotlib: {PLOTS_INSTALL}")
    )
    return summary


def table(summary: Mapping[str, Any]) -> str:
    """The run in a dozen lines, ours against the prompt-growing baseline where both apply."""
    s = summary
    budget = f" (newest {s['prompt_budget']:,} tokens)" if s["prompt_budget"] else " (receipts, all kept)"
    rows = [
        ("agent steps (pages read)", f"{s['steps']} ({s['pages']})", ""),
        ("largest prompt, tokens" + budget, f"{s['max_prompt_tokens']:,}", f"{s['baseline_max_prompt_tokens']:,}"),
        (
            "prompt after the last step",
            f"{s['prompt_tokens_per_step'][-1]:,}",
            f"{s['baseline_prompt_tokens_per_step'][-1]:,}",
        ),
        ("questions on early pages: accuracy", _share(s["accuracy_early"]), f"reading: {_share(s['oracle_early'])}"),
        ("questions on the latest page: accuracy", _share(s["accuracy_late"]), f"reading: {_share(s['oracle_late'])}"),
        ("questions routed to the right memory", _share(s["routing_accuracy"]), ""),
        _skill_row(s),
        ("tokens internalized", f"{s['tokens_internalized']:,} in {s['memories']} memories", ""),
        (
            "internalization time",
            f"{s['internalize_seconds']:.0f} s ({s['internalize_tokens_per_second']:,.0f} tokens/s)",
            "",
        ),
        ("memory size", f"{s['memory_bytes'] / 2**20:.1f} MiB", ""),
        ("time per agent step", f"{s['seconds_per_step']:.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':<{width}}  {'with LoRA memory':<34}  prompt-growing agent", "-" * (width + 60)]
    lines += [f"{name:<{width}}  {ours:<34}  {other}".rstrip() for name, ours, other in rows]
    if s["questions"]:
        lines.append("reading: the question asked with the lines around its fact (up to 448 tokens) in the prompt.")
    else:
        lines.append(
            f"no questions were asked: they come every {s['question_every']} pages (--question-every)"
            f" and this run read {s['pages']}"
        )
    if s["tool_errors"]:
        lines.append(f"warning: {s['tool_errors']} question(s) followed a failed memory tool call (see the log)")
    return "\n".join(lines)


def _skill_row(s: Mapping[str, Any]) -> tuple[str, str, str]:
    if not s["skill_queries"]:
        why = "the skills extra is not installed" if s.get("encoder") == "lexical" else "no skill inputs"
        return ("skill from a new wording", f"not run: {why}", "")
    return (
        f"skill from a new wording: accuracy ({s['skill_queries']} inputs)",
        _share(s["skill_accuracy"]),
        f"base model: {_share(s['skill_base_accuracy'])}",
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def save_plot(summary: Mapping[str, Any], path: Path) -> Path | None:
    """Prompt tokens per step, ours against the baseline (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot(
        summary["baseline_prompt_tokens_per_step"],
        label="every output kept in the prompt",
    )
    axes.plot(summary["prompt_tokens_per_step"], label="outputs internalized as LoRA memory")
    axes.set(
        yscale="log",
        xlabel="agent step",
        ylabel="prompt tokens",
        title="Prompt size over a long task",
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
