"""`unlearn serve --agents`: start the vLLM server (guarded, or not with --agents-only) on a
loopback port, then the agent front before it on the public one. The front's classifier and the
rewriter use the same guard policy; the nodes' model is that server unless the agent config names
other endpoints. Stopping the front stops the server."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ..guard.boundary import ADMIN_TOKEN_ENV
from ..guard.serve import free_port, server_command, server_env, wait_for_server
from ..models.loading import load_tokenizer
from .config import NODES, load_agent_config
from .llm import endpoint_model

log = logging.getLogger("unlearnkit.agents")


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def run_agent_server(model_path: str, policy: str, *, port: int, host: str = "127.0.0.1",
                     served_name: Optional[str] = None, dtype: str = "auto", max_model_len: int = 2048,
                     vllm_args: tuple[str, ...] = (), config: Optional[str] = None, overrides: tuple[str, ...] = (),
                     token_filter: bool = True, live_targets: Optional[str] = None,
                     backend_port: Optional[int] = None) -> int:
    import uvicorn

    from ..guard.policy import load_policy
    from .front import create_app
    from .graph import Pipeline
    from .store import TargetStore

    cfg = load_agent_config(config, list(overrides))            # config errors before anything starts
    store = TargetStore(load_policy(policy, load_tokenizer(model_path)), live_file=live_targets)
    store.classify("warm-up", ["warm-up"])                      # load the embedder before the first request
    name = served_name or Path(model_path).name
    backend_port = backend_port or free_port()
    cmd = server_command(model_path, backend_port, "127.0.0.1", guard=token_filter, served_name=name,
                         dtype=dtype, max_model_len=max_model_len, extra=vllm_args)
    print(" ".join(cmd), file=sys.stderr)
    # the front's own calls carry the backend's admin token (their verdicts are constrained to fixed
    # words, which the guarded server refuses to clients); clients of the front never see it
    internal = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
    engine = subprocess.Popen(cmd, env={**server_env(policy if token_filter else None), ADMIN_TOKEN_ENV: internal})
    try:
        waited = wait_for_server(backend_port, engine)
        print(f"vLLM server ready on 127.0.0.1:{backend_port} after {waited:.0f} s "
              f"({'guarded' if token_filter else 'no token filter'})", file=sys.stderr)
        backend = f"http://127.0.0.1:{backend_port}/v1"
        models = {node: endpoint_model(cfg.endpoint(node), backend, name, guarded=token_filter, backend_key=internal)
                  for node in NODES}
        token = os.environ.get(ADMIN_TOKEN_ENV) or None
        if not token:
            print(f"admin endpoint disabled (set ${ADMIN_TOKEN_ENV} to enable /admin/targets)", file=sys.stderr)
        app = create_app(store, Pipeline(cfg, store, models), backend, model_name=name,
                         backend_guarded=token_filter, admin_token=token,
                         backend_alive=lambda: engine.poll() is None)   # /health: 503 once vLLM has exited
        print(f"agent front on http://{host}:{port}/v1 (k={cfg.k}, j={cfg.j}, threshold={cfg.threshold})",
              file=sys.stderr, flush=True)
        if live_targets:   # replicas naming the same file share the live targets (agents/store.py)
            print(f"live targets: {Path(live_targets).resolve()} (version {store.version}, {len(store.live_targets())} "
                  f"targets; re-read on change, at least every {store.recheck_s:g} s)", file=sys.stderr, flush=True)
        else:
            print("live targets: this process only (--live-targets FILE to persist them and share them "
                  "between replicas)", file=sys.stderr, flush=True)
        # uvicorn re-raises the SIGTERM it handled once it has shut down; make that an exception, so
        # the `finally` below still stops vLLM instead of the process dying with vLLM orphaned
        signal.signal(signal.SIGTERM, _exit_on_signal)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return 0
    finally:
        engine.terminate()
        try:
            engine.wait(30)
        except subprocess.TimeoutExpired:
            engine.kill()
