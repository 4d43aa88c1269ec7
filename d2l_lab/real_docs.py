"""Real documents an agent would internalize, from what every machine has, with exact-answer questions.

Three sources, none fetched from a hub:

* Debian package records (``/var/lib/dpkg/status``): version, maintainer, section, architecture;
* installed Python packages' metadata (``*.dist-info/METADATA`` headers): version, summary,
  licence, the Python versions required;
* pydoc of standard-library functions (``pydoc.plaintext``): their parameters and defaults.

Every question's gold answer is a field of its document, so scoring is exact. A chatty model
answers in sentences ("The version of httpx is 0.29.0."), so :func:`contains` (the normalized
gold inside the normalized reply) is reported beside :func:`exact` (normalized equality).

Documents are split by source (:func:`held_out`): a package or module is either in training or
held out, never both, so held-out questions ask about things no training document described.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pydoc
import re
import site
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

DPKG_STATUS = Path("/var/lib/dpkg/status")
STDLIB_MODULES = (
    "json", "textwrap", "shutil", "os.path", "string", "random", "statistics", "difflib", "csv", "base64",
    "fnmatch", "glob", "gzip", "heapq", "bisect", "html", "ipaddress", "itertools", "math", "operator",
    "pathlib", "pprint", "re", "secrets", "shlex", "tempfile", "time", "urllib.parse", "uuid", "zipfile",
    "zlib", "hashlib", "hmac", "functools", "calendar", "colorsys", "copy", "datetime", "decimal", "fractions",
)  # fmt: skip
"""Modules whose public functions become pydoc documents."""
MAX_DOCUMENT_CHARS = 1600  # about 400 tokens: a document fits one chunk with room for the question
HELD_OUT_SHARE = 0.25


@dataclass(frozen=True)
class RealQA:
    question: str
    answer: str
    field: str  # which field of the document it asks for ("version", "default", ...)


@dataclass(frozen=True)
class RealDocument:
    source: str  # what it is about, split on: "dpkg:appstream", "pypi:httpx", "pydoc:json"
    text: str
    questions: tuple[RealQA, ...]


# --- Debian packages ------------------------------------------------------------------------
DPKG_FIELDS = ("Package", "Version", "Section", "Architecture", "Maintainer", "Depends", "Description")


def dpkg_documents(path: Path = DPKG_STATUS) -> Iterator[RealDocument]:
    """One document per installed Debian package: its record, without the file lists."""
    if not path.is_file():
        return
    for record in path.read_text(errors="replace").split("\n\n"):
        fields = _dpkg_fields(record)
        name = fields.get("Package")
        if not name or "Version" not in fields:
            continue
        text = "\n".join(f"{key}: {fields[key]}" for key in DPKG_FIELDS if key in fields)[:MAX_DOCUMENT_CHARS]
        questions = [RealQA(f"What is the version of the {name} package?", fields["Version"], "version")]
        if "Maintainer" in fields:
            maintainer = fields["Maintainer"].split("<")[0].strip()
            questions.append(RealQA(f"Who maintains the {name} package?", maintainer, "maintainer"))
        if "Section" in fields:
            questions.append(RealQA(f"Which section is the {name} package in?", fields["Section"], "section"))
        yield RealDocument(f"dpkg:{name}", text, tuple(questions))


def _dpkg_fields(record: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in record.splitlines():
        if line.startswith((" ", "\t")) and key is not None:
            if key == "Description" and len(fields[key]) < 400:
                fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


# --- Python packages ------------------------------------------------------------------------
METADATA_FIELDS = ("Name", "Version", "Summary", "License", "License-Expression", "Requires-Python", "Author")


def metadata_documents(folders: Iterable[Path] | None = None) -> Iterator[RealDocument]:
    """One document per installed distribution: the header of its METADATA."""
    seen: set[str] = set()
    folders = folders if folders is not None else _site_folders()
    for metadata in sorted(p for folder in folders for p in Path(folder).glob("*.dist-info/METADATA")):
        header = HeaderParser().parsestr(metadata.read_text(errors="replace"), headersonly=True)
        name = header.get("Name")
        if not name or name.lower() in seen or not header.get("Version"):
            continue
        seen.add(name.lower())
        lines = [f"{key}: {header[key]}" for key in METADATA_FIELDS if header.get(key)]
        lines += [f"Requires-Dist: {r}" for r in header.get_all("Requires-Dist") or []][:12]
        text = "\n".join(lines)[:MAX_DOCUMENT_CHARS]
        questions = [RealQA(f"What is the version of the {name} package?", header["Version"], "version")]
        if summary := (header.get("Summary") or "").strip():
            questions.append(RealQA(f"What is the one-line summary of the {name} package?", summary, "summary"))
        if requires := header.get("Requires-Python"):
            questions.append(RealQA(f"Which Python versions does the {name} package require?", requires, "python"))
        yield RealDocument(f"pypi:{name.lower()}", text, tuple(questions))


def _site_folders() -> list[Path]:
    return sorted({Path(p) for p in [*site.getsitepackages(), site.getusersitepackages(), *sys.path] if p})


# --- standard library -----------------------------------------------------------------------
def pydoc_documents(modules: Iterable[str] = STDLIB_MODULES) -> Iterator[RealDocument]:
    """One document per public function of these modules: its pydoc text."""
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, function in sorted(vars(module).items()):
            if name.startswith("_") or not inspect.isfunction(function) or function.__module__ != module.__name__:
                continue
            try:
                parameters = list(inspect.signature(function).parameters.values())
            except (TypeError, ValueError):
                continue
            named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if not named:
                continue
            text = pydoc.render_doc(function, renderer=pydoc.plaintext, title="%s")[:MAX_DOCUMENT_CHARS]
            qualified = f"{module_name}.{name}"
            questions = [
                RealQA(f"What is the first parameter of the function {qualified}?", named[0].name, "first_parameter")
            ]
            questions += [
                RealQA(
                    f"What is the default value of the {p.name} parameter of {qualified}?", repr(p.default), "default"
                )
                for p in named
                if p.default is not p.empty
            ][:2]
            yield RealDocument(f"pydoc:{module_name}", text, tuple(questions))


# --- the corpus -----------------------------------------------------------------------------
def real_documents() -> list[RealDocument]:
    """Every document of the three sources on this machine."""
    return [*dpkg_documents(), *metadata_documents(), *pydoc_documents()]


def held_out(document: RealDocument) -> bool:
    """Whether the document's source is held out from training (a fixed share, by a hash of it)."""
    digest = hashlib.sha256(document.source.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_SHARE


def split(documents: Iterable[RealDocument]) -> tuple[list[RealDocument], list[RealDocument]]:
    """(training, held-out) documents: every source wholly on one side."""
    documents = list(documents)
    return [d for d in documents if not held_out(d)], [d for d in documents if held_out(d)]


# --- scoring --------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower case, quotes and surrounding punctuation dropped, whitespace collapsed."""
    text = text.lower().replace("'", "").replace('"', "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip(" .,;:!?")


def exact(reply: str, gold: str) -> bool:
    return normalize(reply) == normalize(gold)


def contains(reply: str, gold: str) -> bool:
    return normalize(gold) in normalize(reply)
