"""Questions the base model writes about a document: parsing, the grounding filter, the file."""

from __future__ import annotations

from d2l_lab.real_docs import RealDocument, RealQA
from d2l_lab.self_qa import grounded, parse_pairs, read_self_qa, with_self_qa, write_self_qa
from d2l_memory.embedded import load_host

DOC = RealDocument(
    "dpkg:jq",
    "Package: jq\nVersion: 1.6-2.1\nMaintainer: ChangZhuo Chen <czchen@debian.org>\nDescription: JSON processor",
    (RealQA("What is the version of the jq package?", "1.6-2.1", "version"),),
)


def test_pairs_are_read_in_order_with_repeats_dropped():
    reply = "Q: What is it?\nA: A JSON\n processor\nQ: Who keeps it?\nA: ChangZhuo Chen\nQ: What is it?\nA: A JSON processor"
    assert parse_pairs(reply) == [("What is it?", "A JSON processor"), ("Who keeps it?", "ChangZhuo Chen")]
    assert parse_pairs("no pairs here") == []


def test_only_short_answers_written_in_the_document_are_kept():
    assert grounded(DOC, "Who maintains jq?", "ChangZhuo Chen")
    assert not grounded(DOC, "Who maintains jq?", "The Debian Java Maintainers")  # not in the document
    assert not grounded(DOC, "Is jq a JSON processor?", "JSON processor")  # the question gives it away
    assert not grounded(DOC, "What is it?", "")
    assert not grounded(DOC, "What is it?", " ".join(["JSON"] * 13))  # too long to be an answer


def test_the_file_resumes_and_adds_pairs_after_the_field_questions(tmp_path):
    host = load_host()  # the embedded default: it writes no usable pairs, which must be recorded too
    path = tmp_path / "self_qa.jsonl"
    first = write_self_qa(host, [DOC], path)
    assert first["documents"] == 1 and first["seconds_per_document"] > 0
    assert write_self_qa(host, [DOC], path)["documents"] == 0  # already in the file
    (key,) = read_self_qa(path)
    pairs = {key: (RealQA("Who maintains jq?", "ChangZhuo Chen", "self"),)}
    (extended,) = with_self_qa([DOC], pairs)
    assert extended.questions == DOC.questions + pairs[key]
