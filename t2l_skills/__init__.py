"""Text-to-LoRA skills: a task description becomes a LoRA adapter in one hypernetwork pass.

Built on :mod:`d2l_memory` (its public API only): skills are ordinary adapters, so they are
hosted, stored (kind ``"skill"``) and composed with Doc-to-LoRA memories like any other.

    from t2l_skills import SkillLibrary, TextToLoRA
    from d2l_memory import MiniLMEncoder

    library = SkillLibrary(host, TextToLoRA.load("runs/t2l/final"), MiniLMEncoder(), store=store)
    skill = library.create_skill("Reverse the order of the words.")
    host.generate(prompt, adapters=[memory_id, skill.id])

Training and evaluation live in the research harness: :mod:`d2l_lab.train_t2l`
(``python -m d2l_lab.train_t2l --help``) and :mod:`d2l_lab.t2l_evaluate`.
"""

from pathlib import Path

from t2l_skills.encoder import BaseModelEncoder, CLSEncoder, SentenceEncoder, load_encoder
from t2l_skills.hypernet import DEFAULT_SKILL_TARGETS, HeadKind, T2LConfig, TextToLoRA
from t2l_skills.library import Skill, SkillHypernet, SkillLibrary, load_skill_hypernet, normalize_description
from t2l_skills.published_import import import_t2l_checkpoint
from t2l_skills.published_t2l import PublishedT2LConfig, PublishedTextToLoRA

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
"""The shipped Text-to-LoRA hypernetwork for the embedded default (head L): a task description,
read by all-MiniLM-L6-v2 (the ``skills`` extra), in; a rank-8 skill LoRA on every layer's q_proj
and v_proj out. Its skills read the base's activations, so a changed base needs it retrained.
BENCHMARKS.md measures it (``benchmarks.t2l``); docs/checkpoints.md gives the commands that made
it."""

__all__ = [
    "DEFAULT_CHECKPOINT_DIR",
    "DEFAULT_SKILL_TARGETS",
    "BaseModelEncoder",
    "CLSEncoder",
    "HeadKind",
    "PublishedT2LConfig",
    "PublishedTextToLoRA",
    "SentenceEncoder",
    "Skill",
    "SkillHypernet",
    "SkillLibrary",
    "T2LConfig",
    "TextToLoRA",
    "import_t2l_checkpoint",
    "load_encoder",
    "load_skill_hypernet",
    "normalize_description",
]
