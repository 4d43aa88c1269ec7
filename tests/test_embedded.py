"""The embedded default model's parts: tokenizer, prompt formats, training data, training loop, loading.

None of these needs the shipped checkpoint: training runs use a tiny config for a few steps.
"""

from __future__ import annotations

import random
import re
from itertools import groupby, islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from d2l_lab import pretrain
from d2l_lab.chat import encode_chat as encode_any_chat
from d2l_lab.evaluate import greedy_answers
from d2l_lab.formats import qa_messages, task_messages
from d2l_lab.pretrain import (
    IGNORE,
    MIXTURE,
    Settings,
    WorldStream,
    build,
    encode_chat,
    max_facts,
    pack,
    parse_args,
    sample_chat,
    task_chat,
    train,
)
from d2l_lab.tokenizer import ASSISTANT, END, train_tokenizer
from d2l_lab.world import (
    RELATIONS,
    TASK_FAMILIES,
    make_fact_document,
    relations_named,
    train_families,
    vocabulary_texts,
)
from d2l_memory import embedded
from d2l_memory.errors import D2LMemoryError, ModelError


@pytest.fixture(scope="module")
def world_tokenizer():
    return train_tokenizer(seed=0)


@pytest.fixture(scope="module")
def trained_run(world_tokenizer, tmp_path_factory):
    """A tiny model trained for 30 steps; its run folder and training progress."""
    out = tmp_path_factory.mktemp("run")
    world_tokenizer.save_pretrained(out / "tokenizer")  # spares the run training its own
    progress = train(Settings(out=out, steps=30, size="tiny", batch_size=2, log_every=5))
    return out, progress


# --- tokenizer and formats ---------------------------------------------------------------------------


def test_every_world_word_is_one_token(world_tokenizer):
    words = {word for text in vocabulary_texts() for word in re.findall(r"(?<![\w])[A-Za-z]+(?![\w])", text)}
    words = {word for word in words if not (word.isupper() and len(word) > 1)}  # codes are spelt letter by letter
    assert len(words) > 500
    for word in words:
        assert len(world_tokenizer.encode(" " + word, add_special_tokens=False)) == 1, word
        assert len(world_tokenizer.encode(word, add_special_tokens=False)) == 1, word
    assert 2000 <= len(world_tokenizer) <= 4096


def test_any_text_encodes_without_unknowns(world_tokenizer):
    text = 'Ünïcödé ✓ 🙂 {"k": [1, 2]}\n\tK7Q2 4821'
    ids = world_tokenizer.encode(text, add_special_tokens=False)
    assert world_tokenizer.decode(ids) == text
    assert world_tokenizer.tokenize(" 4821") == ["Ġ", "4", "8", "2", "1"]
    assert world_tokenizer.tokenize(" K7Q2") == ["Ġ", "K", "7", "Q", "2"]


def test_chat_template_round_trip(world_tokenizer):
    document = make_fact_document(1, 3)
    messages = qa_messages(document.text, document.questions)
    rendered = world_tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered.startswith(
        f"<bos><|user|> {document.text}\n\n{document.questions[0].question}<|end|><|assistant|> "
    )
    ids = world_tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"]
    assert world_tokenizer.decode(ids) == rendered
    assert encode_chat(world_tokenizer, messages).input_ids == ids  # training sees exactly what the template renders

    prompt = world_tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|end|><|assistant|>")
    assert world_tokenizer.eos_token == END


def test_pretraining_encodes_chats_as_the_general_chat_encoding_does(world_tokenizer):
    rng = random.Random(0)
    for _ in range(40):
        messages = sample_chat(rng, 1.0)
        example = encode_chat(world_tokenizer, messages, max_tokens=10_000)
        assert (example.input_ids, example.loss_mask) == encode_any_chat(world_tokenizer, messages)


def test_formats():
    document = make_fact_document(2, 2)
    qas = document.questions
    assert qa_messages(document.text, qas) == [
        {"role": "user", "content": f"{document.text}\n\n{qas[0].question}"},
        {"role": "assistant", "content": qas[0].answer},
        {"role": "user", "content": qas[1].question},
        {"role": "assistant", "content": qas[1].answer},
    ]
    assert qa_messages(None, qas[:1])[0]["content"] == qas[0].question
    assert task_messages("Count the words.", [("cat dog", "2")], "fox", "1") == [
        {"role": "user", "content": "Count the words.\n\nInput: cat dog\nOutput: 2\nInput: fox"},
        {"role": "assistant", "content": "1"},
    ]
    assert task_messages(None, [], "fox") == [{"role": "user", "content": "Input: fox"}]


