"""A thin client over the HTTP API of a vLLM server: completions and runtime LoRA loading.

Only what :class:`~d2l_memory.vllm_host.VLLMHost` needs, each call one documented endpoint of
vLLM's OpenAI-compatible server:

* ``GET /health``, ``GET /v1/models``, ``POST /tokenize``: is it up, what it serves, how it tokenizes;
* ``POST /v1/completions``: generate from token ids, with the LoRA named by ``model`` (or streamed
  as server-sent events);
* ``POST /v1/load_lora_adapter`` and ``POST /v1/unload_lora_adapter``: runtime LoRA updating, which
  the server allows only when started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.

Every failure is a :class:`~d2l_memory.errors.ServerError` carrying the status and the server's
own message, so a caller can tell a refused adapter (rank, modules) from a missing one or a
server that is down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from d2l_memory.errors import ServerError

ALREADY_LOADED = "has already been loaded"
"""What vLLM answers (400) when asked to load a name it already serves."""


class VLLMClient:
    """One vLLM server, reached at ``url`` (e.g. ``http://localhost:8000``)."""

    def __init__(self, url: str, *, timeout: float = 120.0, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers, limits=limits)

    def close(self) -> None:
        self._http.close()

    # --- what the server is ---------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            return self._http.get("/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[dict[str, Any]]:
        """The served models: the base model first, then the LoRA adapters loaded (``parent`` set)."""
        return self._request("GET", "/v1/models")["data"]

    def tokenize(self, model: str, text: str) -> list[int]:
        return self._request("POST", "/tokenize", {"model": model, "prompt": text, "add_special_tokens": True})[
            "tokens"
        ]

    # --- LoRA adapters --------------------------------------------------------------------------
    def load_adapter(self, name: str, path: str) -> bool:
        """Load the PEFT folder at ``path`` (as the server sees it) under ``name``; False when the
        server already serves that name."""
        try:
            self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, parse=False)
        except ServerError as err:
            if err.status == 400 and ALREADY_LOADED in err.message:
                return False
            raise
        return True

    def unload_adapter(self, name: str) -> bool:
        """Stop serving ``name``; False when the server did not serve it."""
        try:
            self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name}, parse=False)
        except ServerError as err:
            if err.status == 404:
                return False
            raise
        return True

    # --- generation -----------------------------------------------------------------------------
    def complete(self, model: str, prompt: list[int], **sampling: Any) -> dict[str, Any]:
        """One completion of the token ids ``prompt``: the response's first choice with its ``usage``."""
        body = self._request("POST", "/v1/completions", {"model": model, "prompt": prompt, **sampling})
        return {**body["choices"][0], "usage": body["usage"]}

    def stream(self, model: str, prompt: list[int], **sampling: Any) -> Iterator[dict[str, Any]]:
        """The completion's chunks as the server sends them; the last carries ``usage``."""
        payload = {
            "model": model,
            "prompt": prompt,
            **sampling,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            with self._http.stream("POST", "/v1/completions", json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    raise _server_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:  # an error after the stream began
                        raise ServerError(500, str(chunk["error"].get("message", chunk["error"])), self.url)
                    yield chunk
        except httpx.HTTPError as err:
            raise self._unreachable(err) from err

    # --- plumbing ---------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: Mapping[str, Any] | None = None, *, parse: bool = True) -> Any:
        try:
            response = self._http.request(method, path, json=payload)
        except httpx.HTTPError as err:
            raise self._unreachable(err) from err
        if response.status_code != 200:
            raise _server_error(response)
        return response.json() if parse else response.text

    def _unreachable(self, err: httpx.HTTPError) -> ServerError:
        return ServerError(
            None,
            f"no answer from the vLLM server at {self.url} ({type(err).__name__}: {err}). Start one with"
            " `d2l-memory serve-vllm` (the embedded default) or `vllm serve MODEL --enable-lora ...`"
            " (docs/serving.md)",
            self.url,
        )


def _server_error(response: httpx.Response) -> ServerError:
    try:
        error = response.json().get("error", {})
        message = error.get("message", response.text) if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text
    return ServerError(response.status_code, message, str(response.url))
