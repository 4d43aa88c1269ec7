"""Pretrain the embedded default model on the synthetic world.

    python -m d2l_lab.pretrain --out runs/base --device cuda --minutes 6 --compile

The model learns to read. It answers questions about the facts of a document
(prose or tool output), finds a needle in a long document, and follows a task
description with or without examples. The loss is on assistant tokens only:
the model never learns to predict a document, so it cannot memorise invented
facts and stays at chance closed-book.

Training runs for ``--steps`` steps (reproducible) or ``--minutes`` of
wall-clock time (for a fixed machine budget). Both define ``progress`` in
[0, 1], and everything that changes during training is a function of it: the
learning rate and the fact-count curriculum. Tiny models learn to bind entity
AND relation only if they first master documents with few facts, so fact
documents grow from 1-4 facts to 1-32 facts over the first half of training;
they also draw their facts from a random subset of the relations, so that
guessing the answer from its type fails (see ``fact_chat``).

``--init`` continues from a finished model instead (its tokenizer and size, a
fresh optimizer that warms up to ``--lr`` again, so give a lower one, and no
curriculum), and ``--focus-relations`` with ``--focus-share``
gives a share of the chats to documents over a few relations only: the way to
mend a relation the model reads badly. Focus documents follow the curriculum
from few facts even in a continued run, because a skill the model lacks is
learnt on small documents first: with half its chats over "boss" documents
growing from 1-4 facts, 35 CPU-minutes took the 6-minute H100 model from 0.00 to 0.69
on "who is the boss?" (probe), while 30% of chats at 1-32 facts from the start
had not moved it in 15.
Every ``--probe-every-minutes`` and at the end, the run scores in-context QA on
fixed validation documents, by relation, and logs it. A continued base needs
its hypernetworks retrained: they read its activations.

Rows are 512 tokens, the model's native window, with several examples packed
per row. Each example keeps its own positions and attends only to itself:
transformers turns position ids that restart at 0 into a block-diagonal mask.

The run is resumable: ``OUT/train_state/`` holds the model config and the state
that every trainer here writes (:mod:`d2l_lab.training`: weights, optimizer and
the step record in one safetensors file, replaced whole), saved every few minutes
and on exit; rerunning the same command continues from it.
The data stream is a function of (seed, worker, step the run started at), so
there is no other random state to save. The finished model goes to ``OUT/final/``
as fp16 safetensors together with its tokenizer.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from d2l_lab.evaluate import accuracy, accuracy_by_group, qa_exact_matches
from d2l_lab.formats import Message, qa_messages, task_messages
from d2l_lab.tokenizer import ASSISTANT, BOS, END, USER, train_tokenizer
from d2l_lab.training import Progress, cosine_decay, load_state, mixed_precision, read_record, save_state
from d2l_lab.world import (
    QA,
    RELATIONS,
    Relation,
    make_fact_document,
    make_json_document,
    make_log_document,
    make_needle_document,
    make_table_document,
    relations_named,
    train_families,
)
from d2l_memory.errors import D2LMemoryError

SEQ_LEN = 512
"""The native window: every row is this long, and documents are drawn to fill up to it."""

IGNORE = -100
"""Target of a position that carries no loss (prompts, padding)."""

# --- model -----------------------------------------------------------------------------------------

MODEL_SIZES: dict[str, dict[str, int]] = {
    "default": {
        "hidden_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "intermediate_size": 704,
    },
    "small": {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 352,
    },
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 176,
    },
}
"""``default`` is the shipped model (about 5M parameters); the others are for CPU checks and tests."""


def model_config(tokenizer: PreTrainedTokenizerFast, size: str = "default") -> LlamaConfig:
    """A Llama config for ``tokenizer``'s vocabulary and special tokens.

    Embeddings are tied: the main skill is copying a document token into the
    answer, which tied input/output embeddings make natural, and it saves a
    vocabulary-sized matrix (an untied variant trained on an H100 made the very
    same errors). ``max_position_embeddings`` is 2048 although the model trains
    at 512, so long documents can later be read in chunks.
    """
    shape = MODEL_SIZES[size]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        max_position_embeddings=2048,
        rope_theta=10_000.0,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **shape,
    )


# --- examples: chats and their loss masks ------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """Token ids of one chat and, per token, whether the model is trained to produce it."""

    input_ids: list[int]
    loss_mask: list[bool]


def encode_chat(
    tokenizer: PreTrainedTokenizerFast, messages: Sequence[Message], max_tokens: int = SEQ_LEN
) -> Example | None:
    """Tokenize (user, assistant) pairs exactly as the chat template renders them.

    The loss mask covers each answer and its ``<|end|>`` (so the model learns
    to stop). Pairs that would overflow ``max_tokens`` are dropped from the end;
    if not even the first pair fits, there is no example (``None``).

    The ids and mask are those :func:`d2l_lab.chat.encode_chat` gives (a test holds the two
    equal on the training mixture), but built from this tokenizer's own template
    (:data:`~d2l_lab.tokenizer.CHAT_TEMPLATE`) with one tokenizer call, where the general function
    renders the template twice per turn: 0.5 ms a chat against 30 ms on a 2-core CPU, which would
    add most of a CPU step again and leave a GPU run waiting on its data workers.
    """
    bos, user, assistant, end = tokenizer.convert_tokens_to_ids([BOS, USER, ASSISTANT, END])
    contents = [
        encoding.ids
        for encoding in tokenizer.backend_tokenizer.encode_batch(
            [" " + message["content"] for message in messages], add_special_tokens=False
        )
    ]
    input_ids, loss_mask = [bos], [False]
    for question, answer in zip(contents[::2], contents[1::2]):
        pair = [user, *question, end, assistant, *answer, end]
        if len(input_ids) + len(pair) > max_tokens:
            break
        input_ids += pair
        loss_mask += [False] * (len(question) + 3) + [True] * (len(answer) + 1)
    return Example(input_ids, loss_mask) if len(input_ids) > 1 else None


# --- the training mixture ----------------------------------------------------------------------------

FIRST_MAX_FACTS, LAST_MAX_FACTS, CURRICULUM_END = 4, 32, 0.5
MAX_NEEDLE_WORDS = 380
"""About 480 tokens of filler: with the question and answer, a needle chat just fits the window."""

TRAIN_FAMILIES = train_families()


def max_facts(progress: float) -> int:
    """Curriculum: fact documents hold 1..max_facts(progress) facts, growing linearly to 32 at half-time."""
    return round(FIRST_MAX_FACTS + (LAST_MAX_FACTS - FIRST_MAX_FACTS) * min(1.0, progress / CURRICULUM_END))


def _shuffled(rng: random.Random, questions: Sequence[QA]) -> list[QA]:
    """Questions in random order, so the first question (the one right after the document) can be any fact."""
    return rng.sample(list(questions), len(questions))


def fact_chat(rng: random.Random, progress: float) -> list[Message]:
    """A prose document over a random subset of the relations, with all its questions.

    With all twelve relations, most facts in a small document have different
    answer types, and "the last place (or colour, or number) in the document"
    is usually right: an H100 run on such documents plateaued on exactly that
    shortcut. With few relations many facts share a type (with one relation,
    every fact does), so only binding the question's entity AND relation to
    the right sentence answers them.
    """
    relations = rng.sample(RELATIONS, rng.randint(1, len(RELATIONS)))
    document = make_fact_document(rng, rng.randint(1, max_facts(progress)), relations=relations)
    return qa_messages(document.text, _shuffled(rng, document.questions))


_TOOL_MAKERS = (
    make_json_document,
    make_log_document,
    lambda rng, n_facts: make_table_document(rng, n_facts, "markdown"),
    lambda rng, n_facts: make_table_document(rng, n_facts, "csv"),
)


def tool_chat(rng: random.Random, progress: float) -> list[Message]:
    document = rng.choice(_TOOL_MAKERS)(rng, rng.randint(1, max_facts(progress)))
    return qa_messages(document.text, _shuffled(rng, document.questions))


def needle_chat(rng: random.Random, progress: float) -> list[Message]:
    document = make_needle_document(rng, rng.randint(10, MAX_NEEDLE_WORDS), rng.random(), rng.randint(1, 3))
    return qa_messages(document.text, _shuffled(rng, document.questions))


def task_chat(rng: random.Random, progress: float) -> list[Message]:
    """A train-family task shown as description only, description and 1-3 examples, or 1-3 examples only.

    Held-out families and held-out descriptions never appear: Text-to-LoRA is
    evaluated on them.
    """
    family = rng.choice(TRAIN_FAMILIES)
    style = rng.choice(("description", "both", "examples"))
    description = rng.choice(family.train_descriptions) if style != "examples" else None
    n_examples = rng.randint(1, 3) if style != "description" else 0
    examples = [family.make_example(rng) for _ in range(n_examples)]
    query, output = family.make_example(rng)
    return task_messages(description, examples, query, output)


MIXTURE: tuple[tuple[float, Callable[[random.Random, float], list[Message]]], ...] = (
    (0.50, fact_chat),
    (0.15, tool_chat),
    (0.15, needle_chat),
    (0.20, task_chat),
)


def sample_chat(
    rng: random.Random,
    progress: float,
    focus: Sequence[Relation] = (),
    focus_share: float = 0.0,
    focus_progress: float | None = None,
) -> list[Message]:
    """A chat from the mixture or, with probability ``focus_share``, a document over ``focus`` only.

    Focus documents follow the curriculum at ``focus_progress`` (default: ``progress``).
    """
    if focus_share > 0 and rng.random() < focus_share:
        n_facts = rng.randint(1, max_facts(progress if focus_progress is None else focus_progress))
        document = make_fact_document(rng, n_facts, relations=focus)
        return qa_messages(document.text, _shuffled(rng, document.questions))
    weights, makers = zip(*MIXTURE)
    return rng.choices(makers, weights=weights)[0](rng, progress)


# --- packing and the data stream ---------------------------------------------------------------------


def pack(examples: Iterator[Example], seq_len: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Greedily pack examples into rows of ``seq_len`` tokens, padding each row's tail.

    ``targets[t]`` is the token at ``t + 1`` where the loss mask wants it,
    else IGNORE. ``position_ids`` restart at 0 for every example (and for the
    padding), which is what makes each example attend only to itself.
    """
    input_ids: list[int] = []
    targets: list[int] = []
    positions: list[int] = []
    for example in examples:
        if len(input_ids) + len(example.input_ids) > seq_len:
            n_pad = seq_len - len(input_ids)
            yield {
                "input_ids": torch.tensor(input_ids + [pad_id] * n_pad),  # [seq_len]
                "targets": torch.tensor(targets + [IGNORE] * n_pad),  # [seq_len]
                "position_ids": torch.tensor(positions + list(range(n_pad))),  # [seq_len]
            }
            input_ids, targets, positions = [], [], []
        input_ids += example.input_ids
        targets += [token if wanted else IGNORE for token, wanted in zip(example.input_ids[1:], example.loss_mask[1:])]
        targets.append(IGNORE)  # the last token predicts the next example's <bos>: no loss
        positions += range(len(example.input_ids))


