"""Real documents from this machine: exact gold answers taken from fields, split by source."""

from __future__ import annotations

from pathlib import Path

from d2l_lab.real_docs import contains, dpkg_documents, exact, metadata_documents, pydoc_documents, split


def test_package_metadata_documents_hold_their_answers(tmp_path):
    info = tmp_path / "demo_pkg-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.2.3\nSummary: Makes demos.\nRequires-Python: >=3.9\n"
        "Requires-Dist: httpx\n\nA long description that is not part of the document.\n"
    )
    [doc] = metadata_documents([tmp_path])
    assert doc.source == "pypi:demo-pkg" and "long description" not in doc.text
    assert {qa.field: qa.answer for qa in doc.questions} == {
        "version": "1.2.3",
        "summary": "Makes demos.",
        "python": ">=3.9",
    }
    assert all(qa.answer in doc.text for qa in doc.questions)


def test_debian_records_and_pydoc_hold_their_answers(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: demo\nStatus: install ok installed\nSection: admin\nMaintainer: Ann Lee <ann@example.org>\n"
        "Version: 0.16.1-2\nConffiles:\n /etc/demo.conf 447b\nDescription: a demo\n it demonstrates\n\n"
    )
    [doc] = dpkg_documents(Path(status))
    assert "/etc/demo.conf" not in doc.text
    assert {qa.field: qa.answer for qa in doc.questions} == {
        "version": "0.16.1-2",
        "maintainer": "Ann Lee",
        "section": "admin",
    }
    docs = list(pydoc_documents(["textwrap"]))
    dedent = next(d for d in docs if "dedent(text)" in d.text)
    assert dedent.questions[0].answer == "text"
    assert all(qa.answer.strip("'") in d.text for d in docs for qa in d.questions)


def test_a_source_is_wholly_in_training_or_held_out():
    docs = list(pydoc_documents())
    train, held = split(docs)
    assert train and held
    assert not {d.source for d in train} & {d.source for d in held}


def test_scoring_suits_a_chatty_model():
    assert contains("The version of httpx is 0.29.0.", "0.29.0") and not exact("The version is 0.29.0.", "0.29.0")
    assert exact(" 'utf-8'. ", "'utf-8'")
