"""The weights attacks: the quantizer against a naive loop and its error bounds, refusals, the one
attack registry as the CLI's source, benign relearning's material, and the quantization attack end
to end on a tiny model (transformers engine, seconds)."""

import json

import pytest
import torch
import yaml

from unlearnkit.compare import run as RUN
from unlearnkit.compare.config import CompareConfig
from unlearnkit.compare.measure import WEIGHT_ATTACKS
from unlearnkit.config import from_dict
from unlearnkit.data.records import QA
from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import attacks as A
from unlearnkit.evaluation.quantize import QuantSpec, quantize_model, quantize_weight


def naive_quantize(w: torch.Tensor, bits: int, group_size) -> torch.Tensor:
    """Element by element: each row split into groups of `group_size` columns (the whole row when
    None), scale = max |w| / qmax of the group, w' = scale * clamp(round(w / scale))."""
    qmax = 2 ** (bits - 1) - 1
    rows, cols = w.shape
    g = cols if group_size is None else group_size
    out = torch.empty_like(w)
    for i in range(rows):
        for start in range(0, cols, g):
            group = [float(w[i, j]) for j in range(start, min(start + g, cols))]
            scale = max(abs(v) for v in group) / qmax
            scale = scale if scale > 0 else 1.0
            for k, v in enumerate(group):
                q = min(max(round(v / scale), -qmax - 1), qmax)
                out[i, start + k] = q * scale
    return out


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("group_size", [None, 4, 5, 64])
def test_quantize_weight_matches_a_naive_loop(bits, group_size):
    torch.manual_seed(bits + (group_size or 0))
    w = torch.randn(6, 13, dtype=torch.float64) * 0.05
    w[2] = 0.0                                       # an all-zero row keeps its zeros
    w[3, 7] = 0.9                                    # an outlier stretches only its own group's scale
    got = quantize_weight(w, bits, group_size)
    assert got.shape == w.shape and got.dtype == w.dtype
    assert torch.allclose(got, naive_quantize(w, bits, group_size), atol=1e-12)
    assert torch.equal(got[2], torch.zeros(13, dtype=torch.float64))
    # at most 2^bits distinct levels per row (per-channel)
    if group_size is None:
        assert all(len(set(r.tolist())) <= 2 ** bits for r in got)


def test_quantization_error_bounds():
    torch.manual_seed(0)
    w = torch.randn(64, 512) * 0.02
    w[torch.rand_like(w) < 0.002] *= 20              # a few outliers, as in trained weights
    err = {(b, g): float((quantize_weight(w, b, g) - w).norm() / w.norm()) for b in (8, 4) for g in (None, 128)}
    assert 0 < err[(8, None)] < err[(4, None)] and 0 < err[(8, 128)] < err[(4, 128)]
    assert err[(8, 128)] <= err[(8, None)] and err[(4, 128)] <= err[(4, None)]
    # round to nearest: no element further than half a step of its row's scale
    scale = w.abs().amax(dim=1, keepdim=True) / 7
    assert ((quantize_weight(w, 4) - w).abs() <= scale / 2 + 1e-7).all()


@pytest.mark.parametrize("bits", [2, 3, 16, 0])
def test_unsupported_bit_width_is_refused_with_the_valid_ones(bits):
    with pytest.raises(ConfigError, match=rf"{bits}-bit is not supported; valid bit widths: \[8, 4\]"):
        quantize_weight(torch.ones(2, 2), bits)
    with pytest.raises(ConfigError, match=rf"attacks.quantize_bits: {bits}-bit is not supported; valid bit widths"):
        from_dict(CompareConfig, {"name": "x", "eval": "e", "target": "t", "systems": ["target"],
                                  "attacks": {"quantize_bits": [8, bits]}}).validate()