# --- training data -------------------------------------------------------------------------------------


def test_loss_mask_covers_exactly_the_answers(world_tokenizer):
    document = make_fact_document(3, 4)
    messages = qa_messages(document.text, document.questions)
    example = encode_chat(world_tokenizer, messages)
    end = world_tokenizer.convert_tokens_to_ids(END)

    pairs = zip(example.input_ids, example.loss_mask)
    masked_runs = [[token for token, _ in run] for wanted, run in groupby(pairs, key=lambda pair: pair[1]) if wanted]
    assert masked_runs == [
        world_tokenizer.encode(" " + qa.answer, add_special_tokens=False) + [end] for qa in document.questions
    ]

    rows = list(pack(iter([example, example, example]), seq_len=2 * len(example.input_ids) + 1, pad_id=0))
    assert len(rows) == 1  # the third example starts a row that is never completed
    targets, positions = rows[0]["targets"], rows[0]["position_ids"]
    wanted = torch.tensor(example.loss_mask[1:] + [False])  # target t is token t + 1
    assert torch.equal(targets[: len(example.input_ids)] != IGNORE, wanted)
    assert torch.equal(targets[: len(example.input_ids)][wanted], torch.tensor(example.input_ids)[1:][wanted[:-1]])
    assert positions[len(example.input_ids)] == 0 and positions[-1] == 0  # each example and the padding restart
    assert (targets[-1] == IGNORE).item()


def test_long_chats_drop_whole_trailing_turns(world_tokenizer):
    document = make_fact_document(4, 16)
    messages = qa_messages(document.text, document.questions)
    full = encode_chat(world_tokenizer, messages, max_tokens=10_000)
    cut = encode_chat(world_tokenizer, messages, max_tokens=len(full.input_ids) - 1)
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
    assert cut.input_ids[-1] == world_tokenizer.convert_tokens_to_ids(END) and sum(cut.loss_mask) < sum(full.loss_mask)
    assert encode_chat(world_tokenizer, messages, max_tokens=20) is None


def test_mixture_uses_train_families_and_wordings_only():
    train_wordings = {d for family in train_families() for d in family.train_descriptions}
    all_wordings = {d for family in TASK_FAMILIES for d in family.descriptions}
    rng = random.Random(0)
    for _ in range(500):
        first_line = task_chat(rng, 0.5)[0]["content"].split("\n")[0]
        assert first_line.startswith("Input: ") or first_line in train_wordings
        assert first_line not in all_wordings - train_wordings
    assert (max_facts(0.0), max_facts(0.25), max_facts(0.5), max_facts(1.0)) == (4, 18, 32, 32)


def test_focus_share_gives_chats_over_the_focus_relations_only():
    focus = relations_named("boss, age")
    assert [relation.name for relation in focus] == ["boss", "age"]
    with pytest.raises(ValueError, match="unknown relation"):
        relations_named("boss,bos")

    def about_focus(chat: list[dict[str, str]]) -> bool:
        questions = [turn["content"].split("\n\n")[-1] for turn in chat[::2]]
        return all(re.fullmatch(r"(Who is the boss of|How old is) \w+\?", question) for question in questions)

    rng = random.Random(0)
    for _ in range(100):
        chat = sample_chat(rng, 1.0, focus, focus_share=1.0)
        assert about_focus(chat)
    early = [sample_chat(rng, 1.0, focus, focus_share=1.0, focus_progress=0.0) for _ in range(100)]
    assert max(len(chat) // 2 for chat in early) == max_facts(0.0)  # focus documents start small
    mixed = [sample_chat(random.Random(seed), 1.0, focus, focus_share=0.3) for seed in range(200)]
    assert 0.2 < sum(map(about_focus, mixed)) / len(mixed) < 0.45
    weights, makers = zip(*MIXTURE)
    unfocused = [sample_chat(random.Random(seed), 1.0, focus, focus_share=0.0) for seed in range(20)]
    mixture_only = [(rng := random.Random(seed), rng.choices(makers, weights)[0](rng, 1.0))[1] for seed in range(20)]
    assert unfocused == mixture_only  # a run without focus draws the very chats it drew before focus existed


def test_a_continued_stream_keeps_the_curriculum_for_focus_documents_only(world_tokenizer):
    assistant = world_tokenizer.convert_tokens_to_ids(ASSISTANT)

    def questions_per_chat(**options) -> list[int]:
        stream = WorldStream(world_tokenizer, seed=0, epoch=0, progress=SimpleNamespace(value=0.0), **options)
        return [example.input_ids.count(assistant) for example in islice(stream._examples(random.Random(0)), 200)]

    assert max(questions_per_chat()) == max_facts(0.0)  # from scratch, every document starts small
    assert max(questions_per_chat(continued=True)) > max_facts(0.0)
    boss = relations_named("boss")
    assert max(questions_per_chat(focus=boss, focus_share=1.0, continued=True)) == max_facts(0.0)


def test_cli_checks_the_focus_options():
    args = ["--out", "runs/x", "--steps", "1"]
    assert parse_args([*args, "--focus-relations", "boss", "--focus-share", "0.3"]).focus_relations == (
        relations_named("boss")
    )
    wrong_options = (
        ["--focus-relations", "bos", "--focus-share", "0.3"],
        ["--focus-relations", "boss,boss"],  # no share: would do nothing
        ["--focus-share", "0.3"],
        ["--init", "runs/no-such-model"],
    )
    for wrong in wrong_options:
        with pytest.raises(SystemExit):
            parse_args([*args, *wrong])


# --- training loop, checkpoints, loading -----------------------------------------------------------


def test_short_training_lowers_the_loss(trained_run):
    out, progress = trained_run
    losses = [record["loss"] for record in progress.history]
    assert progress.step == 30 and len(losses) == 6
    assert losses[-1] < losses[0] - 1.0
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "tokenizer.json").is_file()


