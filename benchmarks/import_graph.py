"""The package's own import graph, read with `ast` (nothing is imported): cycles and lazy imports.

    python benchmarks/import_graph.py [--list]

Prints
- import cycles among the package's modules: strongly connected components of the graph of
  top-level imports (the ones that run when a module is imported; `if TYPE_CHECKING:` blocks
  excluded), and of the graph of all imports (function-level ones too: a cycle there is a
  layering knot held together by an import inside a function);
- function-level imports of the package's own modules, split into light targets (importing them
  imports no heavy dependency) and heavy ones (they import torch, vLLM, transformers, ... at their
  top level, directly or through another own module): a lazy import of a light module is one
  that could move to the top of its file.
- imports that break the layering (LAYERS, the one docs/architecture.md states): a package may
  import its own modules and those of any lower layer; within a layer, only the pairs in
  SAME_LAYER. Top-level and function-level imports alike.
`--list` prints every function-level import of a light own module (file:line -> module).
tests/test_imports.py fails on any cycle and on any import that breaks the layering.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "unlearnkit"
SKIP = {".venv", "tests", "benchmarks", "runs", "docs", "configs", f"{PACKAGE}.egg-info", "__pycache__", ".git"}
HEAVY = {"torch", "vllm", "transformers", "faiss", "sentence_transformers", "langgraph", "peft", "accelerate",
         "safetensors", "gguf", "scipy", "matplotlib", "rouge_score", "openai", "fastapi", "uvicorn", "tokenizers"}


# The layering, lowest first: a package (a top-level module or subpackage of the root) may import its
# own modules and those of any lower layer; within a layer, only the pairs in SAME_LAYER.
LAYERS = [("errors", "files", "config", "provenance", "stats"), ("data",), ("models",), ("training", "guard"),
          ("evaluation", "agents"), ("compare",), ("cli", "demo")]
SAME_LAYER = {("config", "errors"), ("cli", "demo")}   # config raises ConfigError; `unlearn demo` runs demo.py


@dataclass(frozen=True)
class Import:
    source: str          # importing module (dotted, e.g. unlearnkit.training.run)
    target: str          # imported own module
    line: int
    lazy: bool           # inside a function


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)
    heavy_top: set[str] = field(default_factory=set)   # modules importing a heavy dependency at top level

    def edges(self, lazy: bool) -> dict[str, set[str]]:
        """Module -> own modules it imports (top-level only, or all imports when `lazy`)."""
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if (lazy or not imp.lazy) and imp.target != imp.source:
                out[imp.source].add(imp.target)
        return out

    def heavy(self) -> set[str]:
        """Modules whose import pulls in a heavy dependency, directly or through own top-level imports."""
        top = self.edges(lazy=False)
        heavy = set(self.heavy_top)
        changed = True
        while changed:
            changed = False
            for m, targets in top.items():
                if m not in heavy and targets & heavy:
                    heavy.add(m)
                    changed = True
        return heavy

    def lazy_own(self) -> tuple[list[Import], list[Import]]:
        """Function-level imports of own modules: (light targets, heavy targets)."""
        heavy = self.heavy()
        lazy = [i for i in self.imports if i.lazy]
        return [i for i in lazy if i.target not in heavy], [i for i in lazy if i.target in heavy]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def package_modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIP & set(path.relative_to(ROOT).parts):
            found[module_name(path)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, lazy: bool = False):
    """(statement, inside a function) for every import statement that runs (TYPE_CHECKING skipped)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for sub in child.orelse:
                yield from _walk(ast.Module(body=[sub], type_ignores=[]), lazy)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        yield from _walk(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _resolve(stmt: ast.ImportFrom | ast.Import, module: str, is_package: bool, modules: dict) -> tuple[list[str], bool]:
    """The own modules an import statement loads, and whether it names a heavy dependency."""
    if isinstance(stmt, ast.Import):
        names = [a.name for a in stmt.names]
        own = [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]
        return [n for n in own if n in modules], any(n.split(".")[0] in HEAVY for n in names)
    if stmt.level == 0:
        base = stmt.module or ""
        if base.split(".")[0] != PACKAGE:
            return [], base.split(".")[0] in HEAVY
    else:
        package = module if is_package else module.rsplit(".", 1)[0]
        for _ in range(stmt.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{stmt.module}" if stmt.module else package
    targets = []
    for alias in stmt.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in modules else base)   # `from . import x`: x may be a module
    return [t for t in dict.fromkeys(targets) if t in modules], False


def build_graph() -> Graph:
    graph = Graph(package_modules())
    for module, path in graph.modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for stmt, lazy in _walk(tree):
            targets, heavy = _resolve(stmt, module, is_package, graph.modules)
            if heavy and not lazy:
                graph.heavy_top.add(module)
            graph.imports += [Import(module, t, stmt.lineno, lazy) for t in targets]
    return graph


def package_of(module: str) -> str:
    """The layered unit a module belongs to: `unlearnkit.guard.build` -> `guard`, `unlearnkit.cli` -> `cli`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layering_line() -> str:
    """LAYERS as docs/architecture.md writes it."""
    return " → ".join(", ".join(layer) for layer in LAYERS)


def allowed(source: str, target: str) -> bool:
    """Whether package `source` may import package `target` (the root package, which imports nothing,
    is at no layer)."""
    if source == target:
        return True
    rank = {p: n for n, layer in enumerate(LAYERS) for p in layer}
    if source not in rank or target not in rank:
        return False
    return rank[target] < rank[source] or (rank[target] == rank[source] and (source, target) in SAME_LAYER)


def layer_violations(imports: list[Import]) -> list[Import]:
    """Imports of an own module from a package that may not import it, top-level and function-level."""
    return [i for i in imports if not allowed(package_of(i.source), package_of(i.target))]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the function-level imports of light own modules")
    args = parser.parse_args(argv)
    graph = build_graph()
    light, heavy = graph.lazy_own()
    print(f"modules: {len(graph.modules)}; own import edges: {len(graph.imports)}")
    for name, lazy in (("top-level imports", False), ("all imports (function-level too)", True)):
        found = cycles(graph.edges(lazy))
        print(f"import cycles, {name}: {len(found)}")
        for c in found:
            print("   ", " <-> ".join(map(short, c)))
    wrong = layer_violations(graph.imports)
    print(f"imports that break the layering ({layering_line()}): {len(wrong)}")
    for i in wrong:
        print(f"    {short(i.source)}:{i.line} -> {short(i.target)}{' (function-level)' if i.lazy else ''}")
    print(f"function-level imports of own modules: {len(light) + len(heavy)} "
          f"({len(light)} of light modules, {len(heavy)} of heavy ones)")
    if args.list:
        for i in sorted(light, key=lambda i: (i.source, i.line)):
            print(f"    {graph.modules[i.source].relative_to(ROOT)}:{i.line} -> {short(i.target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
