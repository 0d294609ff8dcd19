"""Inference-time guards: stop forget-set knowledge at decode time, weights untouched (issue 4).

`trie` and `decode` are plain torch/Python (no vLLM import): the forbidden-sequence trie and the
per-request decode state that both vLLM logits-processor adapters drive."""
