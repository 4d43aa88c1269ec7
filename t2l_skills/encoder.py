"""Task encoders: a task description in, one L2-normalised embedding out.

Text-to-LoRA conditions its hypernetwork on an embedding of the task description. Every encoder
here satisfies :class:`d2l_memory.routing.TextEncoder`, so routing and skills share one protocol
and one MiniLM loader. An encoder's ``name`` identifies its embedding space: a hypernetwork records
the name it was trained with and refuses embeddings from any other space.

* :class:`~d2l_memory.routing.MiniLMEncoder`: all-MiniLM-L6-v2, offline (the default; the ``skills`` extra).
* :class:`SentenceEncoder`: any local sentence-transformers model folder.
* :class:`BaseModelEncoder`: the hosted base model's own mean-pooled last hidden state, so a skill
  needs no second model at all.
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


def load_encoder(spec: str, host: AdapterHost | None = None) -> TextEncoder:
    """An encoder from a short spec: ``"minilm"``, ``"lexical"``, ``"base"`` (needs ``host``) or a
    model folder. ``"lexical"`` needs no extra; it serves routing and
    :class:`~d2l_memory.routing.ChunkFocus`, not a hypernetwork trained on sentence embeddings (the
    shipped one reads MiniLM's)."""
    if spec == "minilm":
        return MiniLMEncoder()
    if spec == "lexical":
        return LexicalEncoder()
    if spec == "base":
        if host is None:
            raise ModelError("the 'base' task encoder reads descriptions with the host's model; pass host=")
        return BaseModelEncoder(host)
    if not Path(spec).is_dir():
        raise ModelError(
            f"unknown task encoder {spec!r}: use 'minilm', 'lexical', 'base' or a sentence-transformers folder"
        )
    return SentenceEncoder(spec)