class WorldStream(IterableDataset):
    """An endless stream of packed rows drawn from the training mixture.

    Each DataLoader worker draws from its own RNG seeded by (seed, worker,
    epoch), where epoch is the step the run started from, so a resumed run
    sees new data. ``progress`` is shared memory the training loop updates, so
    workers follow the curriculum; with ``continued``, only focus documents do.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerFast,
        seed: int,
        epoch: int,
        progress: Any,
        focus: Sequence[Relation] = (),
        focus_share: float = 0.0,
        continued: bool = False,
        seq_len: int = SEQ_LEN,
    ) -> None:
        self.tokenizer, self.seed, self.epoch, self.progress, self.seq_len = tokenizer, seed, epoch, progress, seq_len
        self.focus, self.focus_share, self.continued = tuple(focus), focus_share, continued

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        rng = random.Random(f"{self.seed}/{worker.id if worker else 0}/{self.epoch}")
        return pack(self._examples(rng), self.seq_len, self.tokenizer.pad_token_id)

    def _examples(self, rng: random.Random) -> Iterator[Example]:
        while True:
            run = self.progress.value
            chat = sample_chat(rng, 1.0 if self.continued else run, self.focus, self.focus_share, focus_progress=run)
            example = encode_chat(self.tokenizer, chat, self.seq_len)
            if example is not None:
                yield example


# --- the probe: in-context QA by relation, logged during training ------------------------------------

PROBE_DOCUMENTS, PROBE_MAX_FACTS = 64, 8


def probe_items() -> list[tuple[str, QA]]:
    """Fixed validation questions from a stream that no training run or benchmark draws from, so
    probes of different runs and steps compare: 283 questions, 16-33 per relation, so one
    relation's score moves by about 0.1 from noise alone."""
    rng = random.Random("pretrain-probe")
    documents = [make_fact_document(rng, rng.randint(1, PROBE_MAX_FACTS)) for _ in range(PROBE_DOCUMENTS)]
    return [(document.text, qa) for document in documents for qa in document.questions]