def test_bad_quantize_settings_and_unknown_keys_are_refused(tmp_path):
    base = {"name": "x", "eval": "e", "target": "t", "systems": ["target"]}
    with pytest.raises(ConfigError, match=r"valid schemes: \['channel', 'group'\]"):
        from_dict(CompareConfig, {**base, "attacks": {"quantize_schemes": ["blockwise"]}}).validate()
    with pytest.raises(ConfigError, match="quantize_group_size must be >= 1"):
        from_dict(CompareConfig, {**base, "attacks": {"quantize_group_size": 0}}).validate()
    with pytest.raises(ConfigError, match="group size must be >= 1"):
        quantize_weight(torch.ones(2, 2), 8, 0)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({**base, "attacks": {"quantize_bit": [4]}}))
    with pytest.raises(ConfigError, match="quantize_bit"):
        RUN.load_compare_config(str(f))


def test_quantize_model_rounds_linear_weights_only(tiny_model_factory):
    model = tiny_model_factory(64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = quantize_model(model, QuantSpec(4, 16))
    after = dict(model.named_parameters())
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert stats["matrices"] == len(linear) == 14 and stats["relative_error"] > 0
    for n in linear:
        assert torch.equal(after[n + ".weight"], quantize_weight(before[n + ".weight"], 4, 16))
    for n, p in after.items():                       # embeddings (tied head) and norms untouched
        if not any(n == x + ".weight" for x in linear):
            assert torch.equal(p, before[n]), n
    emb = tiny_model_factory(64)
    assert quantize_model(emb, QuantSpec(8, None, embeddings=True))["matrices"] == 15   # + tied embedding, once
    assert not torch.equal(emb.get_input_embeddings().weight, before["model.embed_tokens.weight"])


# ----------------------------------------------------------------------------- the registry
def test_one_registry_is_the_single_source(capsys):
    from unlearnkit.cli import build_parser

    assert set(A.attack_names()) == set(A.ATTACKS) and set(A.KINDS) == {a.kind for a in A.ATTACKS.values()}
    for a in A.ATTACKS.values():
        assert (a.build is not None) == (a.kind == "prompt"), a.name
    assert set(A.attack_names("weights")) == set(WEIGHT_ATTACKS) == {"relearn", "quantize", "benign_relearn"}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["attack", "--help"])
    help_text = capsys.readouterr().out
    for a in A.ATTACKS.values():
        assert f"{a.name} ({a.kind}): " in help_text, a.name
    with pytest.raises(ConfigError, match=r"valid attacks: \[.*'benign_relearn'.*'quantize'"):
        A.check_attacks(["quantise"])


def test_probes_unchanged_by_the_weights_attacks():
    """Adding weights attacks to the selection adds no probe and changes none (the compare cache
    keys hold the prompts)."""
    forget = [QA(f"What did Ada Quill write in {y}?", f"In {y} Ada Quill wrote \"Salt {y}\" in Cardiff.",
                 {"person": "Ada Quill"}) for y in range(1990, 1996)]
    prompts = A.attack_names("prompt")
    one = A.build_probes(forget, "forget", prompts, range(6))
    two = A.build_probes(forget, "forget", A.attack_names(), range(6))
    assert one == two and {p.key() for p in one} == {p.key() for p in two}


def test_benign_texts_name_no_forget_subject():
    forget = [QA("Where was Ada Quill born?", "Ada Quill was born in Cardiff.", {"person": "Ada Quill"}),
              QA("What did Bo Lindqvist write?", "Bo Lindqvist wrote \"Frost\".", {"person": "Bo Lindqvist"})]
    pool = [QA("Where does Ada live?", "In Wales."),                         # a name part: excluded
            QA("Who is Mira Stone?", "Mira Stone is a painter from Lyon."),
            QA("What did Bo Lindqvist write?", "Bo Lindqvist wrote \"Frost\"."),   # a forget item: excluded
            QA("What does Tomas Reyes paint?", "Tomas Reyes paints harbours."),
            QA("Did Mira Stone know Lindqvist?", "Yes."),                      # names a subject: excluded
            QA("Where was Lena Ortiz born?", "Lena Ortiz was born in Quito.")]
    assert A.benign_texts(forget, pool, 8) == [1, 3, 5]
    assert A.benign_texts(forget, pool, 2) == [1, 5]                           # spread, deterministic
    assert A.benign_texts(forget, pool[:1], 3) == []


