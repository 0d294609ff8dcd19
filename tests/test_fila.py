"""FILA: pure maths, statistics, and its invariants on a real PEFT model."""

import copy

import pytest
import torch

from unlearnkit.data.formatting import encode_all, pad_batch
from unlearnkit.data.synth import synth_split
from unlearnkit.training.fila import apply_fila, cached_fisher, fila_factors, fisher_statistics


def test_uniform_importance_reduces_to_truncated_svd():
    torch.manual_seed(0)
    W = torch.randn(12, 9, dtype=torch.float64)
    ones = torch.ones_like(W)
    A, B, residual = fila_factors(W, ones, ones, rank=3, scaling=2.0)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    best = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    assert torch.allclose(2.0 * B @ A, best, atol=1e-10)
    assert torch.allclose(residual, W - best, atol=1e-10)
    assert A.shape == (3, 9) and B.shape == (12, 3)


@pytest.mark.parametrize("shape", [(12, 9), (9, 12)])
def test_top_singular_triplets_match_full_svd(shape):
    from unlearnkit.training.fila import top_singular_triplets

    torch.manual_seed(3)
    M = torch.randn(*shape, dtype=torch.float64)
    U, S, Vh = top_singular_triplets(M, 4)
    U0, S0, Vh0 = torch.linalg.svd(M, full_matrices=False)
    assert torch.allclose(S, S0[:4], atol=1e-10)
    assert torch.allclose(U @ torch.diag(S) @ Vh, U0[:, :4] @ torch.diag(S0[:4]) @ Vh0[:4], atol=1e-10)


def test_factors_reconstruct_weight_in_storage_dtype():
    torch.manual_seed(1)
    W = torch.randn(16, 8)
    ff, fr = torch.rand(16, 8), torch.rand(16, 8)
    A, B, residual = fila_factors(W, ff, fr, rank=4, scaling=0.5)
    assert A.dtype == B.dtype == residual.dtype == torch.float32
    assert torch.allclose(residual + 0.5 * B @ A, W, atol=1e-5)


def test_importance_weighting_favours_important_rows():
    """Rows important for the forget set are approximated better than with plain SVD."""
    torch.manual_seed(2)
    W = torch.randn(10, 10, dtype=torch.float64)
    ff = torch.ones_like(W)
    ff[0] = 1e4  # row 0 matters for the forget set
    A, B, _ = fila_factors(W, ff, torch.ones_like(W), rank=2, scaling=1.0)
    uniform_A, uniform_B, _ = fila_factors(W, torch.ones_like(W), torch.ones_like(W), rank=2, scaling=1.0)
    err = (W - B @ A)[0].norm()
    err_uniform = (W - uniform_B @ uniform_A)[0].norm()
    assert err < err_uniform


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        fila_factors(torch.zeros(3, 4), torch.zeros(4, 3), torch.zeros(3, 4), rank=1, scaling=1.0)


def _batches(tokenizer, split, n, bs=1):
    enc = encode_all(tokenizer, synth_split(split, n_people=6)[:n], 96, split)
    return [pad_batch(enc[i:i + bs], tokenizer.pad_token_id) for i in range(0, len(enc), bs)]


def test_fisher_is_mean_squared_per_example_gradient(tiny):
    model, tokenizer = tiny
    model = copy.deepcopy(model)
    batches = _batches(tokenizer, "forget", 3)
    stats = fisher_statistics(model, batches, ["q_proj"])
    assert all(p.grad is None for p in model.parameters())  # statistics leave no gradients behind
    name = "model.layers.0.self_attn.q_proj"
    layer = dict(model.named_modules())[name]
    # by hand: sum over examples of (d log p / dW)^2, divided by answer tokens
    manual, tokens = torch.zeros_like(layer.weight), 0
    for batch in batches:
        from unlearnkit.training.losses import sequence_logprob

        model.zero_grad()
        logp, n = sequence_logprob(model(input_ids=batch["input_ids"]).logits, batch["labels"])
        logp.sum().backward()
        manual += layer.weight.grad ** 2
        tokens += int(n.sum())
    assert torch.allclose(stats[name], manual / tokens, rtol=1e-4, atol=1e-12)


def test_fisher_cache_round_trip(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a.weight": torch.ones(2, 2)}

    first = cached_fisher(tmp_path, "k", compute)
    second = cached_fisher(tmp_path, "k", compute)
    assert len(calls) == 1 and torch.equal(first["a.weight"], second["a.weight"])


@pytest.fixture
def fila_model(tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    base = copy.deepcopy(model)
    targets = ["q_proj", "v_proj", "down_proj"]
    ff = fisher_statistics(base, _batches(tokenizer, "forget", 4), targets)
    fr = fisher_statistics(base, _batches(tokenizer, "retain", 6), targets)
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    n = apply_fila(peft_model, ff, fr)
    return base, peft_model, tokenizer, n


def test_output_unchanged_at_init(fila_model):
    base, peft_model, tokenizer, n = fila_model
    assert n == 6  # 3 module kinds x 2 layers
    ids = _batches(tokenizer, "forget", 2, bs=2)[0]["input_ids"]
    with torch.no_grad():
        before = base(input_ids=ids).logits
        after = peft_model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5)
    # and the adapter is not the default zero init: the base weights really changed
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_B["default"].weight.abs().max() > 0
    assert not torch.allclose(layer.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight)


def test_merged_export_equals_trained_peft_model(fila_model, tmp_path):
    from transformers import AutoModelForCausalLM

    _, peft_model, tokenizer, _ = fila_model
    with torch.no_grad():  # "train": move the adapter away from its init
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.05)
    ids = _batches(tokenizer, "forget", 2, bs=2)[0]["input_ids"]
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    peft_model.merge_and_unload().save_pretrained(tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
