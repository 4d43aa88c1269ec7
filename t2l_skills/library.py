"""Skills: a task description in, a resident (and optionally stored) skill adapter out.

One encoder call and one hypernetwork pass make a skill; it is then resident on the host under
its id, so it composes with memories like any adapter:
``host.generate(prompt, adapters=[memory_id, skill.id])``.

Skills are made from, and cached by, their normalised description (runs of whitespace collapsed
to one space, case kept, as the hypernetwork was trained on them): "Reverse the words." and
"Reverse  the words." are one skill, "reverse the words." another. A skill's id is a hash of
the normalised description, the encoder and the hypernetwork's weights, so a skill found in the
store under that id is exactly the one this hypernetwork would make, and a retrained
hypernetwork never picks up its predecessor's skills.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from d2l_memory import (
    AdapterHost,
    AdapterRecord,
    AdapterStore,
    D2LMemoryError,
    Factors,
    LoRAAdapter,
    TargetShape,
    TextEncoder,
    require_fit,
)
from t2l_skills.hypernet import CONFIG_NAME as T2L_CONFIG_NAME
from t2l_skills.hypernet import TextToLoRA
from t2l_skills.published_t2l import CONFIG_NAME as PUBLISHED_CONFIG_NAME
from t2l_skills.published_t2l import PublishedTextToLoRA

GENERATOR = "t2l"


class SkillHypernetConfig(Protocol):
    base_model: str
    encoder: str
    num_layers: int
    targets: tuple[TargetShape, ...]
    head: str
    version: str


class SkillHypernet(Protocol):
    """A hypernetwork that turns description embeddings into skill adapters: ours
    (:class:`~t2l_skills.hypernet.TextToLoRA`) or a published one
    (:class:`~t2l_skills.published_t2l.PublishedTextToLoRA`)."""

    config: SkillHypernetConfig

    def __call__(self, embeddings: torch.Tensor) -> Factors: ...

    def to_adapters(self, factors: Factors, names: list[str]) -> list[LoRAAdapter]: ...

    def to(self, device: torch.device | str) -> SkillHypernet: ...

    def eval(self) -> SkillHypernet: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


def load_skill_hypernet(folder: str | Path, *, device: str | torch.device = "cpu") -> SkillHypernet:
    """A Text-to-LoRA hypernetwork folder of either kind: one of ours (``TextToLoRA.save``) or a
    published checkpoint imported with ``d2l-memory import-checkpoint``."""
    folder = Path(folder)
    if (folder / PUBLISHED_CONFIG_NAME).is_file():
        return PublishedTextToLoRA.load(folder, device=device)
    if not (folder / T2L_CONFIG_NAME).is_file() and (folder / "hypermod.pt").is_file():
        raise D2LMemoryError(
            f"{folder} holds a pickled checkpoint: import it first (d2l-memory import-checkpoint PATH --out DIR)"
        )
    return TextToLoRA.load(folder, device=device)


def normalize_description(description: str) -> str:
    """The cache key of a description, and the text its skill is made from: runs of whitespace
    collapsed to one space. Case is kept: a cased encoder reads it, and training showed it."""
    return " ".join(description.split())


@dataclass(frozen=True)
class Skill:
    """A task description turned into an adapter, with what this request cost."""

    id: str
    description: str
    adapter: LoRAAdapter
    seconds: float
    cached: bool = False  # found in the library's cache or the store, not generated
    record: AdapterRecord | None = None

    def receipt(self) -> str:
        how = "reused" if self.cached else "generated"
        return (
            f"{how} skill {self.id} for {self.description!r} (rank {self.adapter.max_rank} on"
            f" {len(self.adapter.modules)} modules, {self.seconds * 1000:.0f} ms, {self.adapter.nbytes / 1024:.0f} KiB)"
        )


class SkillLibrary:
    """Turns task descriptions into skill adapters on a host, cached, and kept in a store if given one."""

    def __init__(
        self,
        host: AdapterHost,
        hypernet: SkillHypernet,
        encoder: TextEncoder,
        store: AdapterStore | None = None,
        *,
        max_cached: int = 256,
    ) -> None:
        """``max_cached`` skills are kept ready (least recently asked for go first; the store
        still has them)."""
        config = hypernet.config
        if config.encoder != encoder.name:
            raise D2LMemoryError(
                f"this hypernetwork reads embeddings of encoder {config.encoder!r}, not {encoder.name!r}"
            )
        require_fit(host.layout, config)
        self.host = host
        self.hypernet = hypernet.to(host.device).eval()
        self.encoder = encoder
        self.store = store
        self._fingerprint = _weights_sha256(hypernet) + "\n" + encoder.name
        self.max_cached = max_cached
        self._skills: OrderedDict[tuple[tuple[str, ...], str], Skill] = OrderedDict()  # (namespace, text) -> skill
        self._lock = threading.Lock()  # one skill is made once even when threads ask at once

    def skill_id(self, description: str) -> str:
        """The id a description's skill has with this hypernetwork and encoder."""
        key = f"{self._fingerprint}\n{normalize_description(description)}"
        return "skill-" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def create_skill(
        self, description: str, *, namespace: Sequence[str] = ("default",), resident: bool = True
    ) -> Skill:
        """The skill for ``description``: from the cache, else from the store, else generated
        (and stored). Whichever it is, it is resident on the host under its id when this returns,
        unless ``resident=False`` (for a caller that loads it under keys of its own)."""
        normalised = normalize_description(description)
        if not normalised:
            raise D2LMemoryError("cannot make a skill from an empty description")
        started = time.perf_counter()
        namespace = tuple(namespace)
        key = (namespace, normalised)
        with self._lock:
            skill = self._skills.get(key)
            if skill is not None and self.store is not None and not self.store.exists(namespace, skill.id):
                skill = None  # forgotten since it was cached: made again, so the store holds it again
            if skill is not None:
                self._skills.move_to_end(key)
                skill = dataclasses.replace(skill, cached=True, seconds=time.perf_counter() - started)
            else:
                skill = self._from_store(namespace, description) or self._generate(namespace, description)
                self._skills[key] = skill
                while len(self._skills) > self.max_cached:
                    self._skills.popitem(last=False)
            if resident and skill.id not in self.host:  # the caller may have removed it to free memory
                self.host.add(skill.id, skill.adapter)
        return skill

    def _from_store(self, namespace: tuple[str, ...], description: str) -> Skill | None:
        skill_id = self.skill_id(description)
        if self.store is None or not self.store.exists(namespace, skill_id):
            return None
        started = time.perf_counter()
        adapter = self.store.get(namespace, skill_id).to(self.host.device, self.host.dtype)
        record = self.store.record(namespace, skill_id)
        return Skill(
            skill_id, record.extra.get("description", description), adapter, time.perf_counter() - started, True, record
        )

    @torch.no_grad()
    def _generate(self, namespace: tuple[str, ...], description: str) -> Skill:
        started = time.perf_counter()
        skill_id = self.skill_id(description)
        text = normalize_description(description)  # what the id names
        device = next(self.hypernet.parameters()).device
        embedding = self.encoder.encode([text]).to(device)
        factors = self.hypernet(embedding)  # module -> (A [1, L, r, d_in], B [1, L, d_out, r])
        adapter = self.hypernet.to_adapters(factors, [skill_id])[0].to(self.host.device, self.host.dtype)
        seconds = time.perf_counter() - started
        record = None
        if self.store is not None:
            record = self.store.put(
                adapter,
                namespace=namespace,
                kind="skill",
                id=skill_id,
                generator=GENERATOR,
                generator_version=self.hypernet.config.version,
                base_model=self.host.model_id,
                extra={
                    "description": text,
                    "encoder": self.encoder.name,
                    "head": self.hypernet.config.head,
                    "seconds": round(seconds, 4),
                },
                overwrite=True,  # the id fixes the content: another process's copy is the same adapter
            )
        return Skill(skill_id, text, adapter, seconds, False, record)


def _weights_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
