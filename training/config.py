"""The typed training config (`unlearn train --config ...`); see configs/train/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..config import ConfigError
from .methods import METHODS

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


@dataclass
class MethodConfig:
    name: str = "ihl"
    beta: float = 0.1
    gamma: float = 0.0
    retain_weight: float = 1.0
    forget_weight: float = 1.0

    def validate(self):
        if self.name not in METHODS:
            raise ConfigError(f"method.name: unknown method {self.name!r}; valid methods: {sorted(METHODS)}")
        if self.beta <= 0:
            raise ConfigError(f"method.beta must be > 0, got {self.beta}")


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
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA / CPUs with native bf16, else fp32
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
class TrainConfig:
    model: str = "smollm2"
    output_dir: str = "runs/unlearned"
    mode: Literal["full", "lora"] = "full"
    lora: Optional[LoraConfig] = None
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self):
        if self.mode == "full" and self.lora is not None:
            raise ConfigError("LoRA options (lora.*) were given with mode=full; set mode=lora or drop them")
        if self.mode == "lora" and self.lora is None:
            self.lora = LoraConfig()
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
        if self.lora is not None and self.lora.init == "fila" and not self.data.retain:
            raise ConfigError("lora.init=fila needs data.retain (Fisher importance is forget relative to retain)")
