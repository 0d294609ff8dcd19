"""The typed comparison config (`unlearn compare --config configs/compare/<name>.yaml`).

A *system* is written `base[+guard][+agents]`: `base` is `target`, `retain` or a key of
`methods` (a weight-level unlearning run, trained or reused from the cache); `+guard` serves it
with the token-filter guard built from `guard:`; `+agents` puts the multi-agent rewriter in front
(with `+guard` too: the rewriter in front of a guarded engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..errors import ConfigError
from ..evaluation.attacks import ATTACKS, QUANTIZE_BITS, check_attacks

BASES = ("target", "retain")
QUANTIZE_SCHEMES = ("channel", "group")
MODIFIERS = ("guard", "agents")


SPEC_KEYS = ("forget", "retain")   # a variant's entries that replace the spec's data instead of setting the guard config


@dataclass
class GuardSpec:
    # what the policy is built from: QA pairs (a data spec: tofu/forget01), a corpus to stop quoting (text:FILE,
    # text:DIR, muse/raw_forget, muse/mini/forget_text) or subjects by name (subjects:FILE, subjects:tofu/forget01)
    forget: str
    retain: Optional[str] = None                 # calibration prompts (false-positive rate)
    config: str = "configs/guard/default.yaml"
    set: list[str] = field(default_factory=list)  # key=value overrides of the guard config (corpus_mode=takedown)
    # more guards, each a system modifier of its own (`target+<name>`): name -> key=value entries added to `set`
    # (guard_calibrated: [mode=calibrated]), forget=SPEC / retain=SPEC building it from other data
    variants: dict[str, list[str]] = field(default_factory=dict)

    def variant(self, name: Optional[str]) -> "GuardSpec":
        """The spec of guard variant `name` (None: this one)."""
        if name is None:
            return self
        entries = self.variants[name]
        data = dict(e.split("=", 1) for e in entries if e.split("=", 1)[0].strip() in SPEC_KEYS)
        data = {k.strip(): v.strip() for k, v in data.items()}
        overrides = [e for e in entries if e.split("=", 1)[0].strip() not in SPEC_KEYS]
        return GuardSpec(data.get("forget", self.forget), data.get("retain", self.retain), self.config,
                         [*self.set, *overrides])

    def validate(self) -> None:
        """Each variant's entries are key=value; corpus_mode only where the policy is built from a corpus."""
        from ..guard.corpus import is_corpus_spec

        for name in [None, *self.variants]:
            entries = self.set if name is None else self.variants[name]
            where = "guard.set" if name is None else f"guard.variants.{name}"
            bad = [e for e in entries if "=" not in e or not e.split("=", 1)[0].strip()]
            if bad:
                raise ConfigError(f"{where}: {bad[0]!r} is not key=value (a guard config key, or forget=/retain= "
                                  "data specs in a variant)")
            if name is None and any(e.split("=", 1)[0].strip() in SPEC_KEYS for e in entries):
                raise ConfigError(f"{where}: give the data as guard.forget / guard.retain, not in `set`")
            spec = self.variant(name)
            if any(e.split("=", 1)[0].strip() == "corpus_mode" for e in spec.set) and not is_corpus_spec(spec.forget):
                raise ConfigError(f"{where}: corpus_mode applies to a policy built from a corpus (text:FILE, "
                                  f"text:DIR, muse/raw_forget, muse/mini/forget_text), not {spec.forget!r}")


@dataclass
class AgentsSpec:
    config: str = "configs/agents/default.yaml"
    set: list[str] = field(default_factory=list)  # key=value overrides of the agent config
    concurrency: int = 8                          # requests in flight at once
    max_model_len: int = 2048


