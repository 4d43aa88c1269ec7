"""The long-horizon agent on your own base model: a Hugging Face model id (or folder) plus
hypernetwork checkpoints trained for that model.

    python examples/your_model.py --model meta-llama/Llama-3.2-1B-Instruct \\
        --d2l runs/d2l-llama/final [--t2l runs/t2l-llama/final] [--device cuda]
    python examples/your_model.py --smoke    # a tiny random Llama and an untrained hypernetwork

Shows: loading any causal LM with ``transformers`` (hub access or a local folder), wrapping it in an
:class:`d2l_memory.AdapterHost`, and running :mod:`d2l_lab.long_task` through
:func:`integrations.agent_memory`. Hypernetworks are tied to the base model they were trained
on (its layer count and widths): train them with ``python -m d2l_lab.train_d2l --base ...`` and
``python -m d2l_lab.train_t2l --base ...`` (see docs/training.md). ``--smoke`` saves a random-weight
Llama and an untrained Doc-to-LoRA to a temp folder and loads them back through the same code,
so it only shows the plumbing: its answers are noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from d2l_lab.demo import table
from d2l_lab.long_task import MAX_ANSWER_TOKENS, LongTaskSettings, compare_with_baseline
from d2l_memory import AdapterHost
from d2l_memory.hypernet import DocToLoRA, HypernetConfig
from d2l_memory.testing import tiny_model, tiny_tokenizer
from integrations import D2LChatModel, agent_memory


def smoke_checkpoints(folder: Path) -> tuple[Path, Path]:
    """A random-weight Llama with its tokenizer, and an untrained Doc-to-LoRA for it, saved as a user's would be."""
    model, tokenizer = (
        tiny_model("llama", hidden_size=64, num_layers=2),
        tiny_tokenizer(),
    )
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    host = AdapterHost(model, tokenizer)
    config = HypernetConfig.for_model(host.layout, base_model="tiny-llama", latent_dim=32, num_latents=8, num_blocks=1)
    DocToLoRA(config).save(folder / "d2l")
    return folder / "model", folder / "d2l"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--model", help="a Hugging Face model id or folder, a .gguf file, or 'smollm2' (installed)")
    parser.add_argument(
        "--d2l",
        type=Path,
        help="a Doc-to-LoRA checkpoint folder trained for that model",
    )
    parser.add_argument(
        "--t2l",
        type=Path,
        default=None,
        help="a Text-to-LoRA checkpoint folder (optional)",
    )
    parser.add_argument(
        "--encoder", default="minilm", help="the T2L checkpoint's task encoder: minilm, base or a folder"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny random model, for the test suite")
    args = parser.parse_args(argv)
    if not args.smoke and (args.model is None or args.d2l is None):
        parser.error("give --model and --d2l (or --smoke)")
    with tempfile.TemporaryDirectory() as tmp:
        model_path, d2l = smoke_checkpoints(Path(tmp)) if args.smoke else (args.model, args.d2l)
        host = AdapterHost.from_pretrained(model_path, device=args.device)  # a folder, hub id, .gguf or "smollm2"
        with agent_memory(host, Path(tmp) / "store", d2l, args.t2l, encoder=args.encoder) as memory:
            settings = LongTaskSettings(
                pages=2 if args.smoke else args.pages,
                skill_queries=2 if args.t2l else 0,
                threshold_tokens=16 if args.smoke else 256,  # the tiny tokenizer knows few log words
            )
            chat = D2LChatModel(host=host, max_tokens=MAX_ANSWER_TOKENS)
            print(table(compare_with_baseline(memory, chat, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