def test_the_finished_run_is_probed_by_relation(trained_run):
    _, progress = trained_run
    (final,) = progress.probes
    assert final["step"] == 30 and set(final) == {"step", "probe"} | {f"probe/{r.name}" for r in RELATIONS}
    assert all(0.0 <= value <= 1.0 for name, value in final.items() if name != "step")


def test_init_continues_a_finished_model(trained_run, world_tokenizer, tmp_path, monkeypatch):
    out, _ = trained_run
    focus = relations_named("boss,boss")
    assert focus == relations_named("boss")  # a repeated name would make documents with two bosses per entity
    settings = Settings(
        out=tmp_path,
        steps=4,
        size="default",
        batch_size=2,
        init=out / "final",
        focus_relations=focus,
        focus_share=0.5,
        probe_every_minutes=None,
    )
    model, _, progress = build(settings, world_tokenizer)
    saved, _ = embedded.load_model(out / "final")
    assert progress.step == 0 and model.config.hidden_size == saved.config.hidden_size  # init's size, not --size
    assert torch.allclose(model.model.embed_tokens.weight, saved.model.embed_tokens.weight.float())

    monkeypatch.setattr(pretrain, "train_tokenizer", lambda seed: pytest.fail("trained a tokenizer: init has one"))
    continued = train(settings)
    assert continued.step == 4 and continued.probes == []
    assert embedded.load_model(tmp_path / "final")[1].get_vocab() == world_tokenizer.get_vocab()

    with pytest.raises(D2LMemoryError, match="started with --init"):  # it would follow the curriculum again
        build(Settings(out=tmp_path, steps=8, batch_size=2), world_tokenizer)
    with pytest.raises(D2LMemoryError, match="started without --init"):
        build(Settings(out=out, steps=40, batch_size=2, init=out / "final"), world_tokenizer)


def test_resume_continues_from_the_saved_step(trained_run, world_tokenizer):
    out, first = trained_run
    settings = Settings(out=out, steps=35, size="tiny", batch_size=2, log_every=5)
    model, _, progress = build(settings, world_tokenizer)
    saved, _ = embedded.load_model(out / "final")
    assert progress.step == 30 and progress.history == first.history
    assert torch.allclose(model.model.embed_tokens.weight, saved.model.embed_tokens.weight, atol=1e-3)

    resumed = train(settings)
    assert resumed.step == 35 and [r["step"] for r in resumed.history] == [5, 10, 15, 20, 25, 30, 35]


def test_batched_greedy_generation_matches_one_by_one(trained_run):
    model, tokenizer = embedded.load_model(trained_run[0] / "final")
    documents = [make_fact_document(5, 1), make_fact_document(6, 8), make_fact_document(7, 3)]
    chats = [qa_messages(document.text, document.questions[:1])[:-1] for document in documents]
    batched = greedy_answers(model, tokenizer, chats, max_new_tokens=4)
    assert batched == [greedy_answers(model, tokenizer, [chat], max_new_tokens=4)[0] for chat in chats]


def test_load_default_without_checkpoint(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(embedded, "DEFAULT_MODEL_DIR", tmp_path / "missing")
    assert not embedded.default_model_available()
    with pytest.raises(ModelError, match="not installed"):
        embedded.load_default()