@dataclass
class AttackSpec:
    names: list[str] = field(default_factory=lambda: list(ATTACKS))
    forget_items: Optional[int] = 20     # forget items attacked (spread over the set); null: all
    neighbours: Optional[int] = 10       # retain items probed the same way (over-suppression)
    all_jailbreaks: bool = False         # every wrapper on every item (else one per item, rotating)
    max_new_tokens: int = 64
    leak_keywords: float = 0.5           # a reply leaks when it holds this share of the answer's key words
    leak_rouge: float = 0.5              # ... or, for answers without any, at ROUGE-L recall >= this
    relearn_epochs: float = 3.0          # relearning attack: fine-tune on the even-numbered forget items
    relearn_lr: float = 5.0e-5
    quantize_bits: list[int] = field(default_factory=lambda: list(QUANTIZE_BITS))   # quantization attack: 8 and/or 4
    quantize_schemes: list[str] = field(default_factory=lambda: list(QUANTIZE_SCHEMES))  # channel | group
    quantize_group_size: int = 128       # columns per scale of the group-wise scheme
    quantize_embeddings: bool = False    # also round the input embeddings and the output head
    benign_relearn_texts: int = 8        # benign relearning: retain items that name no forget subject
    benign_relearn_epochs: float = 3.0   # ... fine-tuned on (learning rate: relearn_lr)
    leak_samples: int = 32               # leak@k: answers sampled per attacked forget question
    leak_temperature: float = 1.0        # ... at this temperature
    leak_k: list[int] = field(default_factory=lambda: [1, 4, 16, 32])   # ... the curve's points (k <= samples)

    def validate(self):
        bad = [b for b in self.quantize_bits if b not in QUANTIZE_BITS]
        if bad or not self.quantize_bits:
            what = f"{bad[0]}-bit is not supported" if bad else "empty"
            raise ConfigError(f"attacks.quantize_bits: {what}; valid bit widths: {list(QUANTIZE_BITS)}")
        bad = [s for s in self.quantize_schemes if s not in QUANTIZE_SCHEMES]
        if bad or not self.quantize_schemes:
            raise ConfigError(f"attacks.quantize_schemes: {bad or 'empty'}; valid schemes: {list(QUANTIZE_SCHEMES)}")
        if self.quantize_group_size < 1:
            raise ConfigError(f"attacks.quantize_group_size must be >= 1, got {self.quantize_group_size}")
        if self.benign_relearn_texts < 1:
            raise ConfigError(f"attacks.benign_relearn_texts must be >= 1, got {self.benign_relearn_texts}")
        if not self.leak_k or min(self.leak_k) < 1 or max(self.leak_k) > self.leak_samples:
            raise ConfigError(f"attacks.leak_k: each k must be in [1, leak_samples = {self.leak_samples}], "
                              f"got {self.leak_k}")
        if self.leak_temperature <= 0:
            raise ConfigError(f"attacks.leak_temperature must be > 0, got {self.leak_temperature}")

    def quant_specs(self) -> list:
        """The quantized variants measured: every bit width x scheme, widest first."""
        from ..evaluation.quantize import QuantSpec

        return [QuantSpec(b, None if s == "channel" else self.quantize_group_size, self.quantize_embeddings)
                for b in sorted(set(self.quantize_bits), reverse=True) for s in self.quantize_schemes]


@dataclass
class SequentialSpec:
    """Deletion requests arriving one after another (`unlearn sequential`): request k is `method`'s
    training config with `data.forget` = request k's set and `model: run:<request k-1's config>`.
    Unset (no method) unless the comparison has sequential requests."""
    method: str = ""                                     # a key of `methods`
    requests: list[str] = field(default_factory=list)    # forget data specs, in arrival order
    split: Optional[str] = None                          # or one data spec, one request per person in it
    eval_each: bool = True                               # measure after every request (else the last only)
    # also the target behind a guard rebuilt over requests 1..k after each request k (what a served policy
    # rebuilt in place enforces without a restart: guard/reload.py); the comparison's `guard:` settings
    guard: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.method)

    def validate(self) -> None:
        if not self.method and (self.requests or self.split):
            raise ConfigError("sequential.method: name the method (a key of `methods`) the requests are unlearnt with")
        if self.method and bool(self.requests) == bool(self.split):
            raise ConfigError("sequential: give exactly one of `requests: [spec, ...]` (forget sets in arrival order) "
                              "or `split: <spec>` (one request per person in it)")


