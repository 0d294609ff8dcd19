"""Inference-time guards: stop forget-set knowledge at decode time, weights untouched (docs/architecture.md).

`trie` and `decode` are plain torch/Python (no vLLM import): the forbidden-sequence trie and the
per-request decode state that both vLLM logits-processor adapters drive."""
