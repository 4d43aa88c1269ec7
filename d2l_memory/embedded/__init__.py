"""The embedded default model: a small Llama pretrained on the synthetic world.

No pretrained model or hub is reachable, so the library ships its own base
model (trained by ``python -m d2l_memory.embedded.pretrain``). It reads a
document in its prompt and answers questions about it, which makes it the
Doc-to-LoRA teacher, and it follows task descriptions and examples, which makes
it the Text-to-LoRA base.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from d2l_memory.errors import ModelError
from d2l_memory.host import AdapterHost, resolve_device, resolve_dtype

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "checkpoint"
"""Where the shipped checkpoint lives: ``save_pretrained`` output of the model and its tokenizer.

Made by ``python -m d2l_memory.embedded.pretrain`` in seven runs, each but the first with ``--init``
on the one before:

1. ``--out runs/base --device cuda --minutes 6 --compile`` on one H100, from scratch;
2. ``--focus-relations boss --focus-share 0.5 --minutes 35 --lr 1e-3`` on the 2-core CPU (2,080
   steps of 8 rows): it had never learnt to answer "who is the boss of X?";
3. ``--focus-relations boss --focus-share 0.15 --minutes 24 --lr 3e-4`` on the CPU (1,505 steps);
4. ``--device cuda --compile --minutes 5 --lr 1e-3 --focus-relations boss --focus-share 0.15
   --probe-every-minutes 0`` on one H100: 3,423 steps of 256 rows, 449M tokens at 1.5M tokens/s;
5. ``--focus-relations born_in,lives_in,works_in --focus-share 0.4 --lr 1e-3 --minutes 40`` on the
   CPU in bfloat16 (4,005 steps, 16M tokens at 6.8k tokens/s): it confused the three place relations;
6. ``--focus-relations born_in,lives_in,works_in,favourite_colour,car_colour,favourite_fruit,boss
   --focus-share 0.2 --lr 3e-4 --minutes 20`` on the CPU (about 2,000 steps), which won back part of
   the 3-shot task accuracy that run 5 lost (0.70, then 0.78; 0.94 before run 5);
7. ``--device cuda --compile --minutes 6.5 --lr 6e-4 --focus-share 0.3 --workers 7
   --probe-every-minutes 0`` with run 6's relations on one H100, beside a twin at ``--lr 3e-4
   --focus-share 0.2`` (2,905 steps of 256 rows, 381M tokens). Near step 1,200 its training loss fell
   from 0.19 to 0.02 within 200 steps: it learnt to bind each value to its person, and in-context QA
   went to 1.00 at every fact count up to 16, with 3-shot tasks at 0.96. The twin, which saw the same
   documents at half the learning rate, never made that jump (8 facts 0.89, as before).

The clock sets each run's schedule, so a rerun lands near it, not on it."""

D2L_CHECKPOINT_DIR = Path(__file__).resolve().parent / "d2l_checkpoint"
"""The shipped Doc-to-LoRA hypernetwork for this model (3.2M parameters, fp16). It was first trained
for the base model of pretraining step 1, on one H100, by ``python -m d2l_memory.embedded.train_d2l
--device cuda --batch-size 32 --max-chunks 8`` with:

1. ``--out runs/g1 --minutes 7 --lr 1e-3 --workers 6 --interference-weight 0`` (sharing the GPU with
   a second run), then the same command resumed with ``--minutes 11 --workers 12``: 2,646 steps;
2. ``--init runs/g1/final --out runs/w1 --minutes 7.5 --lr 7e-4 --workers 6``: about 850 more steps;
3. ``--init runs/w1/final --out runs/focus --minutes 7.3 --lr 5e-4 --workers 7 --focus-relations
   age,door_code,locker_number,pet_count,badge_code --focus-share 0.3``: about 1,050 more steps;
4. ``--init runs/focus/final --out runs/focus2 --minutes 2.2 --lr 3e-4 --workers 14`` with the
   same focus options: about 250 more steps.

It was then carried over to each continued base by ``--init`` on the previous checkpoint with
``--lr 5e-4 --focus-relations boss,age,door_code,locker_number --focus-share 0.4``:

5. the base of pretraining step 3, on the CPU: ``--batch-size 16 --minutes 70`` (1,875 steps);
6. the base of pretraining step 4, on one H100: ``--device cuda --batch-size 32 --max-chunks 8
   --minutes 2.5`` (145 steps), then again from that at ``--lr 4e-4 --minutes 3.2`` (277 steps);
7. the base of pretraining step 4, on the CPU: ``--batch-size 16 --minutes 40`` (1,004 steps; ``--max-chunks``
   left at its default of 4, after which a needle in 8 windows was found less often than before);
8. the base of pretraining step 6, on the CPU in bfloat16: ``--batch-size 16 --max-chunks 8
   --minutes 40`` (1,200 steps);
9. the shipped base (pretraining step 7), the same command (1,355 steps), then from that
   ``--lr 3e-4 --interference-weight 3 --minutes 25`` (845 steps), which cut the in-context QA
   lost to unrelated memories from 6.2 to 2.1 points and found a needle in 8 windows 0.85 of the
   time, was 0.35 (``benchmarks.d2l`` seed 0).

A base model changed in any weight needs this retrained: it reads the base's activations (the hypernetwork
of step 4 on the base of pretraining step 3 answered 0.53 as often as reading; retrained, 0.92)."""

EMBEDDED_MODEL_ID = "d2l-memory/embedded-default"
"""The name adapters made on the embedded default record as their base model."""


def default_model_available() -> bool:
    """Whether the shipped checkpoint is present (it is absent in a fresh source checkout)."""
    return _is_checkpoint(DEFAULT_MODEL_DIR)


def load_default(device: str = "cpu", dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the shipped model (in eval mode, on ``device``, as ``dtype``) and its tokenizer."""
    if not default_model_available():
        raise ModelError(
            f"the embedded default model is not installed: no checkpoint in {DEFAULT_MODEL_DIR}. "
            "Train one with `python -m d2l_memory.embedded.pretrain --out DIR` and copy DIR/final there, "
            "or pass your own model."
        )
    return load_model(DEFAULT_MODEL_DIR, device, dtype)


def load_model(
    directory: str | Path, device: str = "cpu", dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a checkpoint written by the pretraining script (its ``final/`` folder)."""
    if not _is_checkpoint(Path(directory)):
        raise ModelError(f"{directory} is not a model checkpoint: it needs config.json and tokenizer.json")
    target = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=resolve_dtype(dtype))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    return model.to(target).eval(), tokenizer


def load_host(directory: str | Path = DEFAULT_MODEL_DIR, device: str = "cpu") -> AdapterHost:
    """An :class:`AdapterHost` over a checkpoint of the pretraining script (the shipped one by
    default), named :data:`EMBEDDED_MODEL_ID` when it is the shipped one and by its folder otherwise."""
    shipped = Path(directory) == DEFAULT_MODEL_DIR
    model, tokenizer = load_default(device) if shipped else load_model(directory, device)
    return AdapterHost(model, tokenizer, model_id=EMBEDDED_MODEL_ID if shipped else str(directory))


def _is_checkpoint(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / "tokenizer.json").is_file()


__all__ = [
    "D2L_CHECKPOINT_DIR",
    "DEFAULT_MODEL_DIR",
    "EMBEDDED_MODEL_ID",
    "default_model_available",
    "load_default",
    "load_host",
    "load_model",
]