def probe(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, items: Sequence[tuple[str, QA]]
) -> dict[str, float]:
    """Exact-match accuracy with the document in the prompt: ``probe`` overall, ``probe/<relation>`` by relation."""
    model.eval()
    matches = qa_exact_matches(model, tokenizer, items)
    model.train()
    by_relation = accuracy_by_group([qa.fact.relation.name for _, qa in items], matches)
    return {"probe": accuracy(matches)} | {f"probe/{name}": score for name, score in by_relation.items()}


# --- optimisation ----------------------------------------------------------------------------------


@dataclass
class Settings:
    """Everything a run needs; the CLI fills it, tests build it directly."""

    out: Path
    device: str = "cpu"
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    seed: int = 0
    compile: bool = False
    size: str = "default"
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: float = 0.02
    """Fraction of progress spent warming the learning rate up."""
    workers: int | None = None
    save_every_minutes: float = 3.0
    log_every: int = 20
    init: Path | None = None
    """A finished model (a ``final/`` folder) to continue from instead of random weights."""
    focus_relations: tuple[Relation, ...] = ()
    focus_share: float = 0.0
    """Share of chats that are fact documents over ``focus_relations`` only."""
    probe_every_minutes: float | None = 5.0
    """Minutes between probes of in-context QA by relation (:func:`probe`); 0 probes only the
    finished model, None never probes."""

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps or minutes")
        if not 0.0 <= self.focus_share <= 1.0 or (self.focus_share > 0) != bool(self.focus_relations):
            raise ValueError("focus relations need a focus share in (0, 1], and a focus share needs relations")
        if self.init is not None and not (self.init / "config.json").is_file():
            raise ValueError(f"--init {self.init} is not a finished model: it has no config.json")
        cuda = self.device.startswith("cuda")
        if self.batch_size is None:
            self.batch_size = 256 if cuda else 8
        if self.workers is None:
            self.workers = max(1, (os.cpu_count() or 1) - 2) if cuda else 0  # leave cores to the main process

    @property
    def schedule(self) -> Progress:
        """Progress by step, or by training time under a budget of ``minutes`` (then ``steps`` is None)."""
        return Progress(self.steps or 0, self.minutes)


