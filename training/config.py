"""The typed training config (`unlearn train --config ...`); see configs/train/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..config import ConfigError
from .methods import METHODS, MethodParams

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DataConfig:
    train: Optional[str] = None    # finetune only: the training set spec
    forget: Optional[str] = None   # unlearning: the forget set spec
    retain: Optional[str] = None   # unlearning: the retain set spec (methods with a retain term)
    max_length: int = 256


@dataclass
class LoraConfig:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    init: Literal["default", "fila"] = "default"
    fisher_batch_size: int = 1     # FILA statistics: 1 = exact per-example empirical Fisher
    fisher_max_retain: int = 200   # FILA statistics: at most this many retain examples

    def validate(self):
        if self.r < 1:
            raise ConfigError(f"lora.r must be >= 1, got {self.r}")


SHARED_DEFAULTS = {"beta": 0.1, "retain_weight": 1.0, "forget_weight": 1.0}


def _method_specific(default=None):
    """A parameter only some methods read: absent from dumps (and run hashes) when unset."""
    return field(default=default, metadata={"omit_if_none": True})


@dataclass
class MethodConfig:
    """Unset (null) values take the method's default (methods.METHODS[name].defaults), then the
    shared default; `validate` fills them in, so a dumped config records what was used."""

    name: str = "ihl"
    beta: Optional[float] = None            # NPO/IdkDPO/SimNPO temperature (0.1); WGA exponent (1.0); SatImp beta1 (5.0)
    gamma: float = 0.0                      # SimNPO margin; UnDIAL logit adjustment
    retain_weight: Optional[float] = None   # weight of the retain term (1.0); RMU's alpha
    forget_weight: Optional[float] = None   # weight of the forget term (1.0)
    beta2: Optional[float] = _method_specific()           # SatImp: exponent of (1 - p)
    layer: Optional[int] = _method_specific()             # RMU: decoder block (0-based) steered
    steering_coeff: Optional[float] = _method_specific()  # RMU: c, norm of the target c * u

    def validate(self):
        if self.name not in METHODS:
            raise ConfigError(f"method.name: unknown method {self.name!r}; valid methods: {sorted(METHODS)}")
        own = METHODS[self.name].defaults
        for key in METHOD_SPECIFIC:
            if getattr(self, key) is not None and key not in own:
                users = sorted(m.name for m in METHODS.values() if key in m.defaults)
                raise ConfigError(f"method.{key} is not a parameter of method {self.name!r} "
                                  f"(it is used by {', '.join(users)})")
        for key in (*SHARED_DEFAULTS, *METHOD_SPECIFIC):
            if getattr(self, key) is None and (key in own or key in SHARED_DEFAULTS):
                setattr(self, key, own.get(key, SHARED_DEFAULTS.get(key)))
        if self.beta <= 0:
            raise ConfigError(f"method.beta must be > 0, got {self.beta}")
        if self.retain_weight < 0 or self.forget_weight < 0:
            raise ConfigError(f"method.retain_weight and method.forget_weight must be >= 0, "
                              f"got {self.retain_weight} and {self.forget_weight}")
        if self.beta2 is not None and self.beta2 < 0:
            raise ConfigError(f"method.beta2 must be >= 0, got {self.beta2}")
        if self.layer is not None and self.layer < 0:
            raise ConfigError(f"method.layer must be >= 0 (a decoder block index), got {self.layer}")
        if self.steering_coeff is not None and self.steering_coeff <= 0:
            raise ConfigError(f"method.steering_coeff must be > 0, got {self.steering_coeff}")


METHOD_SPECIFIC = ("beta2", "layer", "steering_coeff")


@dataclass
class OptimConfig:
    epochs: float = 5.0
    max_steps: int = -1
    lr: float = 1e-5
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    scheduler: str = "constant"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, on CPU the faster one (measured)
    save_steps: int = 0        # 0: checkpoint every epoch; -1: never; N: every N steps
    logging_steps: int = 5
    group_by_length: bool = True
    gradient_checkpointing: bool = False
    seed: int = 0

    def validate(self):
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be >= 1")


@dataclass
class EvalConfig:
    """Evaluation during training (training/callbacks.py): every `every_steps` optimizer steps, a
    cheap teacher-forced metric on the first `examples` forget (and retain) items; with keep_best,
    the checkpoint best by it is kept (<output_dir>/best, reported in run.json)."""

    every_steps: int = 10
    metric: str = "forget_prob"        # forget_prob | retain_prob | retain_over_forget
    mode: Optional[Literal["max", "min"]] = None   # unset: the metric's own direction
    keep_best: bool = True
    examples: int = 16

    def validate(self):
        from .callbacks import EVAL_METRICS  # transformers' TrainerCallback

        if self.every_steps < 1:
            raise ConfigError(f"eval.every_steps must be >= 1, got {self.every_steps}")
        if self.metric not in EVAL_METRICS:
            raise ConfigError(f"eval.metric: unknown metric {self.metric!r}; valid metrics: {sorted(EVAL_METRICS)}")
        if self.examples < 1:
            raise ConfigError(f"eval.examples must be >= 1, got {self.examples}")
        if self.mode is None:
            self.mode = EVAL_METRICS[self.metric].mode


@dataclass
class TrainConfig:
    model: str = "smollm2"
    output_dir: str = "runs/unlearned"
    mode: Literal["full", "lora"] = "full"
    lora: Optional[LoraConfig] = None
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # evaluation during training; left out of dumps (and run hashes) when absent
    eval: Optional[EvalConfig] = field(default=None, metadata={"omit_if_none": True})

    def validate(self):
        if self.mode == "full" and self.lora is not None:
            raise ConfigError("LoRA options (lora.*) were given with mode=full; set mode=lora or drop them")
        if self.mode == "lora" and self.lora is None:
            self.lora = LoraConfig()
        self.method.validate()  # idempotent; also covers a default (omitted) method section
        method = METHODS[self.method.name]
        if self.method.name == "finetune":
            if not self.data.train:
                raise ConfigError("method finetune needs data.train (the set to fine-tune on)")
            if self.data.forget:
                raise ConfigError("method finetune takes data.train, not data.forget")
        else:
            if not self.data.forget:
                raise ConfigError(f"method {self.method.name} needs data.forget (the forget set)")
            if self.data.train:
                raise ConfigError("data.train is for method finetune; unlearning takes data.forget")
            if method.needs_retain and not self.data.retain:
                raise ConfigError(f"method {self.method.name} needs data.retain (the retain set)")
        if self.eval is not None:
            from .callbacks import EVAL_METRICS

            if EVAL_METRICS[self.eval.metric].needs_retain and not self.data.retain:
                raise ConfigError(f"eval.metric {self.eval.metric} needs data.retain (retain answers to score)")
        if self.lora is not None and self.lora.init == "fila" and not self.data.retain:
            raise ConfigError("lora.init=fila needs data.retain (Fisher importance is forget relative to retain)")


def method_params(cfg: TrainConfig) -> MethodParams:
    """The loss parameters of `cfg` (validated, so unset values hold their defaults); RMU's
    random direction is drawn from the training seed."""
    m = cfg.method
    m.validate()
    extra = {key: getattr(m, key) for key in METHOD_SPECIFIC if getattr(m, key) is not None}
    return MethodParams(beta=m.beta, gamma=m.gamma, retain_weight=m.retain_weight,
                        forget_weight=m.forget_weight, seed=cfg.optim.seed, **extra)


def check_fits_model(cfg: TrainConfig, num_layers: int) -> None:
    """Refuse, before anything is written, a method layer the model does not have."""
    layer = cfg.method.layer
    if layer is not None and not 0 <= layer < num_layers:
        raise ConfigError(f"method.layer {layer} is out of range: model {cfg.model!r} has {num_layers} "
                          f"decoder layers, so valid layers are 0..{num_layers - 1}")


def check_fits_model_at(cfg: TrainConfig, model_path: str) -> None:
    """`check_fits_model` with the layer count read from the model's config.json."""
    if cfg.method.layer is None:
        return
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(model_path)
    num_layers = getattr(model_config.get_text_config(), "num_hidden_layers", None)
    if num_layers is None:
        raise ConfigError(f"method.layer: cannot tell how many decoder layers model {cfg.model!r} has "
                          f"(its config has no num_hidden_layers)")
    check_fits_model(cfg, num_layers)
