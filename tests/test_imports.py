"""The package's own import graph (benchmarks/import_graph.py reads it with `ast`): no import cycles."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "import_graph.py"


@pytest.fixture(scope="module")
def ig():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module     # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def graph(ig):
    return ig.build_graph()


def test_cycle_finder_finds_a_planted_cycle(ig):
    dag = {"a": {"b", "c"}, "b": {"c"}, "c": set()}
    assert ig.cycles(dag) == []
    assert ig.cycles({**dag, "c": {"d"}, "d": {"a"}, "e": {"e"}}) == [["a", "b", "c", "d"]]


def test_graph_reads_relative_top_level_and_lazy_imports(graph):
    top, every = graph.edges(lazy=False), graph.edges(lazy=True)
    p = "unlearnkit."
    assert p + "training.cache" in top[p + "training.run"]             # `from .cache import ...`
    assert p + "training.cache" in top[p + "evaluation.harness"]       # `from ..training.cache import ...`
    assert p + "models.fetch" not in top[p + "cli"]                     # inside _cmd_models()
    assert p + "models.fetch" in every[p + "cli"]
    assert p + "models.checkpoint" in top[p + "models.fetch"] and p + "models.loading" not in every[p + "models.fetch"]
    assert p + "guard.runtime" in graph.heavy() and p + "config" not in graph.heavy()


def test_no_import_cycle_among_top_level_imports(ig, graph):
    found = ig.cycles(graph.edges(lazy=False))
    assert not found, f"import cycles (top-level imports): {found}"


def test_no_cycle_through_function_level_imports_either(ig, graph):
    found = ig.cycles(graph.edges(lazy=True))
    assert found == [], f"import cycles through function-level imports: {found}"
