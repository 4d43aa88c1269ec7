"""Task encoders: a task description in, one L2-normalised embedding out.

Text-to-LoRA conditions its hypernetwork on an embedding of the task description. Every encoder
here satisfies :class:`d2l_memory.routing.TextEncoder`, so routing and skills share one protocol
and one MiniLM loader. An encoder's ``name`` identifies its embedding space: a hypernetwork records
the name it was trained with and refuses embeddings from any other space.

* :class:`~d2l_memory.routing.MiniLMEncoder`: all-MiniLM-L6-v2, offline (the default; the ``skills`` extra).
* :class:`SentenceEncoder`: any local sentence-transformers model folder.
* :class:`BaseModelEncoder`: the hosted base model's own mean-pooled last hidden state, so a skill
  needs no second model at all.
* :class:`CLSEncoder`: a transformers encoder's first-token state, the way the published
  Text-to-LoRA checkpoints read descriptions (with gte-large-en-v1.5).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from d2l_memory import AdapterHost, LexicalEncoder, MiniLMEncoder, ModelError, TextEncoder, pad_batch, wrapped_head


class SentenceEncoder(MiniLMEncoder):
    """A local sentence-transformers model (loaded offline), named after its folder.

    Same loading and normalisation as :class:`MiniLMEncoder`; only the name differs, so a
    hypernetwork trained on MiniLM embeddings is never fed another model's.
    """

    def __init__(self, model_path: str | Path, *, device: str | None = None, batch_size: int = 32) -> None:
        super().__init__(model_path, device=device, batch_size=batch_size)
        self._label = Path(model_path).resolve().name

    @property
    def name(self) -> str:
        return f"sentence-transformers:{self._label}"


class BaseModelEncoder:
    """The base model's mean-pooled last hidden state over the description, as a user turn.

    The description is wrapped exactly as the chat template shows a user turn (the way the base
    model met task descriptions in pretraining) and read with every adapter switched off, so
    resident skills never colour how new descriptions are read. Of a text longer than
    ``max_tokens`` tokens only the first ``max_tokens`` are read.
    """

    def __init__(self, host: AdapterHost, *, max_tokens: int = 512, batch_size: int = 32) -> None:
        if host.tokenizer is None:
            raise ModelError("BaseModelEncoder needs the host's tokenizer; pass one to AdapterHost(model, tokenizer)")
        self.host = host
        self.tokenizer = host.tokenizer
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    @property
    def name(self) -> str:
        return f"base-mean:{self.host.model_id}"

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.host.layout.hidden_size)  # [n, h]
        rows = []  # (index in texts, token ids of the wrapped text)
        for index, text in enumerate(texts):
            head = wrapped_head(self.tokenizer, text, self.max_tokens)
            if head:  # an empty text keeps its zero row
                rows.append((index, head))
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            ids, mask = pad_batch([chunk for _, chunk in batch], self.host.pad_token_id)  # [b, s] each
            mask = mask.to(self.host.device)
            with self.host.active(None):
                hidden = self.host.model.get_decoder()(
                    input_ids=ids.to(self.host.device), attention_mask=mask.long()
                ).last_hidden_state  # [b, s, h]
            weights = mask[..., None].to(hidden.dtype)  # [b, s, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1)  # [b, h]
            out[[i for i, _ in batch]] = pooled.float().cpu()
        return F.normalize(out, dim=-1)


def full_stop(description: str) -> str:
    """A description stripped and ended with a full stop where it ends in a letter (as the
    published Text-to-LoRA formats descriptions before embedding them)."""
    description = description.strip()
    return description + "." if description and description[-1].isalpha() else description


class CLSEncoder:
    """The first-token (CLS) state of a transformers encoder over each description, L2-normalised.

    This is how the published Text-to-LoRA checkpoints read descriptions (with
    ``Alibaba-NLP/gte-large-en-v1.5``): :func:`full_stop`, the tokenizer's own special tokens,
    right padding, at most ``max_tokens`` tokens, float32. gte-large-en-v1.5 is code from its hub
    repository: pass ``trust_remote_code=True`` to run it.
    """

    def __init__(
        self,
        model_id: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 32,
        max_tokens: int = 8192,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_id = str(model_id)
        self._device = device or "cpu"
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._trust_remote_code = trust_remote_code
        self._loaded: tuple | None = None

    @property
    def name(self) -> str:
        return f"cls:{self.model_id}"

    def _model(self) -> tuple:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            trust = {"trust_remote_code": True} if self._trust_remote_code else {}
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_id, **trust)
                model = AutoModel.from_pretrained(self.model_id, dtype=torch.float32, **trust)
            except (OSError, ValueError) as err:
                hint = (
                    ""
                    if self._trust_remote_code
                    else " (a model whose code is in its repository needs trust_remote_code=True)"
                )
                raise ModelError(f"could not load task encoder {self.model_id!r}{hint}: {err}") from err
            tokenizer.padding_side = "right"
            self._loaded = (model.to(self._device).eval(), tokenizer)
        return self._loaded

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        model, tokenizer = self._model()
        formatted = [full_stop(t) for t in texts]
        kept = [i for i, t in enumerate(formatted) if t]
        out = torch.zeros(len(texts), model.config.hidden_size)
        for start in range(0, len(kept), self._batch_size):
            rows = kept[start : start + self._batch_size]
            batch = tokenizer(
                [formatted[i] for i in rows],
                truncation=True,
                padding=True,
                max_length=self._max_tokens,
                return_tensors="pt",
            ).to(self._device)
            out[rows] = model(**batch).last_hidden_state[:, 0].float().cpu()  # [b, h]
        return F.normalize(out, dim=-1)


def load_encoder(spec: str, host: AdapterHost | None = None, *, trust_remote_code: bool = False) -> TextEncoder:
    """An encoder from a short spec: ``"minilm"``, ``"lexical"``, ``"base"`` (needs ``host``),
    ``"cls:MODEL"`` (:class:`CLSEncoder`; ``trust_remote_code`` passed to it) or a model folder. ``"lexical"`` needs no extra; it serves routing and
    :class:`~d2l_memory.routing.ChunkFocus`, not a hypernetwork trained on sentence embeddings (the
    shipped one reads MiniLM's)."""
    if spec == "minilm":
        return MiniLMEncoder()
    if spec == "lexical":
        return LexicalEncoder()
    if spec.startswith("cls:"):
        return CLSEncoder(spec.removeprefix("cls:"), trust_remote_code=trust_remote_code)
    if spec == "base":
        if host is None:
            raise ModelError("the 'base' task encoder reads descriptions with the host's model; pass host=")
        return BaseModelEncoder(host)
    if not Path(spec).is_dir():
        raise ModelError(
            f"unknown task encoder {spec!r}: use 'minilm', 'lexical', 'base', 'cls:MODEL' or a sentence-transformers"
            " folder"
        )
    return SentenceEncoder(spec)
