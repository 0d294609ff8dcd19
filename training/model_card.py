"""The Hugging Face model card (`README.md`) of an unlearned checkpoint.

`run_training` writes one into every finished run: YAML front matter (base_model, library_name,
tags incl. `unlearning` and the method, the forget set's fingerprint) and a short body (method,
data, steps, how to load). `add_evaluation` rewrites it with an `unlearn eval` result in
`model-index` form (one entry per numeric aggregate of each task, plus the headline summary),
so the hub shows the evaluation beside the weights. Built with `huggingface_hub.ModelCard` /
`ModelCardData`, never hand-written YAML.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import json_digest
from .cache import RUN_MANIFEST

CARD_FILE = "README.md"

# catalog names -> the upstream hub repository the packaged weights come from
CATALOG_HUB_IDS = {"smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}

SUMMARY_METRICS = ("model_utility", "forget_quality", "privleak", "mia_auc")


def records_fingerprint(records) -> str:
    """sha256[:16] of the records as sorted-key JSON: the same value `unlearn eval` reports as a
    task's fingerprint (evaluation/benchmarks.Task.fingerprint) for the same set."""
    return json_digest([r.to_json() for r in records])


def base_model_id(model_ref: str) -> str:
    """The hub id of a catalog model, else the reference as the config gave it."""
    return CATALOG_HUB_IDS.get(model_ref, model_ref)


def _card_data(manifest: dict, name: str, eval_results=None):
    from huggingface_hub import ModelCardData

    method = manifest["method"]
    tags = ["fine-tuned" if method == "finetune" else "unlearning", method, "unlearnkit"]
    if manifest.get("init") == "fila":
        tags.append("fila")
    return ModelCardData(
        base_model=base_model_id(manifest["base_model"]), library_name="transformers",
        pipeline_tag="text-generation", tags=tags, model_name=name,
        eval_results=eval_results or None,
        unlearning={"method": method, "mode": manifest["mode"], "init": manifest.get("init"),
                    "forget_set": manifest.get("forget_set"), "forget_fingerprint": manifest.get("forget_fingerprint"),
                    "steps": manifest["steps"], "world_size": manifest.get("world_size", 1)},
    )


def _body(manifest: dict, name: str, evaluated: str | None) -> str:
    forget = manifest.get("forget_set") or "-"
    lines = [
        f"# {name}", "",
        f"`{base_model_id(manifest['base_model'])}` after {'fine-tuning' if manifest['method'] == 'finetune' else 'unlearning'} with **{manifest['method']}** "
        f"({manifest['mode']}{', FILA init' if manifest.get('init') == 'fila' else ''}; merged weights) by unlearnkit.", "",
        f"- forget set: `{forget}` (fingerprint `{manifest.get('forget_fingerprint')}`, "
        f"{manifest['examples']['primary']} examples)",
        f"- retain set: {manifest['examples']['retain']} examples",
        f"- steps: {manifest['steps']}, processes: {manifest.get('world_size', 1)}, precision: {manifest['precision']}",
        f"- evaluation: {evaluated or 'not evaluated yet (run `unlearn eval --model <this directory>`)'}", "",
        "The resolved training config is `config.yaml`; `run.json` holds timings and sizes.", "",
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(PATH)", "tokenizer = AutoTokenizer.from_pretrained(PATH)", "```", "",
    ]
    return "\n".join(lines)


def _write(run_dir: Path, card_data, manifest: dict, name: str, evaluated: str | None) -> Path:
    from huggingface_hub import ModelCard

    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{_body(manifest, name, evaluated)}")
    path = Path(run_dir) / CARD_FILE
    tmp = path.with_name(path.name + ".partial")
    card.save(tmp)
    tmp.replace(path)
    return path


def write_model_card(run_dir: Path, manifest: dict, name: str) -> Path:
    """Write `README.md` for the run described by `manifest` (run.json's fields) named `name`."""
    return _write(run_dir, _card_data(manifest, name), manifest, name, None)


def eval_results(result: dict) -> list:
    """`unlearn eval`'s result JSON as model-index entries: every numeric aggregate of every task
    (split = the task name) and the headline summary metrics that are not null."""
    from huggingface_hub import EvalResult

    benchmark = result["benchmark"]
    out = []
    for task, body in result.get("tasks", {}).items():
        for metric, value in body.get("aggregate", {}).items():
            if metric == "n_items" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            out.append(EvalResult(task_type="text-generation", dataset_type=benchmark, dataset_name=benchmark,
                                  dataset_split=task, metric_type=metric, metric_value=float(value)))
    for metric in SUMMARY_METRICS:
        value = (result.get("summary") or {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(EvalResult(task_type="text-generation", dataset_type=benchmark, dataset_name=benchmark,
                                  metric_type=metric, metric_value=float(value)))
    return out


def add_evaluation(run_dir: Path, result: dict) -> Path:
    """Rewrite the run's card with `result` (an `unlearn eval` result) in model-index form."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
    entries = eval_results(result)
    fp = result.get("tasks", {}).get("forget", {}).get("fingerprint")
    note = f"{result['benchmark']}, {len(entries)} metrics in the model-index (evaluated forget set: fingerprint `{fp}`)"
    return _write(run_dir, _card_data(manifest, run_dir.name, entries), manifest, run_dir.name, note)
