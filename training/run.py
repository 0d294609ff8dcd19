"""One training run, from config to a merged, self-describing checkpoint.

Layout while running:   <output_dir>.partial/{config.yaml, checkpoints/checkpoint-N/...}
Layout when finished:   <output_dir>/{model weights, tokenizer, config.yaml, train_log.jsonl, run.json}

The finished directory appears in one rename, so it is either absent or complete; an
interrupted run leaves only `.partial`, which `--resume` continues from its last complete
checkpoint (FILA statistics come back from their cache, so the adapter init is identical).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import random
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..config import dump_config, load_config
from ..data.formatting import encode_all, pad_batch
from ..data.records import QA
from ..data.sources import idk_answers, load_spec
from ..errors import DataError, RunError
from ..models.catalog import cache_root
from ..models.loading import load_tokenizer
from .cache import RUN_MANIFEST, cached_output_dir, is_finished, resolve_model
from .config import TrainConfig, check_fits_model_at, method_params
from .methods import get_method
from .model_card import records_fingerprint, write_model_card
from ..models.precision import auto_precision

LAUNCH_FILE = "launch.json"  # in <output_dir>.partial: the number of processes and the engine the run was launched with
# how long ranks wait for each other in one collective: the others wait at the end while rank 0 rebuilds
# and exports the model, which for a large one outlasts NCCL's default 10 minutes
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


def _precision(cfg: TrainConfig, state, log) -> bool:
    """True for bf16 mixed precision (autocast on CPU, bf16 on CUDA); `auto` is measured once per
    machine (models/precision.py), decided on the main process and shared with the others."""
    if cfg.optim.precision != "auto":
        return cfg.optim.precision == "bf16"
    choice = auto_precision(log=log) if state.is_main_process else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        choice = broadcast_object_list([choice])[0]
    log(f"precision: auto -> {choice.precision} ({choice.reason})")
    return choice.precision == "bf16"


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_data(cfg: TrainConfig, tokenizer, needs_retain: bool, needs_idk: bool):
    """Encoded (primary, retain, idk) sets; the primary set is forget (or train for finetune)."""
    primary_name = "train" if cfg.method.name == "finetune" else "forget"
    spec = cfg.data.train or cfg.data.forget
    primary_records = load_spec(spec)
    if not primary_records:
        raise DataError(f"the {primary_name} set ({spec}) is empty")
    primary = encode_all(tokenizer, primary_records, cfg.data.max_length, primary_name)
    retain = encode_all(tokenizer, load_spec(cfg.data.retain), cfg.data.max_length, "retain") if needs_retain else None
    idk = None
    if needs_idk:
        rng = random.Random(cfg.optim.seed)
        refusals = idk_answers()
        idk_records = [QA(r.question, rng.choice(refusals)) for r in primary_records]
        idk = encode_all(tokenizer, idk_records, cfg.data.max_length, "idk")
        if len(idk) != len(primary):
            raise DataError("some forget questions are too long to encode with an 'I don't know' answer")
    return primary, retain, idk


def _fila_statistics(cfg: TrainConfig, model, forget, retain, pad_id, log):
    from tqdm.auto import tqdm

    from .fila import cached_fisher, distributed_world, fisher_statistics, rank_shard, statistics_key

    lora = cfg.lora
    retain = retain[: lora.fisher_max_retain]

    def batches(examples):
        for i in range(0, len(examples), lora.fisher_batch_size):
            yield {k: v.to(model.device) for k, v in pad_batch(examples[i:i + lora.fisher_batch_size], pad_id).items()}

    cache = cache_root() / "fisher"
    out = {}
    for name, examples in (("forget", forget), ("retain", retain)):
        key = statistics_key(model, lora.target_modules, examples)  # of the whole set: equal on every rank
        def compute(examples=examples, name=name):
            shard = rank_shard(examples)  # disjoint per rank; fisher_statistics sums the ranks' shards
            n = -(-len(shard) // lora.fisher_batch_size)
            with tqdm(total=n, desc=f"FILA Fisher ({name})", disable=distributed_world()[0] != 0) as bar:
                return fisher_statistics(model, batches(shard), lora.target_modules, progress=bar)
        out[name] = cached_fisher(cache, key, compute)
        log(f"FILA statistics ({name}, {len(examples)} examples): {cache}/fisher-{key}.safetensors")
    return out["forget"], out["retain"]


def check_shardable(cfg: TrainConfig, n_primary: int, world: int, sharded_weights: str | None = None) -> None:
    """Refuse, before anything is written, a multi-process run that cannot work: fewer examples
    than processes x batch size (some rank would be handed repeated examples), or evaluation
    during training under an engine that shards the weights (it measures on rank 0 alone, while a
    sharded forward needs every rank)."""
    if sharded_weights and cfg.eval is not None:
        raise RunError(f"{sharded_weights} shards the weights over the processes, but evaluation during training "
                       "(the config's eval section) runs on the main process alone; drop eval or launch with "
                       "configs/accelerate/ddp.yaml")
    if world > 1 and n_primary < world * cfg.optim.batch_size:
        raise RunError(
            f"cannot shard {n_primary} {'train' if cfg.method.name == 'finetune' else 'forget'} examples over "
            f"{world} processes x optim.batch_size={cfg.optim.batch_size} (needs at least "
            f"{world * cfg.optim.batch_size}); lower optim.batch_size or launch fewer processes")


def sharded_weights(distributed_type, environ=os.environ) -> str | None:
    """'FSDP' / 'DeepSpeed' when the launch wraps the model in an engine that may shard its weights
    (the export then gathers them from every rank), else None. `distributed_type` is the launch's
    process kind (accelerate's `PartialState`, which calls an FSDP launch on GPUs MULTI_GPU: the
    Trainer's accelerator applies FSDP). Raises for FSDP or DeepSpeed over CPU processes, which
    accelerate would run as plain data parallel without a word (or fail later)."""
    kind = str(distributed_type).rpartition(".")[2]
    asked = {engine for engine, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if environ.get(flag, "false").lower() == "true"}
    if kind == "DEEPSPEED":
        return "DeepSpeed"
    if kind == "FSDP" or ("FSDP" in asked and kind not in ("MULTI_CPU", "NO")):
        return "FSDP"
    if asked:
        raise RunError(f"the launch asked for {' and '.join(sorted(asked))}, but accelerate applies it to GPU processes "
                       f"only (this launch is {kind}); on CPU processes launch with configs/accelerate/ddp.yaml")
    return None


def _prepare_output(out: Path, work: Path, config_text: str, resume: bool, overwrite: bool, world: int = 1,
                    engine: str | None = None) -> None:
    """Refuse to clobber a finished run or an interrupted one; check a resume matches (config, number
    of processes and engine: the global batch, each rank's data order and the checkpoint's layout
    depend on them)."""
    if is_finished(out) and not overwrite:
        raise RunError(f"{out} already holds a finished run; pass --overwrite or choose another output_dir")
    if work.exists() and not resume:
        raise RunError(f"an interrupted run exists at {work}; pass --resume to continue it or delete it")
    if resume and work.exists():
        saved = (work / "config.yaml").read_text() if (work / "config.yaml").is_file() else None
        if saved is not None and saved != config_text:
            raise RunError(f"--resume: the config differs from the interrupted run's ({work / 'config.yaml'})")
        launch = work / LAUNCH_FILE
        saved_launch = json.loads(launch.read_text()) if launch.is_file() else {}
        saved_world = saved_launch.get("world_size", 1)
        if saved_world != world:
            raise RunError(f"--resume: the interrupted run used {saved_world} process(es), this launch has {world}; "
                           f"relaunch with --num_processes {saved_world}")
        saved_engine = saved_launch.get("sharded_weights")
        if saved_engine != engine:  # e.g. a ZeRO-3 checkpoint holds no optimizer.pt a plain run could read
            raise RunError(f"--resume: the interrupted run was launched {_engine_words(saved_engine)}, this launch is "
                           f"{_engine_words(engine)}; relaunch with the same accelerate config")
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(config_text)
    (work / LAUNCH_FILE).write_text(json.dumps({"world_size": world, "sharded_weights": engine}))


def _engine_words(engine: str | None) -> str:
    return f"under {engine}" if engine else "without a sharding engine (plain or DDP)"


@dataclasses.dataclass
class TrainInputs:
    """What a run trains, resolved before anything is written: the method, the model's path and
    tokenizer, whether LoRA starts from FILA, and the encoded (primary, retain, idk) sets."""

    method: Any
    model_path: str
    tokenizer: Any
    fila: bool
    primary: list
    retain: list | None
    idk: list | None


@dataclasses.dataclass
class Trained:
    """What `trainer.train` returned, the checkpoint it resumed from, and its seconds."""

    result: Any
    checkpoint: Path | None
    seconds: float


def _resolve_inputs(cfg: TrainConfig, method) -> TrainInputs:
    """The model and the data: bad references fail here, before anything is written."""
    model_path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_path)
    check_fits_model_at(cfg, model_path)  # e.g. an RMU layer the model does not have
    fila = cfg.lora is not None and cfg.lora.init == "fila"
    primary, retain, idk = prepare_data(cfg, tokenizer, method.needs_retain or fila, method.needs_idk)
    return TrainInputs(method, model_path, tokenizer, fila, primary, retain, idk)


def _claim_output(out: Path, work: Path, config_text: str, resume: bool, overwrite: bool, state,
                  engine: str | None) -> None:
    """`_prepare_output` on the main process only; every rank stops with its refusal, or waits until
    the directories exist."""
    refusal = None
    if state.is_main_process:
        try:
            _prepare_output(out, work, config_text, resume, overwrite, state.num_processes, engine)
        except RunError as exc:
            refusal = str(exc)
    if state.num_processes > 1:  # every rank stops with the main process's reason, none waits forever
        from accelerate.utils import broadcast_object_list

        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise RunError(refusal)
    state.wait_for_everyone()


def _load_model(cfg: TrainConfig, model_path: str):
    """The base model in fp32, with gradient checkpointing if the config asks."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        raise RunError(f"could not load model {cfg.model!r}: {type(exc).__name__}: {exc}") from None
    if cfg.optim.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model


def _lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")


def _add_lora(cfg: TrainConfig, model, inputs: TrainInputs, state, log):
    """The model wrapped in LoRA adapters; with FILA, initialised from Fisher statistics of the
    forget and retain sets."""
    from peft import get_peft_model

    if inputs.fila:
        model.to(state.device)  # the statistics pass on this rank's accelerator
        fisher_f, fisher_r = _fila_statistics(cfg, model, inputs.primary, inputs.retain,
                                              inputs.tokenizer.pad_token_id, log)
    model = get_peft_model(model, _lora_config(cfg))
    if inputs.fila:
        from .fila import apply_fila

        log(f"FILA: initialised {apply_fila(model, fisher_f, fisher_r)} LoRA layers")
    return model


def _freeze_unreached(cfg: TrainConfig, model, inputs: TrainInputs, log) -> None:
    """e.g. RMU: nothing above the steered block is trained."""
    from .trainer import freeze_unreached

    device = next(model.parameters()).device
    probe = {k: v.to(device) for k, v in pad_batch(inputs.primary[:1], inputs.tokenizer.pad_token_id).items()}
    frozen = freeze_unreached(model, probe, cfg.method.layer)
    log(f"{cfg.method.name}: froze {len(frozen)} parameter tensors the forward stopped at block "
        f"{cfg.method.layer} does not reach")


def _build_model(cfg: TrainConfig, inputs: TrainInputs, state, log):
    """The model to train (full, LoRA or FILA) and the method's frozen reference copy, if it needs
    one and has no adapters to switch off (None otherwise)."""
    from .trainer import FrozenReference

    method = inputs.method
    model = _load_model(cfg, inputs.model_path)
    reference = None
    if method.needs_reference and not (cfg.lora is not None and not inputs.fila):
        reference = FrozenReference(copy.deepcopy(model))
    if cfg.lora is not None:
        model = _add_lora(cfg, model, inputs, state, log)
    if method.needs_hidden_layer:
        _freeze_unreached(cfg, model, inputs, log)
    return model, reference


def _local_fraction(model) -> float:
    """The share of the model's parameter elements this process holds: 1 unless a sharded launch
    split them (FSDP's DTensors, DeepSpeed ZeRO-3's partitions), ~1/N then."""
    local = total = 0
    for p in model.parameters():
        if hasattr(p, "ds_tensor"):  # ZeRO-3: p itself is an empty placeholder
            local, total = local + p.ds_tensor.numel(), total + p.ds_numel
        else:
            local, total = local + (p.to_local().numel() if hasattr(p, "to_local") else p.numel()), total + p.numel()
    return local / max(total, 1)


def _param_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def _training_arguments(cfg: TrainConfig, work: Path, bf16: bool):
    """`TrainingArguments` from the config's `optim` section; checkpoints go to <work>/checkpoints."""
    from transformers import TrainingArguments

    o = cfg.optim
    return TrainingArguments(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=o.epochs, max_steps=o.max_steps, learning_rate=o.lr,
        per_device_train_batch_size=o.batch_size, gradient_accumulation_steps=o.grad_accum,
        weight_decay=o.weight_decay, warmup_steps=o.warmup_ratio, lr_scheduler_type=o.scheduler,
        bf16=bf16, use_cpu=not torch.cuda.is_available(),
        save_strategy="no" if o.save_steps < 0 else ("epoch" if o.save_steps == 0 else "steps"),
        save_steps=max(o.save_steps, 1), save_total_limit=2,
        logging_steps=o.logging_steps, report_to=[], seed=o.seed, data_seed=o.seed,
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if o.group_by_length else "random",
        dataloader_num_workers=0, disable_tqdm=False,
        ddp_find_unused_parameters=False,  # every trainable weight takes part in every forward (RMU: see above)
    )


def _extra_callbacks(cfg: TrainConfig, tokenizer, work: Path, callbacks: list | None, log) -> list:
    """The caller's callbacks, then the periodic evaluation if the config has an `eval` section."""
    from .callbacks import EvalEverySteps

    extra = list(callbacks or [])
    if cfg.eval is not None:
        extra.append(EvalEverySteps(
            cfg.eval, tokenizer, load_spec(cfg.data.train or cfg.data.forget),
            load_spec(cfg.data.retain) if cfg.data.retain else None, work, cfg.data.max_length, log))
    return extra


def _build_trainer(cfg: TrainConfig, inputs: TrainInputs, model, reference, args, state, work: Path,
                   callbacks: list | None, log):
    """The `UnlearnTrainer`: the method, its reference (the model with its adapters off, under LoRA),
    this rank's data order, and the callbacks."""
    from .batches import PairCollator, UnlearnDataset
    from .trainer import AdapterOffReference, MarkCompleteCheckpoints, UnlearnTrainer

    method = inputs.method
    if method.needs_reference and reference is None:
        reference = AdapterOffReference(lambda m: trainer.accelerator.unwrap_model(m))
    extra_callbacks = _extra_callbacks(cfg, inputs.tokenizer, work, callbacks, log)
    trainer = UnlearnTrainer(
        model=model, args=args,
        train_dataset=UnlearnDataset(inputs.primary, inputs.retain if method.needs_retain else None, inputs.idk,
                                     seed=cfg.optim.seed + state.process_index),
        data_collator=PairCollator(inputs.tokenizer.pad_token_id),
        callbacks=[MarkCompleteCheckpoints(), *extra_callbacks],
        method=method, reference=reference,
        params=method_params(cfg),
    )
    return trainer


def _train(trainer, work: Path, resume: bool, log) -> Trained:
    """Train, from the last complete checkpoint when resuming."""
    from .trainer import last_complete_checkpoint

    checkpoint = last_complete_checkpoint(work / "checkpoints") if resume else None
    if checkpoint is not None:
        log(f"resuming from {checkpoint}")
    train_started = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return Trained(result, checkpoint, time.time() - train_started)


def _gathered_state(trainer, sharded_weights: str | None, log=print) -> dict | None:
    """Under FSDP or DeepSpeed, the trained weights whole (on rank 0, in CPU memory): every rank must
    take part in the gathering. None where each process holds the whole model anyway."""
    if sharded_weights is None:
        return None
    if sharded_weights == "DeepSpeed" and trainer.args.bf16:
        log("DeepSpeed with bf16: the exported weights are the engine's bf16 copy (frozen ones too); "
            "optim.precision: fp32 exports fp32")
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)  # DeepSpeed: the engine, not the module