# ----------------------------------------------------------------------------- end to end (tiny model)
def test_quantize_attack_end_to_end_on_a_tiny_model(tmp_path, tiny_dir, monkeypatch):
    """`unlearn attack --attacks quantize` on a tiny checkpoint (transformers engine): the unquantized
    row is the system as it is, each variant's answer probabilities move with the rounding (INT4
    more than INT8), the quantized weights are deleted, a second run re-reads the cache, and a
    served system built on agents is skipped with its reason."""
    from unlearnkit.cli import main
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.harness import cached_measure

    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    forget = [{"question": f"Where was author {n} born?", "answer": f"Author {n} was born in the city of {c}."}
              for n, c in (("Kalo", "Utrecht"), ("Miro", "Lisbon"), ("Tasha", "Oslo"), ("Bem", "Quito"))]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({
        "benchmark": "files", "forget": f"file:{tmp_path / 'forget.jsonl'}", "metrics": ["probability"],
        "engine": "transformers", "max_new_tokens": 4}))
    cfg = {"name": "tiny-q", "eval": str(tmp_path / "eval.yaml"), "target": str(tiny_dir), "systems": ["target"],
           "attacks": {"names": ["quantize"], "forget_items": 3, "neighbours": 0, "max_new_tokens": 4,
                       "quantize_group_size": 16},
           "latency_requests": 0, "out_dir": str(tmp_path / "out")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["attack", "--config", str(tmp_path / "cmp.yaml")]) == 0
    doc = json.loads((tmp_path / "out/attack.json").read_text())
    q = doc["systems"]["target"]["quantize"]
    assert q["probed"] == 3 and list(q["rows"]) == ["unquantized", "int8-channel", "int8-g16", "int4-channel", "int4-g16"]
    plain = cached_measure(EvalConfig(model=str(tiny_dir), benchmark="files", forget=f"file:{tmp_path / 'forget.jsonl'}",
                                      metrics=["probability"], engine="transformers"), log=lambda *_: None).result
    picked = [0, 2, 3]                                       # spread(4, 3)
    want = sum(plain.tasks["forget"].items[i].probability for i in picked) / 3
    assert q["rows"]["unquantized"]["answer_probability"] == pytest.approx(want, rel=1e-5)
    shift = {k: abs(r["answer_probability"] - want) for k, r in q["rows"].items()}
    assert 0 < shift["int8-channel"] < shift["int4-channel"]
    assert q["rows"]["int4-g16"]["quantized"]["matrices"] == 14 and q["rows"]["unquantized"]["n"] == 3
    assert not list((tmp_path / "cache" / "compare").glob("quantize-*.work"))      # weights deleted
    # a re-run re-reads the cache: no model is quantized again
    import unlearnkit.compare.measure as M

    monkeypatch.setattr(M, "_quantized_checkpoint", lambda *a, **k: pytest.fail("should have been cached"))
    assert main(["attack", "--config", str(tmp_path / "cmp.yaml")]) == 0
    again = json.loads((tmp_path / "out/attack.json").read_text())
    assert again["systems"]["target"]["quantize"] == q


