"""Several training processes on CPU (gloo): FILA's statistics reduced across ranks, and a
two-process `accelerate launch` run that ends in the same merged checkpoint as one process
with the same global batch.

Why the end-to-end comparison can be tight: the losses are token means per batch and DDP
averages the ranks' gradients, so two ranks with b examples each equal one process with 2b
examples only when every example has the same number of answer tokens; the data here is picked
so (`equal_length_records`). What remains is fp32 rounding: the Fisher sums and the gradient
averages add in another order, and batches padded to other lengths run other matmul shapes.
Those differ at ~1e-7 relative, so the merged weights are compared at atol 1e-5 (the training
moves them by ~1e-3, two orders of magnitude larger, so a wrong shard, a missing reduction or a
double count fails the test; measured differences are printed with -s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unlearnkit.data.formatting import encode_all, n_answer_tokens, pad_batch
from unlearnkit.data.synth import synth_qa
from unlearnkit.training.fila import cached_fisher, fisher_statistics, rank_shard

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def equal_length_records(tokenizer, n: int, seed: int = 0):
    """`n` synthetic QA whose answers all have one answer-token count (the commonest one)."""
    records = synth_qa(40, seed=seed)
    encoded = encode_all(tokenizer, records, 96, "pool")
    counts = [n_answer_tokens(e) for e in encoded]
    common = max(set(counts), key=counts.count)
    picked = [r for r, c in zip(records, counts) if c == common]
    if len(picked) < n:
        pytest.skip(f"only {len(picked)} synthetic answers share one length; the test needs {n}")
    return picked[:n]


# ---------------------------------------------------------------- statistics pass, two ranks
def _statistics_worker(rank: int, world: int, port: int, model_dir: str, out_dir: str):
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        examples = encode_all(tok, synth_qa(3, seed=1), 96, "forget")
        for i, e in enumerate(examples):
            e["index"] = i
        shard = rank_shard(examples)
        batches = (pad_batch([{k: e[k] for k in ("input_ids", "attention_mask", "labels")}], tok.pad_token_id)
                   for e in shard)
        calls = []

        def compute():
            calls.append(1)
            return fisher_statistics(model, batches, TARGETS)

        stats = cached_fisher(Path(out_dir) / "cache", "k", compute)
        again = cached_fisher(Path(out_dir) / "cache", "k", compute)  # now a hit on every rank
        torch.save({"stats": stats, "again": again, "indices": [e["index"] for e in shard], "calls": len(calls)},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fisher_statistics_of_two_ranks_equal_one_process(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.multiprocessing.spawn(_statistics_worker, args=(2, _free_port(), str(tiny_dir), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    examples = encode_all(tok, synth_qa(3, seed=1), 96, "forget")
    single = fisher_statistics(model, (pad_batch([e], tok.pad_token_id) for e in examples), TARGETS)

    # disjoint shards that together are the whole set: nothing counted twice, nothing left out
    a, b = ranks[0]["indices"], ranks[1]["indices"]
    assert not set(a) & set(b) and sorted(a + b) == list(range(len(examples))) and a and b
    for r in ranks:
        assert r["calls"] == 1  # the second call loaded rank 0's file on both ranks
        assert set(r["stats"]) == set(single)
        for name, value in single.items():
            assert torch.allclose(r["stats"][name], value, rtol=1e-5, atol=1e-12), name
            assert torch.equal(r["again"][name], ranks[0]["stats"][name])
    # every rank holds the same statistics, so every rank initialises the LoRA factors alike
    for name in single:
        assert torch.equal(ranks[0]["stats"][name], ranks[1]["stats"][name])
    # a shard alone is not the answer (the reduction is what makes it whole)
    half = fisher_statistics(model, (pad_batch([examples[i]], tok.pad_token_id) for i in a), TARGETS)
    assert not all(torch.allclose(half[n], single[n], rtol=1e-3) for n in single)


# ---------------------------------------------------------------- accelerate launch, end to end
def _write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps({"question": r.question, "answer": r.answer}) + "\n" for r in records))
    return f"file:{path}"


def _train(tmp_path: Path, tag: str, cfg: dict, processes: int, *flags: str, launch: str | None = "ddp",
           gpu: bool = False) -> tuple[Path, float]:
    import time

    import yaml

    name = f"{tag}-{processes}p" + (f"-{launch}" if launch and launch != "ddp" else "")
    out, config = tmp_path / name, tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**cfg, "output_dir": str(out)}))
    env = {**os.environ, "UNLEARN_CACHE": str(tmp_path / f"cache-{tag}-{processes}"), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    train = ["-m", "unlearnkit.cli", "train", "--config", str(config), *flags]
    if launch is None:
        cmd = [sys.executable, *train]
    else:
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
               str(REPO / f"configs/accelerate/{launch}.yaml"), "--num_processes", str(processes),
               "--main_process_port", str(_free_port()), *train]
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    seconds = time.time() - started
    assert done.returncode == 0, done.stderr[-4000:]
    return out, seconds


def _config(model: Path, forget: str, retain: str, batch: int, **extra) -> dict:
    cfg = {"model": str(model), "method": {"name": "undial", "gamma": 3.0},
           "data": {"forget": forget, "retain": retain, "max_length": 96},
           "optim": {"max_steps": 2, "batch_size": batch, "lr": 1e-3, "precision": "fp32", "save_steps": -1,
                     "logging_steps": 1, "group_by_length": False}}
    cfg.update(extra)
    return cfg


def _undial_inputs(tiny_dir: Path, tmp_path: Path, mode: str) -> tuple[str, str, dict]:
    """The forget and retain specs of the end-to-end comparisons (8 equal-length forget answers) and
    the config's extra keys for `mode` ("lora-fila" or "full")."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    forget = _write_jsonl(tmp_path / "forget.jsonl", equal_length_records(tok, 8))
    retain = _write_jsonl(tmp_path / "retain.jsonl", synth_qa(3, seed=5))
    return forget, retain, ({"mode": "lora", "lora": {"r": 2, "init": "fila"}} if mode == "lora-fila" else {})


