"""``d2l-memory demo``: the long-horizon agent run on the embedded default, with its table and plot.

One LangGraph agent with LoRA memory (:mod:`integrations.long_task`) works through the task; the
same script with every output kept in the prompt gives the prompt-growing baseline (only its
prompt sizes are measured: the embedded model cannot read 200K tokens); the questions are also
answered by reading the relevant page, the upper bound for answering from memory.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from integrations.chat_model import D2LChatModel
from integrations.defaults import default_agent_memory
from integrations.long_task import LongTaskSettings, compare_with_baseline

MAX_ANSWER_TOKENS = 24  # skill outputs are up to 12 words; digits are one token each


def run_demo(
    settings: LongTaskSettings,
    out_dir: Path,
    *,
    store_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the agent and the baseline, print the table, save ``summary.json`` and ``prompt_tokens.png``."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        memory = default_agent_memory(store_dir or Path(tmp) / "store")
        model = D2LChatModel(host=memory.host, max_tokens=MAX_ANSWER_TOKENS)
        summary = compare_with_baseline(memory, model, settings, progress=progress)
    summary["total_seconds"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))
    plot = save_plot(summary, out_dir / "prompt_tokens.png")
    print(
        f"\nsaved {out_dir / 'summary.json'}"
        + (f" and the plot {plot}" if plot else " (install matplotlib for the plot)")
    )
    return summary


def table(summary: Mapping[str, Any]) -> str:
    """The run in a dozen lines, ours against the prompt-growing baseline where both apply."""
    s = summary
    rows = [
        ("agent steps (pages read)", f"{s['steps']} ({s['pages']})", ""),
        (
            "largest prompt, tokens",
            f"{s['max_prompt_tokens']:,}",
            f"{s['baseline_max_prompt_tokens']:,}",
        ),
        (
            "prompt after the last step",
            f"{s['prompt_tokens_per_step'][-1]:,}",
            f"{s['baseline_prompt_tokens_per_step'][-1]:,}",
        ),
        (
            "questions on early pages: accuracy",
            f"{s['accuracy_early']:.0%}",
            f"reading the page: {s['oracle_early']:.0%}",
        ),
        (
            "questions on the latest page: accuracy",
            f"{s['accuracy_late']:.0%}",
            f"reading the page: {s['oracle_late']:.0%}",
        ),
        (
            "skill from a new description: accuracy",
            f"{s['skill_accuracy']:.0%}",
            f"base model: {s['skill_base_accuracy']:.0%}",
        ),
        (
            "tokens internalized",
            f"{s['tokens_internalized']:,} in {s['memories']} memories",
            "",
        ),
        (
            "internalization time",
            f"{s['internalize_seconds']:.0f} s ({s['internalize_tokens_per_second']:,.0f} tokens/s)",
            "",
        ),
        ("memory size", f"{s['memory_bytes'] / 2**20:.1f} MiB", ""),
        ("time per agent step", f"{s['seconds_per_step']:.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{'':<{width}}  {'with LoRA memory':<34}  prompt-growing agent",
        "-" * (width + 60),
    ]
    lines += [f"{name:<{width}}  {ours:<34}  {other}" for name, ours, other in rows]
    return "\n".join(lines)


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