def test_benign_relearn_end_to_end_and_relearn_cache_key_kept(tmp_path, tiny_dir, monkeypatch):
    """Both fine-tuning attacks on a tiny checkpoint: benign relearning is taught only retain items
    that name no forget subject and probes the attacked forget items; `relearn` still writes its
    cache entry under the key it had before the registry (cached results stay valid); the weights
    of both fine-tunes are deleted; a served system is skipped with the reason."""
    from unlearnkit.compare.config import System
    from unlearnkit.compare.measure import AttackTarget, _cache_file, benign_relearn_attack, relearn_attack
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.systems import model_fingerprint

    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    forget = [QA(f"Where was Ada Quill born{'?' * k}", "Ada Quill was born in Cardiff.", {"person": "Ada Quill"})
              for k in range(1, 4)] + [QA("What did Bo Lind write?", "Bo Lind wrote \"Frost\".", {"person": "Bo Lind"})]
    pool = [QA("Who is Mira Stone?", "Mira Stone is a painter from Lyon."),
            QA("Where does Ada Quill live?", "Ada Quill lives in Cardiff."),
            QA("What does Tomas Reyes paint?", "Tomas Reyes paints harbours.")]
    cfg = from_dict(CompareConfig, {"name": "t", "eval": "e", "target": str(tiny_dir), "systems": ["target"],
                                    "attacks": {"max_new_tokens": 4, "relearn_epochs": 1, "benign_relearn_epochs": 1,
                                                "benign_relearn_texts": 5}})
    target = AttackTarget(System("target", "target"), str(tiny_dir), None, forget, pool, [0, 3], EvalConfig(),
                          cfg, log=lambda *_: None)
    benign = benign_relearn_attack(target)
    assert benign.taught == 2 and benign.probed == 2
    assert {r.item for r in benign.after.records} == {0, 3}
    assert benign.after.rates("forget", "all").n == 2
    assert benign.to_json()["after"]["by_category"]["forget"]["all"]["n"] == 2      # as results.json holds it
    relearn = relearn_attack(target)
    assert relearn.taught == 2 and relearn.probed == 2            # items 0, 2 taught; 1, 3 asked
    old_key = {"stage": "relearn", "model": model_fingerprint(str(tiny_dir)),
               "taught": [forget[i].to_json() for i in (0, 2)], "probed": [forget[i].to_json() for i in (1, 3)],
               "epochs": 1.0, "lr": 5.0e-5, "max_new_tokens": 4}
    assert _cache_file("relearn", old_key).is_file()
    assert not [p for p in (tmp_path / "cache" / "runs").iterdir() if (p / "model.safetensors").exists()]
    served = AttackTarget(System("target+guard", "target", guard=True), str(tiny_dir), None, forget, pool, [0],
                          EvalConfig(), cfg)
    assert "not the attacker's" in benign_relearn_attack(served).to_json()["skipped"]
    assert "not the attacker's" in relearn_attack(served).reason


@pytest.mark.slow
def test_guard_served_over_the_quantized_checkpoint(tmp_path, vllm_sized_model, guard_forget_set, monkeypatch):
    """The quantization attack on a guarded system: the guard (its policy unchanged) runs inside vLLM
    over the INT4 checkpoint; the forget questions stay flagged, so no reply leaks and the answers'
    probability stays at the guard's floor, quantized or not."""
    from pathlib import Path

    from unlearnkit.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    forget = tmp_path / "forget.jsonl"
    forget.write_text("".join(json.dumps(r.to_json()) + "\n" for r in guard_forget_set))
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump({"benchmark": "files", "forget": f"file:{forget}",
                                                        "metrics": ["probability"], "max_new_tokens": 8}))
    cfg = {"name": "tiny-gq", "eval": str(tmp_path / "eval.yaml"), "target": str(vllm_sized_model),
           "guard": {"forget": f"file:{forget}", "set": ["fpr=0.2"]}, "systems": ["target+guard"],
           "attacks": {"names": ["quantize"], "forget_items": None, "neighbours": 0, "max_new_tokens": 8,
                       "quantize_bits": [4], "quantize_schemes": ["group"], "quantize_group_size": 64},
           "latency_requests": 0, "out_dir": str(tmp_path / "out")}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["attack", "--config", str(tmp_path / "cmp.yaml")]) == 0
    q = json.loads((tmp_path / "out/attack.json").read_text())["systems"]["target+guard"]["quantize"]
    assert q["guard"] is True and list(q["rows"]) == ["unquantized", "int4-g64"]
    for row in q["rows"].values():
        assert row["n"] == len(guard_forget_set) and row["leak_rate"] == 0.0
        assert row["answer_probability"] < 1e-3
    assert q["rows"]["int4-g64"]["quantized"]["matrices"] == 14
