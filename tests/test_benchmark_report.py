"""The benchmarks' shared report: sections rewritten in place, the README's headline made from every benchmark's rows."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import headline_rows, headline_table, update_headline, update_section


def test_a_section_is_replaced_in_place_and_a_new_one_appended(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\nprose stays\n")
    update_section("a", "new", page)
    update_section("b", "added", page)
    assert page.read_text() == (
        "# Page\n\n<!-- a:start -->\nnew\n<!-- a:end -->\n\nprose stays\n\n<!-- b:start -->\nadded\n<!-- b:end -->\n"
    )


def test_a_run_rewrites_its_own_headline_rows_and_keeps_the_others(tmp_path):
    store, readme = tmp_path / "headline.json", tmp_path / "README.md"
    readme.write_text("intro\n<!-- headline:start -->\n<!-- headline:end -->\nrest\n")
    update_headline("agent", [("largest prompt", "9,798 tokens")], store=store, readme=readme)
    update_headline("host", [("swap", "0.081 ms")], store=store, readme=readme)
    update_headline("agent", [("largest prompt", "9,801 tokens")], store=store, readme=readme)
    assert json.loads(store.read_text()) == {
        "agent": [["largest prompt", "9,801 tokens"]],
        "host": [["swap", "0.081 ms"]],
    }
    table = "| what | figure |\n| --- | --- |\n| swap | 0.081 ms |\n| largest prompt | 9,801 tokens |"  # host first
    assert table == headline_table(headline_rows(store)) and f"\n{table}\n" in readme.read_text()
    with pytest.raises(ValueError, match="HEADLINE_ORDER"):
        update_headline("nameless", [("x", "1")], store=store, readme=readme)