def learning_rate(progress: float, peak: float, warmup: float) -> float:
    """The shared cosine decay, to a tenth of the peak, under a linear warm-up over the first
    ``warmup`` of progress (not a number of steps: a run on a clock budget does not know its steps)."""
    return peak * min(1.0, progress / warmup) * cosine_decay(progress, floor=0.1)


def make_optimizer(model: torch.nn.Module, settings: Settings) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": settings.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), fused=settings.device.startswith("cuda"))


# --- checkpoints -----------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """Where a run stands and what it logged; saved with the training state (:mod:`d2l_lab.training`)."""

    step: int = 0
    seconds: float = 0.0
    """Training time so far, not counting start-up and the first (compiling) step."""
    tokens: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """Training loss and answer-token accuracy, every ``log_every`` steps."""
    probes: list[dict[str, float]] = field(default_factory=list)
    """In-context QA on the probe documents (:func:`probe`), with the step it was taken at."""

    def fraction(self, settings: Settings) -> float:
        """The run's progress in [0, 1], by the shared measure (:class:`d2l_lab.training.Progress`)."""
        return settings.schedule.at(self.step, self.seconds)


def save_progress(
    directory: Path,
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    progress: RunRecord,
    init: Path | None,
) -> None:
    """The model's config, then the shared training state (one file, replaced whole)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "config.json").exists():  # it never changes: written once, before any state
        model.config.to_json_file(directory / "config.json.partial")
        os.replace(directory / "config.json.partial", directory / "config.json")
    save_state(
        directory,
        model,
        optimizer,
        progress.step,
        progress.seconds,
        {
            "tokens": progress.tokens,
            "history": progress.history,
            "probes": progress.probes,
            "init": str(init.resolve()) if init is not None else None,
        },
    )


def load_tokenizer(out: Path, seed: int, init: Path | None = None) -> PreTrainedTokenizerFast:
    """The run's tokenizer: ``init``'s, or trained, on the first start and saved, so a resumed run uses the same one."""
    directory = out / "tokenizer"
    if not (directory / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(init) if init is not None else train_tokenizer(seed)
        tokenizer.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def build(
    settings: Settings, tokenizer: PreTrainedTokenizerFast
) -> tuple[LlamaForCausalLM, torch.optim.AdamW, RunRecord]:
    """The model in ``OUT/train_state`` with its optimizer and progress, else ``init``'s or a fresh one."""
    state = settings.out / "train_state"
    torch.manual_seed(settings.seed)
    record = read_record(state)
    if record:
        _check_same_start(settings, record.get("init"))
        model = LlamaForCausalLM(LlamaConfig.from_json_file(state / "config.json"))
    elif settings.init is not None:
        model = LlamaForCausalLM.from_pretrained(settings.init, dtype=torch.float32)
    else:
        model = LlamaForCausalLM(model_config(tokenizer, settings.size))
    model = model.to(settings.device)
    optimizer = make_optimizer(model, settings)
    step, seconds = load_state(state, model, optimizer)
    progress = (
        RunRecord(step, seconds, record["tokens"], record["history"], record.get("probes", []))
        if record
        else RunRecord()
    )
    return model, optimizer, progress


