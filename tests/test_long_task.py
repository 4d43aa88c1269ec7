"""The long-horizon agent run on the embedded default with the shipped checkpoints, kept short."""

from __future__ import annotations

import json

import pytest

from d2l_lab.cli import main
from d2l_lab.long_task import (
    LongTaskSettings,
    log_pages,
    oracle_answers,
    plan_actions,
    run_long_task,
    skill_base_replies,
    summarize,
)
from integrations import D2LChatModel
from integrations.defaults import default_agent_memory

SETTINGS = LongTaskSettings(pages=6, question_every=3, noise_lines=12, skill_queries=2, prompt_budget=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    memory = default_agent_memory(tmp_path_factory.mktemp("long") / "store")
    model = D2LChatModel(host=memory.host, max_tokens=24)
    ours = run_long_task(memory, model, SETTINGS, progress=False)
    baseline = run_long_task(
        memory, model, SETTINGS.model_copy(update={"keep_outputs": True}), thread="b", progress=False
    )
    return memory, ours, baseline


def test_the_plan_reads_asks_and_learns_a_skill():
    actions = plan_actions(SETTINGS, log_pages(SETTINGS))
    kinds = [a.kind for a in actions]
    assert kinds.count("read") == 6 and kinds.count("ask") == 4 and kinds.count("apply") == 2
    assert kinds[kinds.index("learn") - 1] == "clear" and kinds[-1] == "ask"
    asks = [a for a in actions if a.kind == "ask"]
    assert [a.about for a in asks] == ["early", "late", "early", "late"] and asks[1].page == 2 and asks[3].page == 5
    assert plan_actions(SETTINGS, log_pages(SETTINGS)) == actions  # seeded


def test_short_runs_still_learn_a_skill_and_ask_nothing_they_cannot():
    short = LongTaskSettings(pages=3, question_every=10)
    kinds = [a.kind for a in plan_actions(short, log_pages(short))]
    assert "ask" not in kinds and kinds[:3] == ["read", "clear", "learn"]


def test_the_baseline_has_no_memory_and_calls_no_memory_tools(runs):
    memory, _, baseline = runs
    assert memory.records(("demo-user", "b")) == [] and baseline.tool_errors == 0
    assert all("reply" not in r for r in baseline.answers())  # only its prompt sizes are measured


def test_every_output_becomes_a_memory_and_questions_route_to_it(runs):
    memory, ours, _ = runs
    records = memory.records(("demo-user", "long-task"), kind="memory")
    assert ours.memories == len(records) == SETTINGS.pages
    assert ours.memory_tokens == sum(r.token_count for r in records) > SETTINGS.pages * 300
    for answer in ours.answers():
        if answer["about"] in ("early", "late"):  # only the memory of the page asked about is on
            assert answer["adapters"] == [records[answer["page"]].id]
        else:  # the skill alone
            assert len(answer["adapters"]) == 1 and answer["adapters"][0].startswith("skill-")
        assert answer["prompt_tokens"] < 40 and "reply" in answer


def test_the_prompt_stays_within_budget_while_the_baseline_grows(runs):
    memory, ours, baseline = runs
    assert max(ours.agent_prompt_tokens) <= SETTINGS.prompt_budget
    grown = baseline.agent_prompt_tokens
    assert grown[-1] > SETTINGS.pages * 300 and baseline.memories == 0
    summary = summarize(ours, baseline, oracle_answers(memory, SETTINGS, ours), skill_base_replies(memory, ours))
    assert summary["max_prompt_tokens"] < summary["baseline_max_prompt_tokens"] / 5
    assert summary["questions"] == 4 and summary["accuracy"] >= 0.5  # from memory; closed-book gets ~0
    assert summary["routing_accuracy"] == 1.0 and summary["tool_errors"] == 0
    assert summary["oracle_in_context_accuracy"] >= 0.5  # reading the page works on the embedded default


def test_demo_command_writes_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--pages", "2", "--question-every", "2", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pages"] == 2 and summary["memories"] == 2
    assert (out / "prompt_tokens.png").stat().st_size > 1000
    assert "largest prompt, tokens" in capsys.readouterr().out
