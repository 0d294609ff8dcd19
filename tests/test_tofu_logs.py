"""TOFU's official eval logs: read, aggregate, forget quality; bad directories named precisely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unlearnkit.errors import DataError
from unlearnkit.evaluation.tofu_logs import (forget_quality_from_logs, read_logs, summarize_logs, truth_ratios,
                                             write_logs, _values)

LOGS = Path(os.environ["UNLEARN_TOFU_DIR"]) / "locuslab_tofu_eval_logs"
PAIRS = {
    "llama2-7b": ("ft_epoch5_lr1e-05_llama2-7b_full_wd0.01", "ft_epoch5_lr1e-05_llama2-7b_retain90_wd0.01"),
    "phi-1.5": ("ft_epoch5_lr2e-05_phi_full_wd0.01", "ft_epoch5_lr2e-05_phi_retain90_wd0.01"),
}
needs_logs = pytest.mark.skipif(not LOGS.is_dir(), reason="TOFU logs not present (set UNLEARN_TOFU_DIR)")


def tofu_reference_forget_quality(full: Path, retain: Path) -> tuple[float, float]:
    """TOFU's aggregate_eval_stat.get_forget_quality, transcribed: KS on exp(mean perturbed - paraphrased)."""
    from scipy.stats import ks_2samp

    def stat(d):
        log = json.loads(next(d.rglob("eval_log_forget.json")).read_text())
        para = np.array(list(log["avg_paraphrased_loss"].values()))
        pert = np.array(list(log["average_perturb_loss"].values())).mean(axis=-1)
        return np.exp(pert - para)

    res = ks_2samp(stat(full), stat(retain))
    return res.pvalue, res.statistic


@needs_logs
@pytest.mark.parametrize("model", sorted(PAIRS))
def test_forget_quality_matches_tofu_definition(model):
    full, retain = (LOGS / d for d in PAIRS[model])
    fq = forget_quality_from_logs(full, retain)
    p, d = tofu_reference_forget_quality(full, retain)
    assert fq["forget_quality"] == pytest.approx(p, rel=1e-9)
    assert fq["ks_statistic"] == pytest.approx(d)
    assert fq["n_unlearned"] == fq["n_retain"] == 300
    assert fq["forget_quality"] < 1e-10  # the full model is far from the retain model on forget10


@needs_logs
def test_truth_ratio_matches_the_logged_per_item_values():
    log = read_logs(LOGS / PAIRS["llama2-7b"][0])["forget"]
    assert np.allclose(truth_ratios(log), _values(log, "truth_ratio"), rtol=1e-4)


@needs_logs
def test_summary_has_nine_utility_components():
    s = summarize_logs(LOGS / PAIRS["llama2-7b"][0])
    assert len(s["components"]) == 9
    assert 0 < s["model_utility"] < 1
    assert s["tasks"]["forget"]["n_items"] == 300


@needs_logs
def test_cli_prints_forget_quality():
    full, retain = (str(LOGS / d) for d in PAIRS["phi-1.5"])
    out = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "eval", "tofu-logs", "--unlearned", full,
                          "--retain", retain, "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    p, d = tofu_reference_forget_quality(Path(full), Path(retain))
    assert data["forget_quality"] == pytest.approx(p) and data["ks_statistic"] == pytest.approx(d)


def test_wrong_shapes_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_logs(tmp_path / "nope")
    with pytest.raises(DataError, match="no eval_log_forget.json"):
        read_logs(tmp_path)
    (tmp_path / "eval_log_forget.json").write_text(json.dumps({"avg_paraphrased_loss": {"0": 1.0}}))
    with pytest.raises(DataError, match=r"missing key\(s\) \['average_perturb_loss'\]"):
        read_logs(tmp_path)
    (tmp_path / "eval_log_forget.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_logs(tmp_path)
    out = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "eval", "tofu-logs", "--unlearned", str(tmp_path),
                          "--retain", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "not valid JSON" in out.stderr


def test_written_logs_read_back(tmp_path):
    items = [{"avg_gt_loss": 0.1, "rougeL_recall": 1.0, "avg_paraphrased_loss": 1.0,
              "average_perturb_loss": [2.0, 3.0], "truth_ratio": 0.22, "question": "not a TOFU field"},
             {"avg_gt_loss": 0.2, "rougeL_recall": 0.5, "avg_paraphrased_loss": 2.0,
              "average_perturb_loss": [2.0, 2.0], "truth_ratio": 1.0}]
    write_logs({"forget": items, "retain": items}, tmp_path)
    logs = read_logs(tmp_path)
    assert set(logs) == {"forget", "retain"}
    assert "question" not in logs["forget"]
    assert truth_ratios(logs["forget"]) == pytest.approx([np.exp(-1.5), 1.0])
