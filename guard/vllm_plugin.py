"""The class to name in vLLM: `--logits-processors unlearnkit.guard.vllm_plugin:UnlearnGuard`.

vLLM picks its model runner at start-up (V1 on CPU, Model Runner V2 by default on GPU) and loads
custom logits processors against that runner's interface. `UnlearnGuard` passes both loaders'
subclass checks and builds the matching adapter: MRv2 constructs processors with
(vllm_config, req_states), V1 with (vllm_config, device, is_pin_memory). The policy comes from
$UNLEARN_GUARD_POLICY (set by `unlearn serve` / `unlearn eval --guard`); without it the guard is
inert. A bad policy raises here, so the engine fails at start-up, not mid-request.
"""

from __future__ import annotations

from .runtime import FQCN  # noqa: F401 - re-exported
from .vllm_v1 import GuardProcessorV1
from .vllm_v2 import GuardProcessorV2


class UnlearnGuard(GuardProcessorV1, GuardProcessorV2):
    def __new__(cls, vllm_config, *args, **kwargs):
        if len(args) == 1 and not kwargs:                  # (vllm_config, req_states): Model Runner V2
            return GuardProcessorV2(vllm_config, *args)
        return GuardProcessorV1(vllm_config, *args, **kwargs)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        GuardProcessorV1.validate_params(sampling_params)
