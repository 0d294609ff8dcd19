"""vLLM V1 logits-processor adapter (the interface vLLM's CPU backend uses).

Thin: batch bookkeeping maps onto `GuardSlots`, classification onto `GuardRuntime.guards`, called
once per batch of newly added requests in `update_state` (not per decode step), with the policy in
force then (a replaced policy directory is taken up without a restart: guard/reload.py). vLLM reports
removed, then added, then moved requests; output-token lists are live references that vLLM
appends to, so the guard advances its trie matches lazily in `apply`.
"""

from __future__ import annotations

from typing import Optional

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .decode import GuardSlots
from .runtime import GuardRuntime, engine_runtime, validate_sampling_params


class GuardProcessorV1(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool,
                 runtime: Optional[GuardRuntime] = None):
        self.runtime, self.watch = engine_runtime(vllm_config, runtime)   # the policy watched: guard/reload.py
        self.slots = GuardSlots()

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        validate_sampling_params(sampling_params.extra_args)

    def is_argmax_invariant(self) -> bool:
        return False  # it blocks and penalises tokens: greedy decoding must see it

    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        if batch_update is None or self.runtime is None:
            return
        if self.watch is not None:   # a replaced policy classifies the requests admitted from now on
            self.runtime = self.watch.get()
        for index in batch_update.removed:
            self.slots.remove(index)
        added = list(batch_update.added)
        guards = self.runtime.guards([(prompt, params.extra_args, params.temperature) for _, params, prompt, _ in added])
        for (index, _, _, output_ids), guard in zip(added, guards):
            self.slots.add(index, guard, output_ids)
        for src, dst, direction in batch_update.moved:
            self.slots.move(src, dst, swap=direction == MoveDirectionality.SWAP)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.slots.apply(logits) if self.slots.slots else logits
