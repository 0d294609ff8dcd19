"""`UnlearnTrainer`: a `transformers.Trainer` that overrides only `compute_loss` (and `log`
to report the loss parts), so accelerate / DeepSpeed / FSDP, mixed precision, gradient
accumulation, checkpointing and resumption all come from the Trainer unchanged."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from inspect import signature
from pathlib import Path

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback

from .batches import group
from .methods import Method, MethodInputs, MethodParams

COMPLETE_MARKER = "CHECKPOINT_COMPLETE"


def _logits(model, batch: dict) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _decoder_stack(model) -> tuple[str, torch.nn.ModuleList]:
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks")]
    if len(stacks) != 1:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}: "
                         f"candidate module lists {[name for name, _ in stacks]}")
    return stacks[0]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The stack of decoder blocks of a (possibly PEFT- or DDP-wrapped) causal LM."""
    return _decoder_stack(model)[1]


@contextmanager
def _first_blocks_only(model, n: int):
    """The model with its decoder stack cut after block `n - 1` (the same modules, restored after)."""
    name, blocks = _decoder_stack(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, attr, blocks[:n])
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


def _last_position_logits_only(model) -> dict:
    """`logits_to_keep=1` where the causal LM takes it: the LM head on one position only."""
    lm = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    return {"logits_to_keep": 1} if lm is not None and "logits_to_keep" in signature(lm.forward).parameters else {}


def hidden_at(model, batch: dict, layer: int) -> torch.Tensor:
    """Output of decoder block `layer` ([B, T, D]). The blocks above it are not run: the forward
    runs on the stack cut after `layer`, then the final norm and the LM head (on one position),
    whose output is dropped, so they get no gradient. The forward returns normally rather than
    being stopped by an exception, so that a DDP wrapper finishes its forward and prepares the
    gradient reduction (a stopped forward left DDP's ranks each training on its own shard)."""
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} is out of range: the model has {len(blocks)} decoder layers "
                         f"(valid: 0..{len(blocks) - 1})")
    captured = []

    def capture(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = blocks[layer].register_forward_hook(capture)
    try:
        with _first_blocks_only(model, layer + 1):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                  **_last_position_logits_only(model))
    finally:
        handle.remove()
    return captured[0]


def freeze_unreached(model, batch: dict, layer: int) -> list[str]:
    """Freeze the trainable parameters that `hidden_at(model, batch, layer)` leaves without a
    gradient (later blocks, the final norm, an untied LM head; a head tied to the input embeddings
    is reached through them and stays trainable), found by one backward pass on `batch`. Under DDP
    with the unused-parameter search off, a trainable parameter that gets no gradient would stall
    the gradient reduction. Returns their names."""
    with torch.random.fork_rng(devices=[]):  # the probe does not move the training's random stream
        hidden_at(model, batch, layer).float().sum().backward()
    unreached = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for name, p in model.named_parameters():
        p.grad = None
        if name in unreached:
            p.requires_grad_(False)
    return unreached


class FrozenReference:
    """A frozen copy of the initial model (NPO, IdkDPO, UnDIAL's teacher)."""

    def __init__(self, model):
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, trained_model, batch: dict) -> torch.Tensor:
        device = batch["input_ids"].device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return _logits(self.model, batch)

    @torch.no_grad()
    def hidden(self, trained_model, batch: dict, layer: int) -> torch.Tensor:
        device = batch["input_ids"].device
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return hidden_at(self.model, batch, layer)


class AdapterOffReference:
    """The trained PEFT model with its adapter switched off: the initial model at no memory
    cost. Only valid when the base weights are the original ones (not after FILA)."""

    def __init__(self, unwrap):
        self.unwrap = unwrap

    @torch.no_grad()
    def logits(self, trained_model, batch: dict) -> torch.Tensor:
        peft_model = self.unwrap(trained_model)
        with peft_model.disable_adapter():
            return _logits(peft_model, batch)

    @torch.no_grad()
    def hidden(self, trained_model, batch: dict, layer: int) -> torch.Tensor:
        peft_model = self.unwrap(trained_model)
        with peft_model.disable_adapter():
            return hidden_at(peft_model, batch, layer)


class UnlearnTrainer(Trainer):
    def __init__(self, *args, method: Method, params: MethodParams, reference=None, **kwargs):
        super().__init__(*args, **kwargs)
        if method.needs_reference and reference is None:
            raise ValueError(f"method {method.name!r} needs a reference model")
        self.method, self.params, self.reference = method, params, reference
        self.model_accepts_loss_kwargs = False  # the Trainer then scales for grad accumulation
        self._parts: dict[str, float] = defaultdict(float)
        self._n_parts = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        forget = group(inputs, "forget")
        m = self.method
        if m.needs_hidden_layer:
            batch = self._hidden_inputs(model, inputs, forget)
        else:
            batch = self._logit_inputs(model, inputs, forget)
        parts = m.loss(batch, self.params)
        for key, value in parts.items():
            if key != "loss":
                self._parts[key] += float(value.detach())
        self._n_parts += 1
        return (parts["loss"], None) if return_outputs else parts["loss"]

    def _hidden_inputs(self, model, inputs, forget) -> MethodInputs:
        """Block `params.layer`'s outputs: forget and retain (trained), retain (reference)."""
        layer = self.params.layer
        batch = MethodInputs(forget_labels=forget["labels"], forget_hidden=hidden_at(model, forget, layer))
        if self.method.needs_retain:
            retain = group(inputs, "retain")
            batch.retain_labels, batch.retain_hidden = retain["labels"], hidden_at(model, retain, layer)
            if self.method.needs_reference:
                batch.ref_retain_hidden = self.reference.hidden(model, retain, layer)
        return batch

    def _logit_inputs(self, model, inputs, forget) -> MethodInputs:
        m = self.method
        batch = MethodInputs(forget_logits=_logits(model, forget), forget_labels=forget["labels"])
        if m.needs_retain:
            retain = group(inputs, "retain")
            batch.retain_logits, batch.retain_labels = _logits(model, retain), retain["labels"]
        if m.needs_idk:
            idk = group(inputs, "idk")
            batch.idk_logits, batch.idk_labels = _logits(model, idk), idk["labels"]
        if m.needs_reference:
            batch.ref_forget_logits = self.reference.logits(model, forget)
            if m.needs_idk:
                batch.ref_idk_logits = self.reference.logits(model, group(inputs, "idk"))
        return batch

    def log(self, logs, *args, **kwargs):
        if self._n_parts and "loss" in logs:
            for key, total in self._parts.items():
                logs[key] = round(total / self._n_parts, 5)
            self._parts.clear()
            self._n_parts = 0
        super().log(logs, *args, **kwargs)


class MarkCompleteCheckpoints(TrainerCallback):
    """Write a marker into each checkpoint once the Trainer has finished saving it, so resume
    never picks a checkpoint that an interruption left half-written."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / COMPLETE_MARKER).write_text(str(state.global_step))
        return control


def last_complete_checkpoint(folder: Path) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)
