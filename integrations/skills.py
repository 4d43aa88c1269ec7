"""Text-to-LoRA as the agent's skill maker: :class:`t2l_skills.SkillLibrary` behind the
:class:`~d2l_memory.agent_memory.SkillMaker` protocol the ``create_skill`` tool calls."""

from __future__ import annotations

from collections.abc import Sequence

from d2l_memory.errors import ConfigError
from t2l_skills import SkillLibrary


class TextToLoRASkills:
    """Skills generated (or reused, when the description was seen before) by a :class:`SkillLibrary`.

    The library must write to the same :class:`~d2l_memory.store.AdapterStore` as the
    :class:`~d2l_memory.agent_memory.AgentMemory` it serves, so that skills are found, listed and
    swapped like memories. The agent memory makes a skill resident under its namespaced key when
    it is switched on, so the library does not also keep it under its bare id.
    """

    def __init__(self, library: SkillLibrary) -> None:
        if library.store is None:
            raise ConfigError("the skill library needs a store: pass SkillLibrary(..., store=memory.store)")
        self.library = library

    def create_skill(self, description: str, *, namespace: Sequence[str]) -> tuple[str, str]:
        skill = self.library.create_skill(description, namespace=namespace, resident=False)
        return skill.id, skill.receipt()