def _whole_model(cfg: TrainConfig, trainer, model_path: str, state_dict: dict | None):
    """The trained model with whole weights: unwrapped from its DDP wrapper, or (sharded launches)
    rebuilt on the CPU, with the same LoRA layout, from the state gathered from every rank."""
    if state_dict is None:
        return trainer.accelerator.unwrap_model(trainer.model)
    from peft import get_peft_model
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # else, after a ZeRO-3 run, transformers builds the copy partitioned (empty)
    model = _load_model(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, gradient_checkpointing=False)),
                        model_path)
    if cfg.lora is not None:
        model = get_peft_model(model, _lora_config(cfg))
    model.load_state_dict(state_dict, strict=True)
    return model


def _save_final(cfg: TrainConfig, trainer, inputs: TrainInputs, work: Path, config_text: str,
                state_dict: dict | None = None) -> Path:
    """<work>/final: the trained model (LoRA merged into the weights), its tokenizer, the config and
    the training log."""
    tokenizer = inputs.tokenizer
    final_model = _whole_model(cfg, trainer, inputs.model_path, state_dict)
    if cfg.lora is not None:
        final_model = final_model.merge_and_unload()
    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    final_model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    (final / "config.yaml").write_text(config_text)
    with open(final / "train_log.jsonl", "w") as fh:
        for entry in trainer.state.log_history:
            fh.write(json.dumps(entry) + "\n")
    return final


