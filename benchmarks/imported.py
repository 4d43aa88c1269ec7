"""Published checkpoints imported: our factors against those the published code computed.

Reads the fixtures in ``tests/fixtures/published`` (made by the published Doc-to-LoRA and
Text-to-LoRA code on tiny random configurations of their architectures; see the README there),
imports each checkpoint with our readers and recomputes what their code computed:

* ``d2l_max_abs_diff``: our memory adapters against theirs, for one document through their
  ``internalize`` and one long document through their chunked path (tiny Gemma-2 and Qwen3
  bases), A and B in their convention (B divided by their alpha);
* ``t2l_max_abs_diff``: our Text-to-LoRA LoRA against their ``gen_lora`` for heads L, M and S,
  from a given embedding and from a description read by the task encoder;
* ``unsafe_pickle_refused``: a checkpoint whose pickle names a function to call is refused, and the
  function is not called;
* ``import_seconds``: how long each import takes (median of 5).

    python -m benchmarks.imported --json runs/imported.json
"""

from __future__ import annotations

import json
import pickle
import statistics
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from benchmarks.report import ROOT, machine, parse_args, write_results
from d2l_memory import AdapterHost, LoRAAdapter, ModuleKey
from d2l_memory.errors import CheckpointError
from d2l_memory.internalize import Internalizer
from d2l_memory.published_import import import_d2l_checkpoint
from t2l_skills import CLSEncoder, import_t2l_checkpoint

FIXTURES = ROOT / "tests" / "fixtures" / "published"
D2L_KINDS = ("gemma2", "qwen3")
T2L_HEADS = ("L", "M", "S")
TARGET = 1e-5


def max_factor_diff(adapter: LoRAAdapter, expected: Mapping[str, torch.Tensor], label: str, config: Any) -> float:
    """Largest difference between a memory's factors and theirs: A [r, d_in] as is, B [d_out, r]
    divided by their alpha against their B [r, d_out] (``expected`` holds ``label.module.A|B``, [L, R, d])."""
    worst = 0.0
    for target in config.targets:
        name = target.module.split(".")[-1]
        A, B = expected[f"{label}.{name}.A"], expected[f"{label}.{name}.B"]
        for layer in range(config.num_layers):
            w = adapter.weights[ModuleKey(layer, target.module)]
            worst = max(
                worst, (w.A - A[layer]).abs().max().item(), (w.B / config.alpha - B[layer].T).abs().max().item()
            )
    return worst


def max_lora_diff(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    expected: Mapping[str, torch.Tensor],
    config: Any,
    prefix: str = "",
) -> float:
    """Largest difference between generated factors (row 0) and their PEFT state dict (B unscaled)."""
    worst = 0.0
    for target in config.targets:
        A, B = factors[target.module]
        for layer in range(config.num_layers):
            key = f"{prefix}base_model.model.model.layers.{layer}.{target.module}"
            worst = max(
                worst,
                (A[0, layer] - expected[f"{key}.lora_A.weight"]).abs().max().item(),
                (B[0, layer] / config.scale - expected[f"{key}.lora_B.weight"]).abs().max().item(),
            )
    return worst


def d2l_diffs() -> dict[str, float]:
    diffs = {}
    for kind in D2L_KINDS:
        folder = FIXTURES / f"d2l-{kind}"
        documents = json.loads((folder / "documents.json").read_text())
        expected = load_file(folder / "expected.safetensors")
        hypernet = import_d2l_checkpoint(folder / "pytorch_model.bin", published_affix_ids=False)  # tiny tokenizer
        host = AdapterHost.from_pretrained(folder / "base", attn_implementation="eager")
        for label, chunk_tokens in (("short", None), ("long", documents["chunk_tokens"])):
            internalizer = Internalizer(host, hypernet, adapter_dtype=torch.float32, chunk_tokens=chunk_tokens)
            memory = internalizer.internalize(documents[label])
            diffs[f"{kind}/{label}"] = max_factor_diff(memory.adapter, expected, label, hypernet.config)
    return diffs


def t2l_diffs() -> dict[str, float]:
    encoder = CLSEncoder(FIXTURES / "t2l-encoder")
    description = json.loads((FIXTURES / "t2l-encoder" / "descriptions.json").read_text())[0]
    diffs = {}
    for head in T2L_HEADS:
        folder = FIXTURES / f"t2l-{head}"
        expected = load_file(folder / "expected.safetensors")
        model = import_t2l_checkpoint(folder)
        with torch.no_grad():
            diffs[f"{head}/embedding"] = max_lora_diff(model(expected["embedding"]), expected, model.config)
            described = model(encoder.encode([description]))
        diffs[f"{head}/description"] = max_lora_diff(described, expected, model.config, prefix="described.")
    return diffs


class _MakesADirectory:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.mkdir, (self.path,))


def unsafe_pickle_refused() -> bool:
    """A copy of a fixture checkpoint whose pickle would make a directory when unpickled: refused,
    and the directory never made."""
    with tempfile.TemporaryDirectory() as scratch:
        witness = Path(scratch) / "made-by-the-pickle"
        tampered = Path(scratch) / "pytorch_model.bin"
        original = FIXTURES / "d2l-gemma2" / "pytorch_model.bin"
        with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as target:
            for item in source.infolist():
                data = source.read(item)
                if item.filename.endswith("/data.pkl"):
                    data = pickle.dumps({"hypernet_config": _MakesADirectory(witness)}, protocol=2)
                target.writestr(item, data)
        try:
            import_d2l_checkpoint(tampered)
        except CheckpointError:
            return not witness.exists()
        return False


def import_seconds(repeats: int = 5) -> dict[str, float]:
    runs = {
        f"d2l-{kind}": lambda k=kind: import_d2l_checkpoint(FIXTURES / f"d2l-{k}" / "pytorch_model.bin")
        for kind in D2L_KINDS
    }
    runs |= {f"t2l-{head}": lambda h=head: import_t2l_checkpoint(FIXTURES / f"t2l-{h}") for head in T2L_HEADS}
    seconds = {}
    for name, run in runs.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds[name] = round(statistics.median(times), 4)
    return seconds


def table(results: Mapping[str, Any]) -> str:
    lines = [
        "## Published checkpoints imported (`python -m benchmarks.imported`)",
        "",
        f"Fixtures made by the published code on tiny random configurations (see tests/fixtures/published); {results['machine']}.",
        "",
        "| check | result | target |",
        "| --- | --- | --- |",
        f"| Doc-to-LoRA factors, largest difference ({', '.join(results['d2l_diffs'])}) | {results['d2l_max_abs_diff']:.1e} | ≤ {TARGET:.0e} |",
        f"| Text-to-LoRA factors, largest difference ({', '.join(results['t2l_diffs'])}) | {results['t2l_max_abs_diff']:.1e} | ≤ {TARGET:.0e} |",
        f"| a pickle naming code to run is refused, the code not run | {str(results['unsafe_pickle_refused']).lower()} | true |",
        "| import time per checkpoint (median of 5) | "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in results["import_seconds"].items())
        + " | — |",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args(__doc__)
    torch.manual_seed(args.seed)
    d2l, t2l = d2l_diffs(), t2l_diffs()
    results = {
        "machine": machine(),
        "d2l_max_abs_diff": max(d2l.values()),
        "t2l_max_abs_diff": max(t2l.values()),
        "d2l_diffs": d2l,
        "t2l_diffs": t2l,
        "unsafe_pickle_refused": unsafe_pickle_refused(),
        "import_seconds": import_seconds(),
    }
    write_results("imported", results, table(results), args.json, markdown=not args.no_markdown)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