def _weight_gap(base_dir: Path, one: Path, other: Path) -> tuple[float, float]:
    """(max |w_one - w_other|, max |w_one - w_base|) over two finished runs' merged weights."""
    from safetensors.torch import load_file

    base = load_file(str(base_dir / "model.safetensors"))
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(other / "model.safetensors"))
    assert set(w1) == set(w2)
    diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    moved = max(float((w1[k] - base[k]).abs().max()) for k in w1 if k in base)
    return diff, moved


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lora-fila", "full"])
def test_two_processes_end_where_one_process_ends(tiny_dir, tmp_path, mode):
    """UnDIAL (frozen reference model) for 2 steps over 8 examples: 2 ranks x 2 vs 1 process x 4."""
    forget, retain, extra = _undial_inputs(tiny_dir, tmp_path, mode)
    one, t1 = _train(tmp_path, mode, _config(tiny_dir, forget, retain, 4, **extra), 1, launch=None)
    two, t2 = _train(tmp_path, mode, _config(tiny_dir, forget, retain, 2, **extra), 2)

    run = json.loads((two / "run.json").read_text())
    assert run["world_size"] == 2 and run["sharded_weights"] is None and run["weights_held_per_process"] == 1.0
    diff, moved = _weight_gap(tiny_dir, one, two)
    print(f"\n{mode}: 1 process {t1:.1f} s, 2 processes {t2:.1f} s; max |w1 - w2| = {diff:.2e}, "
          f"max |w1 - w0| = {moved:.2e}")
    assert moved > 1e-4  # the runs trained
    assert diff < 1e-5


