"""The package's own import graph (benchmarks/import_graph.py reads it with `ast`): no import cycles,
and no import that breaks the layering docs/architecture.md states."""

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


def test_every_package_has_a_layer(ig, graph):
    placed = {p for layer in ig.LAYERS for p in layer}
    found = {ig.package_of(m) for m in graph.modules} - {"unlearnkit"}
    assert found <= placed, f"modules in no layer (add them to LAYERS in benchmarks/import_graph.py): {found - placed}"


def test_the_layering_allows_downward_and_listed_same_layer_imports_only(ig):
    assert ig.allowed("training", "models") and ig.allowed("evaluation", "guard") and ig.allowed("guard", "guard")
    assert ig.allowed("config", "errors") and ig.allowed("cli", "demo")
    assert not ig.allowed("training", "evaluation") and not ig.allowed("guard", "evaluation")
    assert not ig.allowed("guard", "training") and not ig.allowed("training", "guard")       # same layer
    assert not ig.allowed("evaluation", "agents") and not ig.allowed("models", "training")


def test_a_planted_forbidden_import_is_reported(ig, graph):
    p = "unlearnkit."
    planted = [ig.Import(p + "training.callbacks", p + "evaluation.metrics.means", 1, True),
               ig.Import(p + "guard.embedder", p + "training.config", 1, False)]
    assert ig.layer_violations(graph.imports + planted) == ig.layer_violations(graph.imports) + planted


def test_no_import_breaks_the_layering(ig, graph):
    """Top-level and function-level imports of own modules: a package imports only lower layers."""
    wrong = [f"{i.source}:{i.line} -> {i.target}{' (function-level)' if i.lazy else ''}"
             for i in ig.layer_violations(graph.imports)]
    assert not wrong, f"imports that break the layering ({ig.layering_line()}): {wrong}"


def test_the_architecture_page_states_this_layering(ig):
    page = (SCRIPT.parents[1] / "docs" / "architecture.md").read_text()
    assert ig.layering_line() in page, f"docs/architecture.md should state the layering as: {ig.layering_line()}"