@dataclass
class CompareConfig:
    name: str
    eval: str                            # evaluation config (benchmark, metrics); its model is set per system
    target: str                          # model ref of the target (run:..., a path, a catalog name)
    systems: list[str]
    retain: Optional[str] = None         # model ref of the retain model (the gold standard)
    methods: dict[str, str] = field(default_factory=dict)   # name -> training config (weight-level)
    guard: Optional[GuardSpec] = None
    agents: AgentsSpec = field(default_factory=AgentsSpec)
    attacks: AttackSpec = field(default_factory=AttackSpec)
    out_dir: Optional[str] = None        # default runs/compare/<name>
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    latency_requests: int = 8            # forget probes also sent one at a time: seconds per request
    sequential: SequentialSpec = field(default_factory=SequentialSpec)   # requests in turn (`unlearn sequential`)
    # more training seeds: each weight-level method is also trained with optim.seed = s and measured (no
    # attacks); the report gives mean, sd and range over its own run and these (compare/seeds.py)
    seeds: list[int] = field(default_factory=list)

    def validate(self):
        for name in self.methods:
            if name in BASES or "+" in name or name in MODIFIERS:
                raise ConfigError(f"methods: {name!r} is reserved; name methods other than {list(BASES + MODIFIERS)}")
        clash = sorted(set(self.guard.variants) & set(BASES + MODIFIERS + tuple(self.methods))) if self.guard else []
        if clash:
            raise ConfigError(f"guard.variants: {clash} already name a system part; choose other names")
        if self.guard:
            self.guard.validate()
        if not self.systems:
            raise ConfigError(f"systems: empty; valid systems look like {valid_system_names(self)[:6]} ...")
        names = [parse_system(s, self).name for s in self.systems]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError("systems: listed twice: " + ", ".join(twice))
        check_attacks(self.attacks.names)
        if self.attacks.forget_items is not None and self.attacks.forget_items < 1:
            raise ConfigError("attacks.forget_items must be >= 1 (or null for all)")
        if self.attacks.neighbours is not None and self.attacks.neighbours < 0:
            raise ConfigError("attacks.neighbours must be >= 0")
        self.attacks.validate()
        if self.agents.concurrency < 1:
            raise ConfigError("agents.concurrency must be >= 1")
        if self.latency_requests < 0:
            raise ConfigError("latency_requests must be >= 0")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: {self.seeds!r} must be distinct non-negative integers (optim.seed values)")
        if self.sequential.enabled and self.sequential.method not in self.methods:
            raise ConfigError(f"sequential.method: {self.sequential.method!r} is not a key of `methods`; "
                              f"valid: {sorted(self.methods)}")


@dataclass(frozen=True)
class System:
    name: str            # canonical: base[+guard][+agents]
    base: str
    guard: bool = False
    agents: bool = False
    guard_variant: Optional[str] = None   # a named variant of `guard:` (GuardSpec.variants); None: the guard itself

    @property
    def kind(self) -> str:
        """The paradigm: weight (a checkpoint alone), guard, agents, or stack (weights edited + runtime)."""
        edited = self.base not in BASES
        runtime = "agents" if self.agents else "guard" if self.guard else None
        if runtime is None:
            return "reference" if not edited else "weight"
        return "stack" if edited or (self.agents and self.guard) else runtime


def valid_system_names(cfg: CompareConfig) -> list[str]:
    bases = list(BASES) + list(cfg.methods)
    guards = ["guard", *(cfg.guard.variants if cfg.guard else [])]
    return bases + [f"{b}+{m}" for b in bases for m in (*guards, "agents", *(f"{g}+agents" for g in guards))]


def parse_system(name: str, cfg: CompareConfig) -> System:
    """`ihl_fila+guard` -> System(base='ihl_fila', guard=True); unknown parts list the valid ones."""
    base, *mods = [p.strip() for p in name.split("+")]
    bases = list(BASES) + list(cfg.methods)
    if base not in bases:
        raise ConfigError(f"unknown system {name!r}: base {base!r} is not one of {bases} (methods come from "
                          f"`methods:`); valid systems: {valid_system_names(cfg)}")
    variants = list(cfg.guard.variants) if cfg.guard else []
    bad = [m for m in mods if m not in MODIFIERS + tuple(variants)] or ([m for m in mods if mods.count(m) > 1][:1])
    if bad:
        raise ConfigError(f"unknown system {name!r}: {bad[0]!r} is not one of {list(MODIFIERS) + variants} (each "
                          f"once); valid systems: {valid_system_names(cfg)}")
    chosen = [m for m in mods if m in variants]
    if len(chosen) + ("guard" in mods) > 1:
        raise ConfigError(f"system {name!r}: one guard per system (guard or one of {variants})")
    if chosen:
        mods = ["guard" if m in chosen else m for m in mods]
    if base == "retain" and not cfg.retain:
        raise ConfigError(f"system {name!r}: the config names no retain model (retain: <model ref>)")
    if "guard" in mods and cfg.guard is None:
        raise ConfigError(f"system {name!r} needs a guard policy: add `guard: {{forget: <data spec>}}`")
    if "agents" in mods and cfg.guard is None:
        raise ConfigError(f"system {name!r}: the agents take their targets from the guard policy: add "
                          "`guard: {forget: <data spec>}` (the engine stays unguarded unless +guard)")
    guard, agents = "guard" in mods, "agents" in mods
    variant = chosen[0] if chosen else None
    canonical = base + (f"+{variant or 'guard'}" if guard else "") + ("+agents" if agents else "")
    return System(canonical, base, guard, agents, variant)
