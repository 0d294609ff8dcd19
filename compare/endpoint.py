"""`unlearn serve --agents` started as users start it (its own process, on loopback) and driven
over HTTP: what the comparison and the agent benchmark send their prompts through. The comparison is
the server's operator: it starts it with an admin token of its own and presents it, so each reply
carries the front's diagnostics (route, model calls), which no other client is shown."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import UnlearnError

ROOT = Path(__file__).resolve().parents[1]


class EndpointError(UnlearnError):
    """The agent server did not start or stopped answering."""


class AgentServer:
    """Context manager: the agent front (and its vLLM engine) for one model + policy."""

    def __init__(self, model: str, policy: str, log: Path, agents_only: bool = True, dtype: str = "float32",
                 max_model_len: int = 2048, config: Optional[str] = None, overrides: Sequence[str] = (),
                 env: Optional[dict] = None, start_timeout: float = 900):
        from ..guard.boundary import ADMIN_TOKEN_ENV   # the guard's modules import torch
        from ..guard.serve import free_port

        self.port, self.backend_port = free_port(), free_port()
        self.log = Path(log)
        model = str(Path(model).resolve()) if Path(model).exists() else model   # the server runs from ROOT
        policy = str(Path(policy).resolve())
        config = str(Path(config).resolve()) if config else None
        cmd = [sys.executable, "-m", "unlearnkit.cli", "serve", "--model", model, "--guard", policy, "--agents",
               "--port", str(self.port), "--backend-port", str(self.backend_port), "--name", "model",
               "--dtype", dtype, "--max-model-len", str(max_model_len)]
        cmd += ["--agents-only"] if agents_only else []
        cmd += ["--agents-config", config] if config else []
        for kv in overrides:
            cmd += ["--agents-set", kv]
        self.token = (env or {}).get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
        self.env = {**os.environ, **(env or {}), ADMIN_TOKEN_ENV: self.token}
        self.cmd, self.start_timeout = cmd, start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.backend = f"http://127.0.0.1:{self.backend_port}/v1"
        self.start_s = 0.0

    def __enter__(self) -> "AgentServer":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as sink:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            self._wait()
        except BaseException:   # interrupted or failed while starting: never leave the server behind
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        import httpx

        started = time.time()
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise EndpointError(f"the agent server exited with code {self.proc.returncode} before answering "
                                    f"(log {self.log}):\n{tail}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() - started > self.start_timeout:
                self.stop()
                raise EndpointError(f"the agent server did not answer within {self.start_timeout:.0f} s (log {self.log})")
            time.sleep(2)
        self.start_s = time.time() - started

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def ask(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, seed: Optional[int] = None) -> dict:
        """One chat request (greedy unless `temperature`): {'status', 'text', 'unlearn' (the front's record),
        'seconds'}."""
        return chat(self.url, prompt, max_tokens, temperature=temperature, seed=seed, token=self.token)

    def ask_many(self, prompts: Sequence[str], max_tokens: int | Sequence[int] = 128, workers: int = 8,
                 progress: Optional[Callable[[int], None]] = None,
                 sampling: Optional[Sequence[tuple[float, Optional[int]]]] = None) -> list[dict]:
        """`ask` for every prompt, `workers` at once (`max_tokens`: one budget, or one per prompt; `sampling`:
        (temperature, seed) per prompt, else greedy), in order."""
        budgets = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else list(max_tokens)
        sampling = list(sampling) if sampling else [(0.0, None)] * len(prompts)

        def one(job):
            out = self.ask(*job)
            if progress:
                progress(1)
            return out

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, [(p, b, t, s) for p, b, (t, s) in zip(prompts, budgets, sampling)]))


def chat(url: str, prompt: str, max_tokens: int = 128, timeout: float = 900, model: str = "model",
         temperature: float = 0.0, seed: Optional[int] = None, token: Optional[str] = None) -> dict:
    """One chat request to the OpenAI-compatible server at `url` (its /v1 base) for `model`: greedy, or
    sampled at `temperature` with `seed`; with the operator's admin `token`, the front's diagnostics too
    ('unlearn', else {})."""
    import httpx

    started = time.perf_counter()
    r = httpx.post(f"{url}/chat/completions", timeout=timeout, json={
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": temperature, **({"seed": seed} if seed is not None else {})},
        headers={"Authorization": f"Bearer {token}"} if token else None)
    body = r.json()
    text = body["choices"][0]["message"]["content"] if r.status_code == 200 else ""
    return {"status": r.status_code, "text": text or "", "unlearn": body.get("unlearn", {}),
            "seconds": time.perf_counter() - started}