def _run_manifest(cfg: TrainConfig, inputs: TrainInputs, trainer, trained: Trained, params: tuple[int, int],
                  bf16: bool, world: int, started: float) -> dict:
    """The run's record (run.json): what was trained on what, how long, how big, on what."""
    trainable, total = params
    checkpoint = trained.checkpoint
    return {
        "method": cfg.method.name, "mode": cfg.mode, "init": cfg.lora.init if cfg.lora else None,
        "base_model": cfg.model, "resolved_model": inputs.model_path,
        "examples": {"primary": len(inputs.primary), "retain": len(inputs.retain or []), "idk": len(inputs.idk or [])},
        "steps": trainer.state.global_step, "train_loss": trained.result.training_loss,
        "trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total,
        "precision": "bf16" if bf16 else "fp32", "device": str(trainer.args.device),
        "train_seconds": round(trained.seconds, 1), "total_seconds": round(time.time() - started, 1),
        "peak_memory_mb": round(_peak_memory_mb(), 1), "resumed_from": str(checkpoint) if checkpoint else None,
        "world_size": world, "forget_set": cfg.data.train or cfg.data.forget,
        "forget_fingerprint": records_fingerprint(load_spec(cfg.data.train or cfg.data.forget)),
    }


def _eval_record(cfg: TrainConfig, work: Path, final: Path, log_history: list) -> dict:
    """The periodic evaluations' summary; the best checkpoint they kept, if any, moves to final/best."""
    from .callbacks import eval_summary, read_best

    summary = eval_summary(cfg.eval, work, log_history)
    if summary["best"]:
        shutil.move(str(work / read_best(work)["dir"]), str(final / "best"))
    return summary


