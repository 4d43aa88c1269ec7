"""Questions and answers the base model writes itself, reading a training document.

The published Doc-to-LoRA recipe trains on questions a model generated for each document, not only
on questions cut from fields. Here the base model reads a document and writes "Q: ... / A: ..."
pairs; a pair is kept only if its answer is written in the document (normalized containment) and
its question does not give the answer away, so a small model's invented or empty answers never
become teacher targets. Generation is slow on a CPU, so the pairs go to a JSON-lines file once,
keyed by the document's source and text, and training reads them from there (``train_d2l --self-qa``).

    python -m d2l_lab.self_qa --base smollm2 --out runs/self_qa.jsonl --documents 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from d2l_lab.real_docs import RealDocument, RealQA, normalize, real_documents, split
from d2l_memory.embedded import load_host
from d2l_memory.host import AdapterHost

INSTRUCTION = (
    "Write three questions about the text above, each with its short answer taken from the text, in this format:\n"
    "Q: <question>\nA: <answer>"
)
MAX_ANSWER_WORDS = 12
_PAIR = re.compile(r"Q:\s*(?P<question>.+?)\s*\n\s*A:\s*(?P<answer>.+?)\s*(?=\n\s*Q:|\n\s*\n|\Z)", re.DOTALL)


def document_key(document: RealDocument) -> str:
    """What a document's pairs are filed under: its source and a hash of its text."""
    return f"{document.source}#{hashlib.sha256(document.text.encode()).hexdigest()[:16]}"


def parse_pairs(reply: str) -> list[tuple[str, str]]:
    """The "Q: ... / A: ..." pairs of a reply, in order, whitespace collapsed; repeats dropped."""
    pairs: list[tuple[str, str]] = []
    for match in _PAIR.finditer(reply):
        question, answer = (" ".join(match[name].split()) for name in ("question", "answer"))
        if question and answer and (question, answer) not in pairs:
            pairs.append((question, answer))
    return pairs


def grounded(document: RealDocument, question: str, answer: str) -> bool:
    """Whether a pair can be a teacher target: a short answer, written in the document as whole words,
    not in the question."""
    said = normalize(answer)
    if not said or len(answer.split()) > MAX_ANSWER_WORDS:
        return False
    words = re.compile(rf"(?<!\w){re.escape(said)}(?!\w)")
    return bool(words.search(normalize(document.text))) and not words.search(normalize(question))


def self_generated_qas(host: AdapterHost, document: RealDocument, *, max_new_tokens: int = 160) -> list[RealQA]:
    """The grounded pairs the base model writes about ``document`` (greedy, no adapters)."""
    prompt = [{"role": "user", "content": f"{document.text}\n\n{INSTRUCTION}"}]
    reply = host.generate(prompt, max_new_tokens=max_new_tokens).text
    return [RealQA(q, a, "self") for q, a in parse_pairs(reply) if grounded(document, q, a)]


def write_self_qa(host: AdapterHost, documents: Iterable[RealDocument], path: Path) -> dict[str, float]:
    """Append the pairs of every document not yet in ``path`` (so a stopped run resumes); returns
    how many documents were read, the pairs kept per document and the seconds per document."""
    done = set(read_self_qa(path)) if path.exists() else set()
    todo = [d for d in documents if document_key(d) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    kept, started = 0, time.perf_counter()
    with path.open("a") as out:
        for document in tqdm(todo, desc="self-generated QA", unit="doc"):
            pairs = self_generated_qas(host, document)
            kept += len(pairs)
            record = {"key": document_key(document), "pairs": [[qa.question, qa.answer] for qa in pairs]}
            out.write(json.dumps(record) + "\n")
            out.flush()
    seconds = time.perf_counter() - started
    return {
        "documents": len(todo),
        "pairs_per_document": kept / max(1, len(todo)),
        "seconds_per_document": seconds / max(1, len(todo)),
    }


def read_self_qa(path: Path) -> dict[str, tuple[RealQA, ...]]:
    """The pairs of a file :func:`write_self_qa` wrote, by :func:`document_key`."""
    pairs: dict[str, tuple[RealQA, ...]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        pairs[record["key"]] = tuple(RealQA(q, a, "self") for q, a in record["pairs"])
    return pairs


def with_self_qa(documents: Iterable[RealDocument], pairs: dict[str, tuple[RealQA, ...]]) -> Iterator[RealDocument]:
    """Each document with its self-generated pairs after its field questions."""
    for document in documents:
        extra = pairs.get(document_key(document), ())
        yield RealDocument(document.source, document.text, document.questions + extra) if extra else document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2", help="the model that writes the pairs (a folder, .gguf, hub id)")
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file; an existing one is extended")
    parser.add_argument("--documents", type=int, default=None, help="this many training documents (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="which documents, when --documents is given")
    args = parser.parse_args()
    training = split(real_documents())[0]
    if args.documents is not None:
        training = random.Random(args.seed).sample(training, min(args.documents, len(training)))
    stats = write_self_qa(load_host(args.base), training, args.out)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
