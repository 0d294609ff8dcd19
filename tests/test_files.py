"""files.json_digest is the one hash of a JSON value: cache keys, data fingerprints and the model card's
forget-set fingerprint all come from it, and its digests are the ones cached results are keyed by."""

import hashlib
import json

from unlearnkit.data.records import QA
from unlearnkit.evaluation.benchmarks import Task
from unlearnkit.files import json_digest
from unlearnkit.training.model_card import records_fingerprint

VALUE = [{"question": "Who wrote Ünïcode?", "answer": "A. Writer", "paraphrased_question": None,
          "perturbed_answers": ["B", "C"]},
         {"question": "q2", "answer": "a2", "n": 3, "x": 0.5}]


def _sorted_json_sha256(value, length: int) -> str:
    """The formula the data fingerprints were written with before they used json_digest."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def test_json_digest_is_the_formula_cached_results_are_keyed_by():
    assert json_digest(VALUE) == _sorted_json_sha256(VALUE, 16) == "d9ec77bb070693c3"
    assert json_digest(VALUE, length=12) == _sorted_json_sha256(VALUE, 12) == "d9ec77bb0706"


def test_record_fingerprints_are_json_digests_of_the_records():
    items = [QA("Who wrote it?", "A. Writer", {"perturbed_answer": ["B", "C"]}), QA("q2", "a2")]
    old = _sorted_json_sha256([r.to_json() for r in items], 16)
    assert Task("f", "qa", items, "file:x").fingerprint() == records_fingerprint(items) == old
    assert json_digest([r.to_json() for r in items]) == old