def _publish(final: Path, out: Path, work: Path, manifest: dict) -> None:
    """Model card and run.json into `final`, which then replaces `out` in one rename; `work` goes."""
    write_model_card(final, manifest, out.name)
    (final / RUN_MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    final.rename(out)
    shutil.rmtree(work)


def run_training(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None) -> Path:
    """Train as `cfg` says and return the finished run's directory; `callbacks` are extra
    `transformers.TrainerCallback`s (e.g. to measure forgetting after every epoch)."""
    from accelerate import PartialState

    out = Path(cfg.output_dir)
    work = out.with_name(out.name + ".partial")
    config_text = dump_config(cfg)
    started = time.time()
    method = get_method(cfg.method.name)
    torch.manual_seed(cfg.optim.seed)
    inputs = _resolve_inputs(cfg, method)
    # under `accelerate launch`, only the main process checks and creates dirs; on a machine without CUDA
    # the ranks must be told they are CPU processes (gloo), or each one believes it runs alone
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=COLLECTIVE_TIMEOUT)
    sharded = sharded_weights(state.distributed_type)
    check_shardable(cfg, len(inputs.primary), state.num_processes, sharded)
    if not state.is_main_process:
        log = lambda *_: None  # noqa: E731 - one copy of each message, from rank 0
    _claim_output(out, work, config_text, resume, overwrite, state, sharded)
    model, reference = _build_model(cfg, inputs, state, log)
    params = _param_counts(model)
    bf16 = _precision(cfg, state, log)
    args = _training_arguments(cfg, work, bf16)
    trainer = _build_trainer(cfg, inputs, model, reference, args, state, work, callbacks, log)
    trained = _train(trainer, work, resume, log)
    held = _local_fraction(trainer.model)
    state_dict = _gathered_state(trainer, sharded, log)

    if not trainer.is_world_process_zero():
        return out
    final = _save_final(cfg, trainer, inputs, work, config_text, state_dict)
    manifest = _run_manifest(cfg, inputs, trainer, trained, params, bf16, state.num_processes, started)
    manifest.update(sharded_weights=sharded, weights_held_per_process=round(held, 4))
    if cfg.eval is not None:
        manifest["eval"] = _eval_record(cfg, work, final, trainer.state.log_history)
    _publish(final, out, work, manifest)
    log(f"saved {out}")
    return out


def train_cached(config_path: str, overrides: list[str] | None = None, log=print) -> Path:
    """Run a training config into its cache directory (training/cache.py), reuse it if finished,
    resume it if an interruption left it half-done. Returns the finished run's directory."""
    cfg = load_config(TrainConfig, config_path, overrides)
    cfg = dataclasses.replace(cfg, output_dir=str(cached_output_dir(cfg, Path(config_path).stem)))
    if is_finished(cfg.output_dir):
        log(f"(cached) {cfg.output_dir}")
        return Path(cfg.output_dir)
    return run_training(cfg, resume=True, log=log)
