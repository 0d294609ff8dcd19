"""leak@k in `unlearn compare`: each attacked forget item's plain question asked `samples` times at
temperature 1 through the system's deployed generation path (vLLM, behind the guard's processor where it
has one; the agent front over HTTP for +agents), every answer judged as the prompt attacks' are
(evaluation/leakage.py), and the curve leak@k estimated without bias from those samples
(evaluation/metrics/leak_at_k.py). Replies are cached, scores are not (a change of scoring rules
costs no engine time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..data.formatting import prompt_text
from ..evaluation.generation import default_dtype
from ..evaluation.metrics.leak_at_k import leak_curve
from ..evaluation.scoring import Prompt
from ..evaluation.systems import Batch, Guarded, Weights, model_fingerprint
from ..models.catalog import cache_root
from ..models.loading import load_tokenizer
from .measure import (AttackTarget, Skipped, _cached, _plain_probes, agents_fingerprint, policy_fingerprint,
                      refusal_texts, score_probes)


@dataclass(frozen=True)
class LeakAtK:
    """leak@k of one system: the probes (plain forget questions), samples per probe, the curve {k: leak@k}
    and each probe's count of leaking samples."""
    probed: int
    samples: int
    temperature: float
    curve: dict
    leaks: list

    def to_json(self) -> dict:
        return {"probed": self.probed, "samples": self.samples, "temperature": self.temperature,
                "curve": {str(k): round(v, 4) for k, v in self.curve.items()}, "leaks": self.leaks}


def sampled_batch(tokenizer, questions: list[str], samples: int, temperature: float, budget: int) -> Batch:
    """Each question `samples` times (seeds 0..samples-1), consecutively."""
    out = []
    for q in questions:
        ids = tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"]
        out += [Prompt(ids, budget, q, temperature, seed) for seed in range(samples)]
    return Batch(out)


def _generate(t: AttackTarget, batch: Batch, tok) -> list[Optional[str]]:
    """The sampled answers through the system's deployed path."""
    if not t.system.agents:
        system = Guarded(t.path, tok, t.policy, t.cfg.dtype) if t.policy else Weights(t.path, tok, "vllm", t.cfg.dtype)
        return system.generate([batch])[0].texts
    from . import endpoint
    from .systems import AgentFront

    log_file = cache_root() / "compare" / "logs" / f"{t.system.name}.leak_at_k.server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with endpoint.AgentServer(t.path, t.front_policy, log_file, agents_only=not t.system.guard,
                              dtype=default_dtype(t.cfg.dtype), max_model_len=t.cfg.agents.max_model_len,
                              config=t.cfg.agents.config, overrides=t.cfg.agents.set) as server:
        return AgentFront(server, tok, t.system.name, t.cfg.agents.concurrency).generate([batch])[0].texts


def leak_at_k_attack(t: AttackTarget) -> LeakAtK | Skipped:
    spec = t.cfg.attacks
    if not t.picked:
        return Skipped("no forget items to probe")
    tok = load_tokenizer(t.path)
    questions = [t.forget[i].question for i in t.picked]
    key = {"stage": "leak_at_k", "model": model_fingerprint(t.path), "policy": policy_fingerprint(t.policy),
           "questions": questions, "samples": spec.leak_samples, "temperature": spec.leak_temperature,
           "max_new_tokens": spec.max_new_tokens, "dtype": t.cfg.dtype}
    if t.system.agents:
        key.update(system=t.system.name, front_policy=policy_fingerprint(t.front_policy), agents=agents_fingerprint(t.cfg))

    def make():
        t.log(f"leak@k: {len(questions)} forget questions x {spec.leak_samples} samples at T={spec.leak_temperature}")
        batch = sampled_batch(tok, questions, spec.leak_samples, spec.leak_temperature, spec.max_new_tokens)
        return {"replies": _generate(t, batch, tok)}

    replies = _cached("leak_at_k", key, make, t.log)["replies"]
    n = spec.leak_samples
    probes = [p for p in _plain_probes("leak_at_k", "sampled", t.forget, t.picked) for _ in range(n)]
    scored = score_probes(probes, [r or "" for r in replies], t.cfg, refusal_texts(t.front_policy or t.policy, t.cfg))
    leaks = [[s.score.leaked for s in scored.records[j * n:(j + 1) * n]] for j in range(len(questions))]
    return LeakAtK(len(questions), n, spec.leak_temperature, leak_curve(leaks, spec.leak_k), [sum(x) for x in leaks])


# attack name -> its measuring function (every sampling attack of evaluation/attacks.py ATTACKS)
SAMPLING_ATTACKS: dict[str, Callable[[AttackTarget], LeakAtK | Skipped]] = {"leak_at_k": leak_at_k_attack}
