"""The `unlearn` command: instant help, clean errors, data synth."""

import json
import subprocess
import sys


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "unlearnkit.cli", *args], capture_output=True, text=True, **kwargs)


def test_help_lists_subcommands_without_importing_torch():
    code = ("import sys, unlearnkit.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import at --help'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for sub in ("models", "data", "train", "eval", "serve", "compare", "attack", "demo"):
        assert sub in proc.stdout


def test_bad_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: {name: forgetify}\ndata: {forget: synth/forget}\n")
    proc = run("train", "--config", str(cfg))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "unknown method 'forgetify'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_model_name_is_reported(tmp_path):
    proc = run("models", "fetch", "gpt-17")
    assert proc.returncode == 2 and "unknown model 'gpt-17'" in proc.stderr and "smollm2" in proc.stderr


def test_data_synth_writes_tofu_format(tmp_path):
    proc = run("data", "synth", "--people", "5", "--forget", "1", "--seed", "3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "forget.json").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 10 and {"question", "answer", "perturbed_answer", "paraphrased_question"} <= set(first)


def test_compare_and_attack_refuse_unknown_names_in_one_line(tmp_path):
    proc = run("compare", "--config", "configs/compare/tofu-mini.yaml", "--systems", "target,ihl_fila+firewall")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown system 'ihl_fila+firewall'")
    assert "valid systems: ['target', 'retain'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("attack", "--config", "configs/compare/tofu-mini.yaml", "--attacks", "paraphrase,mind_reading")
    assert proc.returncode == 2 and "unknown attack(s) ['mind_reading']; valid attacks: [" in proc.stderr
