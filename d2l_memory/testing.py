"""Tiny random-weight models and a word-level tokenizer, for tests and CPU benchmarks.

They let every code path (loading, hosting, PEFT export, generation) run for real on a laptop
with no hub access, across the architectures we support.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from d2l_memory.adapter import LoRAAdapter, LoRAWeights
from d2l_memory.errors import ConfigError
from d2l_memory.introspection import describe_model

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "mistral": MistralConfig,
    "gemma2": Gemma2Config,
}
SUPPORTED_ARCHITECTURES = tuple(_CONFIGS)


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A whitespace/punctuation word-level tokenizer over ``words`` with our chat template."""
    vocab = {token: i for i, token in enumerate(dict.fromkeys(SPECIAL_TOKENS + words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = [
        "the",
        "a",
        "is",
        "of",
        "in",
        "and",
        "to",
        "what",
        "who",
        "where",
        "lives",
        "likes",
        "code",
        "number",
        "colour",
        "city",
    ]
    words += [str(d) for d in range(10)] + list(".,?!:;-'\"()[]{}") + [f"w{i}" for i in range(64)]
    return word_tokenizer(words)


def tiny_model(
    architecture: str = "llama",
    *,
    vocab_size: int = 128,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM of the given architecture (fp32, eval mode)."""
    try:
        config_class = _CONFIGS[architecture]
    except KeyError:
        raise ConfigError(f"unknown architecture {architecture!r}; choose from {SUPPORTED_ARCHITECTURES}") from None
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def random_adapter(
    model: PreTrainedModel,
    *,
    rank: int = 4,
    modules: tuple[str, ...] = ("down_proj",),
    name: str = "adapter",
    scale: float = 0.05,
    seed: int = 0,
) -> LoRAAdapter:
    """A random adapter for ``model``'s ``modules`` with non-zero A and B (so it changes outputs)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {
        target.key: LoRAWeights(
            torch.randn(rank, target.d_in, generator=generator) * scale,  # A [r, d_in]
            torch.randn(target.d_out, rank, generator=generator) * scale,  # B [d_out, r]
        )
        for target in describe_model(model).select(modules)
    }
    return LoRAAdapter.single(name, weights)
