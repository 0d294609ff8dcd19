"""A served policy replaced on disk is taken up without a restart (guard/reload.py): the watch itself with
a fake loader and clock, then the V1 adapter over real tiny policies (a new target withheld from the next
admitted request on, a request already decoding keeping its guard, a broken replacement leaving the old
policy in force) and the front end's request checks reading the new policy's limits."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch

from tests.conftest import GUARD_RETAIN
from unlearnkit.guard.reload import PolicyWatch, signature


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _replace(root, content: dict) -> None:
    """As `unlearn guard build --out` does: the new directory renamed over the old one."""
    new = root.with_name(root.name + ".new")
    new.mkdir()
    (new / "policy.json").write_text(json.dumps(content))
    old = root.with_name(root.name + ".old")
    root.rename(old)
    new.rename(root)
    shutil.rmtree(old)


def test_the_watch_swaps_in_a_replaced_directory_after_its_period_and_keeps_the_old_on_failure(tmp_path):
    from unlearnkit.guard.policy import PolicyError

    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.json").write_text(json.dumps({"v": 1}))
    clock, loads = Clock(), []

    def load():
        loads.append(1)
        got = json.loads((root / "policy.json").read_text())
        if got.get("broken"):
            raise PolicyError("checksum mismatch")
        if got.get("flaky") and len(loads) < 5:
            raise MemoryError("two policies do not fit")
        return got

    watch = PolicyWatch(root, load, {"v": 1}, signature(root), period=2.0, background=False, clock=clock)
    _replace(root, {"v": 2})
    assert watch.get() == {"v": 1} and loads == []          # not looked at before its period
    clock.now = 2.0
    assert watch.get() == {"v": 2} and watch.reloads == 1
    clock.now = 4.0
    assert watch.get() == {"v": 2} and len(loads) == 1       # unchanged: not loaded again
    shutil.rmtree(root)                                      # mid-rename: no directory
    clock.now = 6.0
    assert watch.get() == {"v": 2} and len(loads) == 1
    root.mkdir()
    (root / "policy.json").write_text(json.dumps({"v": 3, "broken": True}))
    clock.now = 8.0
    assert watch.get() == {"v": 2} and len(loads) == 2       # failed: the old one stays in force
    clock.now = 10.0
    assert watch.get() == {"v": 2} and len(loads) == 2       # a policy error: not retried until it changes
    _replace(root, {"v": 4, "flaky": True})
    clock.now = 12.0
    assert watch.get() == {"v": 2} and len(loads) == 3       # another error: retried at the next period
    clock.now = 14.0
    assert watch.get() == {"v": 2} and len(loads) == 4
    clock.now = 16.0
    assert watch.get() == {"v": 4, "flaky": True} and len(loads) == 5 and watch.reloads == 2


def test_a_background_load_never_blocks_get_and_is_swapped_in_once(tmp_path):
    import threading

    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.json").write_text("{}")
    release, loads = threading.Event(), []
    watch = PolicyWatch(root, lambda: loads.append(1) or (release.wait(10) and "new"), "old", signature(root),
                        period=0.0)
    _replace(root, {"v": 2})
    assert watch.get() == "old"                              # loading in the background
    assert watch.get() == "old" and len(loads) == 1          # one load at a time
    release.set()
    watch.wait(10)
    for _ in range(3):
        assert watch.get() == "new"
    watch.wait(10)
    assert len(loads) == 1 and watch.reloads == 1            # the finished load is not loaded again


def test_a_replacement_during_the_first_load_is_taken_up(tmp_path):
    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.json").write_text(json.dumps({"v": 1}))
    before = signature(root)                                 # taken before the first load
    _replace(root, {"v": 2})                                 # lands while the server starts
    watch = PolicyWatch(root, lambda: json.loads((root / "policy.json").read_text()), {"v": 1}, before,
                        period=0.0, background=False)
    assert watch.get() == {"v": 2}


def test_a_load_that_saw_the_files_change_is_discarded_and_retried(tmp_path):
    root = tmp_path / "policy"
    root.mkdir()
    (root / "policy.json").write_text(json.dumps({"v": 1}))
    seen = []

    def load():
        seen.append(json.loads((root / "policy.json").read_text()))
        if len(seen) == 1:
            _replace(root, {"v": 3})                         # a second rebuild lands mid-load
        return seen[-1]

    watch = PolicyWatch(root, load, {"v": 1}, signature(root), period=0.0, background=False)
    _replace(root, {"v": 2})
    assert watch.get() == {"v": 1}                           # the mixed load is dropped
    assert watch.get() == {"v": 3} and len(seen) == 2


def _build(out, forget, tiny_dir):
    from unlearnkit.data.records import QA
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer

    build_policy(forget, out, str(tiny_dir), load_tokenizer(str(tiny_dir)), GuardConfig(fpr=0.1),
                 retain=[QA(q, "an answer") for q in GUARD_RETAIN], progress=lambda *_: None)


def test_the_engine_guard_takes_up_a_rebuilt_policy_between_batches(tmp_path, tiny_dir, guard_forget_set, monkeypatch,
                                                                    caplog):
    pytest.importorskip("vllm")
    from types import SimpleNamespace

    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from unlearnkit.data.formatting import prompt_text
    from unlearnkit.guard import runtime as RT
    from unlearnkit.guard.vllm_v1 import GuardProcessorV1
    from unlearnkit.models.loading import load_tokenizer

    kalo = [qa for qa in guard_forget_set if "Kalo" in qa.question]
    root = tmp_path / "served"
    _build(root, kalo, tiny_dir)                                # request 1: Kalo Mirten only
    monkeypatch.setenv(RT.POLICY_ENV, str(root))
    proc = GuardProcessorV1(SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(tiny_dir))),
                            torch.device("cpu"), False)
    proc.watch.period = 0.0
    tok = load_tokenizer(str(tiny_dir))
    ines = tok(prompt_text(tok, "What award did Ines Farrow win?"), add_special_tokens=False)["input_ids"]
    about_kalo = tok(prompt_text(tok, "Where does Kalo Mirten live?"), add_special_tokens=False)["input_ids"]

    proc.update_state(BatchUpdate(1, removed=[], added=[(0, SamplingParams(max_tokens=8), about_kalo, [])], moved=[]))
    kalo_guard = proc.slots.slots[0][0]
    assert kalo_guard is not None and not kalo_guard.always_on
    assert not [t["name"] for t in proc.runtime.policy.targets if "Ines" in t["name"]]

    old_runtime = proc.runtime
    _build(root, guard_forget_set, tiny_dir)                    # request 2 arrives: Ines Farrow added, no restart
    proc.update_state(BatchUpdate(2, removed=[], added=[(1, SamplingParams(max_tokens=8), ines, [])], moved=[]))
    proc.watch.wait(60)
    proc.update_state(BatchUpdate(3, removed=[], added=[(2, SamplingParams(max_tokens=8), ines, [])], moved=[]))
    assert proc.watch.reloads == 1
    assert [t["name"] for t in proc.runtime.policy.targets if "Ines" in t["name"]]
    before, after = proc.slots.slots[1][0], proc.slots.slots[2][0]
    assert after is not None and not after.always_on           # the new target's question is flagged
    assert proc.slots.slots[0][0] is kalo_guard                 # the request already decoding keeps its guard
    name = tok(" Ines Farrow", add_special_tokens=False)["input_ids"]

    def completes_the_name(guard) -> bool:
        if guard is None:
            return False
        guard.feed(name[:-1])
        return name[-1] in guard.blocked()

    # the same prompt: admitted while the new policy loaded (the old policy's guard), and after it
    assert completes_the_name(after) and not completes_the_name(before)
    assert not completes_the_name(old_runtime.guards([(ines, None)])[0])

    in_force = proc.runtime
    (root / "penalty.safetensors").write_bytes(b"corrupt")     # a broken replacement
    with caplog.at_level(logging.ERROR, logger="unlearnkit.guard"):
        proc.update_state(BatchUpdate(3, removed=[1], added=[(1, SamplingParams(max_tokens=8), ines, [])], moved=[]))
        proc.watch.wait(60)
        proc.update_state(BatchUpdate(3, removed=[1], added=[(1, SamplingParams(max_tokens=8), ines, [])], moved=[]))
    assert proc.runtime is in_force and proc.watch.reloads == 1   # the old policy still in force
    assert "does not match its checksum" in caplog.text and "stays in force" in caplog.text
    assert completes_the_name(proc.slots.slots[1][0])


def test_the_front_end_checks_read_the_replaced_policy(tmp_path, tiny_dir, guard_forget_set, monkeypatch):
    from unlearnkit.guard import runtime as RT

    root = tmp_path / "served"
    _build(root, guard_forget_set, tiny_dir)
    monkeypatch.setenv(RT.POLICY_ENV, str(root))
    monkeypatch.setattr(RT, "_META_CACHE", {})
    first = RT.policy_meta_from_env()
    RT._META_CACHE[str(root)].period = 0.0
    meta = json.loads((root / "policy.json").read_text())
    meta["calibration"]["threshold"] = 0.123
    tmp = root.with_name("new")
    shutil.copytree(root, tmp)
    (tmp / "policy.json").write_text(json.dumps(meta))
    shutil.rmtree(root)
    os.rename(tmp, root)
    assert RT.policy_meta_from_env()["calibration"]["threshold"] == 0.123 != first["calibration"]["threshold"]


def test_the_model_runner_v2_adapter_takes_up_a_rebuilt_policy_too(tmp_path, tiny_dir, guard_forget_set, monkeypatch):
    pytest.importorskip("vllm")
    from types import SimpleNamespace

    from vllm import SamplingParams

    from tests.test_guard_adapters import FakeReqStates
    from unlearnkit.data.formatting import prompt_text
    from unlearnkit.guard import runtime as RT
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2
    from unlearnkit.models.loading import load_tokenizer

    root = tmp_path / "served"
    _build(root, [qa for qa in guard_forget_set if "Kalo" in qa.question], tiny_dir)
    monkeypatch.setenv(RT.POLICY_ENV, str(root))
    state = FakeReqStates(max_reqs=4, max_len=96)
    proc = GuardProcessorV2(SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(tiny_dir))), state)
    proc.watch.period = 0.0
    old_runtime = proc.runtime
    tok = load_tokenizer(str(tiny_dir))
    ines = tok(prompt_text(tok, "What award did Ines Farrow win?"), add_special_tokens=False)["input_ids"]
    _build(root, guard_forget_set, tiny_dir)
    proc.add_request(0, SamplingParams(max_tokens=8))
    state.admit(0, ines)
    proc.apply_staged_writes()                 # starts the load; classified by the policy in force
    proc.watch.wait(60)
    proc.add_request(1, SamplingParams(max_tokens=8))
    state.admit(1, ines)
    proc.apply_staged_writes()
    assert proc.runtime is not old_runtime and proc.watch.reloads == 1
    assert [t["name"] for t in proc.runtime.policy.targets if "Ines" in t["name"]]
    name = tok(" Ines Farrow", add_special_tokens=False)["input_ids"]
    guard = proc.guards[1]
    guard.feed(name[:-1])
    assert name[-1] in guard.blocked()