def _check_same_start(settings: Settings, started_from: str | None) -> None:
    """A run resumes only as it started: a continued run drops the curriculum, a run from scratch follows it."""
    given = str(settings.init.resolve()) if settings.init is not None else None
    if given != started_from:
        how = f"with --init {started_from}" if started_from else "without --init"
        raise D2LMemoryError(
            f"{settings.out} holds a run started {how}: resume it the same way, or start in a new folder"
        )


# --- the training loop -----------------------------------------------------------------------------


def train(settings: Settings) -> RunRecord:
    """Train (or resume) until progress reaches 1, then write ``OUT/final``; returns the run's progress."""
    cuda = settings.device.startswith("cuda")
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
    tokenizer = load_tokenizer(settings.out, settings.seed, settings.init)
    model, optimizer, progress = build(settings, tokenizer)
    model.train()
    body = torch.compile(model.model) if settings.compile else model.model  # same parameters, compiled forward
    probe_set = probe_items()

    shared_progress = multiprocessing.RawValue("d", progress.fraction(settings))  # the workers' curriculum
    loader = DataLoader(
        WorldStream(
            tokenizer,
            settings.seed,
            progress.step,
            shared_progress,
            settings.focus_relations,
            settings.focus_share,
            continued=settings.init is not None,
        ),
        batch_size=settings.batch_size,
        num_workers=settings.workers,
        pin_memory=cuda,
        persistent_workers=settings.workers > 0,
        prefetch_factor=4 if settings.workers > 0 else None,
    )
    print(
        f"{model.num_parameters() / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}, "
        f"{settings.batch_size} x {SEQ_LEN} tokens per step, starting at step {progress.step}"
    )

    def log_probe() -> float:
        """Probe and log; returns the seconds it took, which are not training time."""
        if progress.probes and progress.probes[-1]["step"] == progress.step:
            return 0.0  # this step is probed already (a periodic probe on the last step, or a rerun)
        start = time.monotonic()
        scores = probe(model, tokenizer, probe_set)
        progress.probes.append({"step": progress.step, **scores})
        by_relation = sorted((score, name.removeprefix("probe/")) for name, score in scores.items() if "/" in name)
        tqdm.write(
            f"step {progress.step}: in-context QA {scores['probe']:.3f}; weakest "
            + ", ".join(f"{name} {score:.2f}" for score, name in by_relation[:4])
        )
        return time.monotonic() - start

    bar = tqdm(
        total=100.0,
        initial=100 * shared_progress.value,
        unit="%",
        bar_format="{l_bar}{bar}| {n:.1f}% [{elapsed}<{remaining}{postfix}]",
        mininterval=1.0,
    )
    sums = torch.zeros(3, device=settings.device)  # loss sum, correct answer tokens, answer tokens since the last log
    clock = last_save = last_log = last_probe = time.monotonic()
    tokens_at_log, first_step, data_wait = progress.tokens, progress.step, 0.0
    try:
        for batch in loader:
            data_wait += time.monotonic() - clock  # time the step waited for its batch: high when data-bound
            if progress.fraction(settings) >= 1.0:
                if settings.probe_every_minutes is not None:
                    log_probe()  # the finished model's figures
                break
            # Flat indices of the positions with a loss, found on the CPU: indexing with a device
            # mask would make the CPU wait for the GPU every step.
            answer_index = (batch["targets"].view(-1) != IGNORE).nonzero().squeeze(1)  # [N]
            input_ids, position_ids, answer_index, targets = (
                tensor.to(settings.device, non_blocking=True)
                for tensor in (
                    batch["input_ids"],
                    batch["position_ids"],
                    answer_index,
                    batch["targets"].view(-1)[answer_index],
                )
            )  # [B, T], [B, T], [N], [N]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(progress.fraction(settings), settings.lr, settings.warmup)

            with mixed_precision(settings.device):
                output = body(input_ids=input_ids, position_ids=position_ids, use_cache=False)
                hidden = output.last_hidden_state.flatten(0, 1)  # [B * T, H]
                logits = model.lm_head(hidden[answer_index])  # [N, V]: the head only where there is a loss
            loss = F.cross_entropy(logits.float(), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            n_answer = len(targets)
            sums += torch.stack(
                [loss.detach() * n_answer, (logits.argmax(-1) == targets).sum(), targets.new_tensor(n_answer)]
            )
            progress.step += 1
            progress.tokens += input_ids.numel()
            now = time.monotonic()
            if progress.step > first_step + 1:  # this process's first step compiles and warms up: not timed
                progress.seconds += now - clock
            clock = now
            shared_progress.value = progress.fraction(settings)

            if progress.step % settings.log_every == 0:
                loss_sum, correct, count = sums.tolist()
                record = {
                    "step": progress.step,
                    "loss": loss_sum / count,
                    "answer_accuracy": correct / count,
                    "tokens_per_s": (progress.tokens - tokens_at_log) / (now - last_log),
                    "data_wait": data_wait / (now - last_log),
                    "max_facts": max_facts(1.0 if settings.init is not None else shared_progress.value),
                    "lr": optimizer.param_groups[0]["lr"],
                }
                progress.history.append(record)
                bar.set_postfix(
                    step=record["step"],
                    loss=f"{record['loss']:.3f}",
                    acc=f"{record['answer_accuracy']:.3f}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                    facts=record["max_facts"],
                    refresh=False,
                )
                sums.zero_()
                tokens_at_log, last_log, data_wait = progress.tokens, now, 0.0
            bar.update(min(100.0, 100 * shared_progress.value) - bar.n)
            if now - last_save > 60 * settings.save_every_minutes:
                save_progress(settings.out / "train_state", model, optimizer, progress, settings.init)
                last_save = now
            if settings.probe_every_minutes and now - last_probe > 60 * settings.probe_every_minutes:
                probe_seconds = log_probe()
                clock = last_probe = time.monotonic()  # the probe's time is neither training time ...
                last_log += probe_seconds  # ... nor part of the logged throughput
    finally:
        bar.close()
        save_progress(settings.out / "train_state", model, optimizer, progress, settings.init)
    memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else ""
    print(
        f"step {progress.step}: {progress.tokens / 1e6:.0f}M tokens in {progress.seconds / 60:.1f} min "
        f"({progress.tokens / max(progress.seconds, 1e-9):.0f} tokens/s){memory}"
    )
    if progress.fraction(settings) >= 1.0:
        save_final(settings.out / "final", model, tokenizer)
    return progress


def save_final(directory: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    """The shippable checkpoint: fp16 safetensors, config, generation config and tokenizer."""
    model.to(torch.float16).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    print(f"saved {directory} ({sum(f.stat().st_size for f in directory.iterdir()) / 1e6:.1f} MB)")


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder: training state, log, final model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="train this many steps (reproducible)")
    budget.add_argument("--minutes", type=float, help="train this long, not counting start-up, compilation and probes")
    parser.add_argument("--batch-size", type=int, help="rows of 512 tokens per step (default: 256 on cuda, 8 on cpu)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer body")
    parser.add_argument(
        "--size", choices=sorted(MODEL_SIZES), default=Settings.size, help="model size preset (not with --init)"
    )
    parser.add_argument("--lr", type=float, default=Settings.lr, help="peak learning rate")
    parser.add_argument("--workers", type=int, help="data workers (default: cpu count - 2 on cuda, 0 on cpu)")
    parser.add_argument("--save-every-minutes", type=float, default=Settings.save_every_minutes)
    parser.add_argument(
        "--log-every", type=int, default=Settings.log_every, help="steps between progress-bar and log updates"
    )
    parser.add_argument(
        "--init", type=Path, help="continue from this finished model (a final/ folder); give a lower --lr"
    )
    parser.add_argument(
        "--focus-relations", default="", help="comma-separated relations (e.g. boss) that get documents of their own"
    )
    parser.add_argument("--focus-share", type=float, default=0.0, help="share of chats over --focus-relations")
    parser.add_argument(
        "--probe-every-minutes",
        type=float,
        default=Settings.probe_every_minutes,
        help="minutes between in-context QA probes by relation (0: only at the end)",
    )
    args = vars(parser.parse_args(argv))
    try:
        args["focus_relations"] = relations_named(args["focus_relations"])
        return Settings(**args)
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked; they tokenize one chat at a time
    train(parse_args(argv))


if __name__ == "__main__":
    main()