@pytest.mark.slow
def test_npo_with_lora_reference_trains_on_two_processes(tiny_dir, tmp_path):
    """NPO's reference is the adapter switched off, reached through the DDP wrapper."""
    cfg = _config(tiny_dir, "synth/forget?people=4&forget=1", "synth/retain?people=4&forget=1", 2,
                  mode="lora", lora={"r": 2})
    cfg["method"] = {"name": "npo"}
    out, _ = _train(tmp_path, "npo", cfg, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["steps"] == 2


def test_a_run_that_cannot_shard_is_refused_before_training(tiny_dir, tmp_path):
    from unlearnkit.config import from_dict
    from unlearnkit.errors import RunError
    from unlearnkit.training.config import EvalConfig, TrainConfig
    from unlearnkit.training.run import check_shardable

    cfg = from_dict(TrainConfig, _config(tiny_dir, "synth/forget", "synth/retain", 4))
    check_shardable(cfg, 8, 2)
    check_shardable(cfg, 3, 1)  # one process: a short last batch is fine
    with pytest.raises(RunError, match=r"cannot shard 7 forget examples over 2 processes x optim.batch_size=4"):
        check_shardable(cfg, 7, 2)
    check_shardable(cfg, 100, 2, "FSDP")
    cfg.eval = from_dict(EvalConfig, {"every_steps": 1, "metric": "forget_prob"})
    with pytest.raises(RunError, match="FSDP shards the weights.*evaluation during training.*ddp.yaml"):
        check_shardable(cfg, 100, 2, "FSDP")
    check_shardable(cfg, 100, 2)  # data parallel: rank 0 holds the whole model to measure


def test_the_launch_kind_decides_whether_the_export_gathers_weights():
    from unlearnkit.errors import RunError
    from unlearnkit.training.run import sharded_weights

    assert sharded_weights("DistributedType.FSDP", {}) == "FSDP"
    assert sharded_weights("DistributedType.DEEPSPEED", {}) == "DeepSpeed"
    assert sharded_weights("DistributedType.MULTI_GPU", {}) is None
    assert sharded_weights("DistributedType.MULTI_GPU", {"ACCELERATE_USE_FSDP": "true"}) == "FSDP"
    assert sharded_weights("DistributedType.MULTI_CPU", {"ACCELERATE_USE_FSDP": "false"}) is None
    # accelerate runs an FSDP launch of CPU processes as plain data parallel: refused, not silently changed
    with pytest.raises(RunError, match="asked for FSDP.*GPU processes only.*MULTI_CPU.*ddp.yaml"):
        sharded_weights("DistributedType.MULTI_CPU", {"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(RunError, match="asked for DeepSpeed.*GPU processes only.*NO"):
        sharded_weights("DistributedType.NO", {"ACCELERATE_USE_DEEPSPEED": "true"})


def test_a_resume_under_another_engine_is_refused(tmp_path):
    """A ZeRO-3 or FSDP checkpoint has another layout than a plain one (a plain resume of a ZeRO-3
    run would find no optimizer state and go on silently without it)."""
    from unlearnkit.errors import RunError
    from unlearnkit.training.run import _prepare_output

    out, work = tmp_path / "run", tmp_path / "run.partial"
    _prepare_output(out, work, "cfg", resume=False, overwrite=False, world=2, engine="FSDP")
    assert json.loads((work / "launch.json").read_text()) == {"world_size": 2, "sharded_weights": "FSDP"}
    _prepare_output(out, work, "cfg", resume=True, overwrite=False, world=2, engine="FSDP")
    with pytest.raises(RunError, match="launched under FSDP, this launch is without a sharding engine"):
        _prepare_output(out, work, "cfg", resume=True, overwrite=False, world=2, engine=None)
    with pytest.raises(RunError, match="launched under FSDP, this launch is under DeepSpeed"):
        _prepare_output(out, work, "cfg", resume=True, overwrite=False, world=2, engine="DeepSpeed")
    # a run interrupted before launch.json named the engine was a plain or DDP one
    (work / "launch.json").write_text(json.dumps({"world_size": 2}))
    _prepare_output(out, work, "cfg", resume=True, overwrite=False, world=2, engine=None)


@pytest.mark.slow
def test_two_process_launch_refusals_reach_every_rank(tiny_dir, tmp_path):
    """Both ranks stop with the reason (none hangs waiting for the other) and nothing is written."""
    cfg = _config(tiny_dir, "synth/forget?people=4&forget=1", "synth/retain?people=4&forget=1", 8)
    with pytest.raises(AssertionError, match="cannot shard 10 forget examples over 2 processes"):
        _train(tmp_path, "short", cfg, 2)
    assert [p.name for p in tmp_path.glob("short-2p*")] == ["short-2p.yaml"]
    # an interrupted one-process run is not continued by two processes (global batch, data order)
    partial = tmp_path / "resumed-2p.partial"
    partial.mkdir()
    (partial / "launch.json").write_text(json.dumps({"world_size": 1}))
    cfg["optim"]["batch_size"] = 2
    with pytest.raises(AssertionError, match="interrupted run used 1 process.*this launch has 2"):
        _train(tmp_path, "resumed", cfg, 2, "--resume")
    # FSDP over CPU processes: every rank stops with the reason
    with pytest.raises(AssertionError, match="asked for FSDP.*GPU processes only"):
        _train(tmp_path, "fsdp", cfg, 2, launch="fsdp")
    assert not list(tmp_path.glob("fsdp-2p-fsdp.partial"))


# ---------------------------------------------------------------- sharded engines, on GPUs only
def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.slow
@pytest.mark.skipif(_gpus() == 0, reason="FSDP and DeepSpeed run on GPU processes only (accelerate)")
@pytest.mark.parametrize("launch", ["fsdp", "deepspeed_zero3"])
@pytest.mark.parametrize("mode", ["lora-fila", "full"])
def test_sharded_launches_on_gpus_end_where_a_plain_run_ends(tiny_dir, tmp_path, mode, launch):
    """UnDIAL (frozen reference) with the weights sharded over min(2, GPUs) processes, exported by
    gathering them whole, against one plain process with the same global batch. With one GPU the
    engine wraps and gathers the model but has no one to share it with."""
    if launch.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    world = min(2, _gpus())
    forget, retain, extra = _undial_inputs(tiny_dir, tmp_path, mode)
    one, t1 = _train(tmp_path, mode, _config(tiny_dir, forget, retain, 4, **extra), 1, launch=None, gpu=True)
    many, t2 = _train(tmp_path, mode, _config(tiny_dir, forget, retain, 4 // world, **extra), world,
                      launch=launch, gpu=True)

    run = json.loads((many / "run.json").read_text())
    assert run["world_size"] == world and run["device"].startswith("cuda")
    assert run["sharded_weights"] == ("FSDP" if launch == "fsdp" else "DeepSpeed")
    if world > 1:
        assert run["weights_held_per_process"] < 0.75, run["weights_held_per_process"]
    diff, moved = _weight_gap(tiny_dir, one, many)
    print(f"\n{mode} ({launch}, {world} GPU process(es)): plain {t1:.1f} s, sharded {t2:.1f} s; "
          f"max |w1 - w2| = {diff:.2e}, max |w1 - w0| = {moved:.2e}, held {run['weights_held_per_process']}")
    assert moved > 1e-4
    assert diff < 1e-4  # GPU kernels differ from run to run in reduction order (1e-6 relative)
