"""The class to name in vLLM: `--logits-processors unlearnkit.guard.vllm_plugin:UnlearnGuard`.

vLLM picks its model runner at start-up (V1 on CPU, Model Runner V2 by default on GPU from vLLM
0.33) and loads custom logits processors against that runner's interface: V1's loader
(`vllm.v1.sample.logits_processor`) requires a subclass of its `LogitsProcessor`, MRv2's
(`vllm.v1.worker.gpu.sample.logits_processor.loader`) a subclass of its own, and rejects V1-only
classes. `UnlearnGuard` subclasses both adapters, so it passes both checks, and builds the one the
runner asks for: MRv2 constructs processors with (vllm_config, req_states), V1 with (vllm_config,
device, is_pin_memory). `unlearn serve` names it explicitly with `--logits-processors` and it is no
entry point (`vllm.logits_processors`): MRv2 loads entry-point processors always but runs their
`validate_params` only when `--logits-processors` names some (tests/test_vllm_loader.py).

The policy comes from $UNLEARN_GUARD_POLICY (set by `unlearn serve` / `unlearn eval --guard`);
without it the guard is inert. A bad policy raises here, so the engine fails at start-up, not
mid-request.

Tensor parallel: vLLM builds one processor per rank (each worker runs the sampler on the full
logits), so each rank loads the policy and classifies each request itself; classification is
deterministic (the same embedder, policy and prompt tokens), so every rank makes the same decisions
and withholds the same tokens. Info logs come from rank 0 only; warnings and errors from any rank.
"""

from __future__ import annotations

import logging

from .runtime import FQCN  # noqa: F401 - re-exported
from .vllm_v1 import GuardProcessorV1
from .vllm_v2 import GuardProcessorV2


def tensor_parallel_rank() -> int:
    """This worker's tensor-parallel rank; 0 outside a distributed vLLM worker."""
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank

        return int(get_tensor_model_parallel_rank())
    except Exception:   # no tensor-parallel group: a single process, or not in an engine
        return 0


def log_from_rank_zero(rank: int) -> None:
    """Every rank makes the same decisions: only rank 0 logs them (warnings and errors: all)."""
    if rank != 0:
        logging.getLogger("unlearnkit.guard").setLevel(logging.WARNING)


class UnlearnGuard(GuardProcessorV1, GuardProcessorV2):
    def __new__(cls, vllm_config, *args, **kwargs):
        log_from_rank_zero(tensor_parallel_rank())
        if len(args) == 1 and not kwargs and hasattr(args[0], "all_token_ids"):   # MRv2: (vllm_config, req_states)
            return GuardProcessorV2(vllm_config, *args)
        if len(args) + len(kwargs) == 2:                                          # V1: (vllm_config, device, is_pin_memory)
            return GuardProcessorV1(vllm_config, *args, **kwargs)
        raise TypeError("UnlearnGuard is built by vLLM as (vllm_config, req_states) under Model Runner V2 or "
                        f"(vllm_config, device, is_pin_memory) under V1; got {len(args) + 1} positional argument(s)"
                        f" and {sorted(kwargs)}")

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        GuardProcessorV1.validate_params(sampling_params)
