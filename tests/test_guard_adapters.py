"""Both vLLM adapters driven by hand: V1 with constructed BatchUpdates (added, removed, moved,
swapped requests; slot reuse), Model Runner V2 with constructed request state and LogitsContexts
(slot reuse, rows reordered, a resumed request, draft-token rows). A fake runtime flags prompts
that start with token 1 and forbids the sequence [4, 5] and the single token 9."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.guard.decode import RequestGuard
from unlearnkit.guard.trie import TokenTrie

pytest.importorskip("vllm")
VOCAB = 12
NEG = float("-inf")


class FakeRuntime:
    def __init__(self):
        self.calls = []

    def guards(self, requests):
        self.calls.append(len(requests))
        return [RequestGuard(TokenTrie([[4, 5], [9]])) if request[0] and request[0][0] == 1 else None
                for request in requests]


def params():
    from vllm import SamplingParams

    return SamplingParams(max_tokens=8)


def test_v1_adapter_tracks_the_persistent_batch():
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from unlearnkit.guard.vllm_v1 import GuardProcessorV1

    runtime = FakeRuntime()
    proc = GuardProcessorV1(None, torch.device("cpu"), False, runtime=runtime)
    assert not proc.is_argmax_invariant()
    out_a, out_b, out_c = [], [], []
    proc.update_state(BatchUpdate(3, removed=[], added=[(0, params(), [1, 7], out_a), (1, params(), [2, 7], out_b),
                                                        (2, params(), [1, 8], out_c)], moved=[]))
    assert runtime.calls == [3]                              # one classification call for the batch
    logits = proc.apply(torch.zeros(3, VOCAB))
    assert logits[0, 9] == NEG and logits[2, 9] == NEG and logits[1].eq(0).all()   # b unflagged: untouched
    out_a.append(4)                                          # a decodes 4: 5 would complete [4, 5]
    logits = proc.apply(torch.zeros(3, VOCAB))
    assert logits[0, 5] == NEG and logits[2, 5] == 0
    proc.update_state(None)                                  # no change in the batch: nothing reclassified
    assert runtime.calls == [3]
    # a finishes; c moves into its slot; then b and c swap
    proc.update_state(BatchUpdate(2, removed=[0], added=[], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    logits = proc.apply(torch.zeros(2, VOCAB))
    assert logits[0, 9] == NEG and logits[0, 5] == 0 and logits[1].eq(0).all()
    proc.update_state(BatchUpdate(2, removed=[], added=[], moved=[(0, 1, MoveDirectionality.SWAP)]))
    logits = proc.apply(torch.zeros(2, VOCAB))
    assert logits[1, 9] == NEG and logits[0].eq(0).all()
    # slot 1 (c) is reused by an unflagged request: its guard must not survive
    proc.update_state(BatchUpdate(2, removed=[1], added=[(1, params(), [3], [])], moved=[]))
    assert proc.apply(torch.zeros(2, VOCAB)).eq(0).all()


def test_v1_adapter_without_policy_is_inert(monkeypatch):
    from unlearnkit.guard.runtime import POLICY_ENV, GuardRuntime

    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert GuardRuntime.from_env("unused") is None


class FakeReqStates:
    """The fields of MRv2's LogitsProcRequestState the adapter reads (CPU tensors)."""

    def __init__(self, max_reqs=4, max_len=32):
        self.prompt_len = SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32))
        self.prefill_len = SimpleNamespace(np=np.zeros(max_reqs, dtype=np.int32))
        self.all_token_ids = SimpleNamespace(gpu=torch.zeros(max_reqs, max_len, dtype=torch.int32))
        self.total_len = SimpleNamespace(gpu=torch.zeros(max_reqs, dtype=torch.int32))

    def admit(self, slot, prompt, output=()):
        tokens = list(prompt) + list(output)
        self.prompt_len.np[slot] = len(prompt)
        self.prefill_len.np[slot] = len(tokens)
        self.all_token_ids.gpu[slot, :len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
        self.total_len.gpu[slot] = len(tokens)

    def commit(self, slot, token):
        n = int(self.total_len.gpu[slot])
        self.all_token_ids.gpu[slot, n] = token
        self.total_len.gpu[slot] = n + 1


def ctx(row_slots, local=None, input_ids=None):
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

    local = local or [0] * len(row_slots)
    batch = list(dict.fromkeys(row_slots))
    return LogitsContext(expanded_idx_mapping=torch.tensor(row_slots), idx_mapping=torch.tensor(batch),
                         idx_mapping_np=np.array(batch), expanded_local_pos=torch.tensor(local),
                         input_ids=torch.tensor(input_ids or [0] * len(row_slots)),
                         pos=torch.zeros(len(row_slots), dtype=torch.long),
                         seq_lens_upper_bound_np=np.zeros(len(batch), dtype=np.int32))


def test_v2_adapter_slots_rows_and_reuse():
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    state, runtime = FakeReqStates(), FakeRuntime()
    proc = GuardProcessorV2(None, state, runtime=runtime)
    assert proc.add_request(0, params()) and proc.add_request(2, params())
    state.admit(0, [1, 7])
    state.admit(2, [2, 7])
    proc.apply_staged_writes()                               # classification: once, for both
    assert runtime.calls == [2] and set(proc.guards) == {0}
    # rows are in batch order, not slot order: row 0 is slot 2 (unflagged), row 1 is slot 0
    logits = proc.apply(torch.zeros(2, VOCAB), ctx([2, 0]))
    assert logits[0].eq(0).all() and logits[1, 9] == NEG and logits[1, 5] == 0
    state.commit(0, 4)                                       # slot 0 decoded 4
    logits = proc.apply(torch.zeros(2, VOCAB), ctx([0, 2]))
    assert logits[0, 5] == NEG and logits[1].eq(0).all()
    proc.apply_staged_writes()                               # nothing pending: no classification
    assert runtime.calls == [2]
    # slot 0 is reused by an unflagged request: the old guard is gone at add time
    proc.add_request(0, params())
    state.admit(0, [3, 3])
    proc.apply_staged_writes()
    assert proc.apply(torch.zeros(1, VOCAB), ctx([0])).eq(0).all()


def test_v2_adapter_resumed_request_and_draft_rows():
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    state, runtime = FakeReqStates(), FakeRuntime()
    proc = GuardProcessorV2(None, state, runtime=runtime)
    proc.add_request(1, params())
    state.admit(1, [1, 7], output=[8, 4])                    # resumed after preemption: output so far
    proc.apply_staged_writes()
    assert proc.guards[1].consumed == 2
    logits = proc.apply(torch.zeros(1, VOCAB), ctx([1]))
    assert logits[0, 5] == NEG                               # the replayed 4 is part of the match
    state.commit(1, 6)
    # speculative decoding: three rows for slot 1; the draft tokens are 4 then 5
    logits = proc.apply(torch.zeros(3, VOCAB), ctx([1, 1, 1], local=[0, 1, 2], input_ids=[6, 4, 5]))
    assert logits[0, 5] == 0                                 # after ... 6: no match
    assert logits[1, 5] == NEG                               # after draft 4: 5 completes [4, 5]
    assert logits[2, 5] == 0 and logits[2, 9] == NEG
    state.commit(1, 8)                                       # two drafts accepted: both read in the next step
    state.commit(1, 4)
    logits = proc.apply(torch.zeros(1, VOCAB), ctx([1]))
    assert proc.guards[1].consumed == 5 and logits[0, 5] == NEG


def test_plugin_builds_the_adapter_for_the_runner():
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2

    from unlearnkit.guard.vllm_plugin import UnlearnGuard
    from unlearnkit.guard.vllm_v1 import GuardProcessorV1
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    assert issubclass(UnlearnGuard, V1) and issubclass(UnlearnGuard, V2)   # both loaders accept it
    cfg = SimpleNamespace(model_config=SimpleNamespace(tokenizer="unused"))
    assert type(UnlearnGuard(cfg, FakeReqStates())) is GuardProcessorV2
    assert type(UnlearnGuard(cfg, torch.device("cpu"), False)) is GuardProcessorV1
