"""The shape of the code base: one-way imports, small files, studies that own their behaviour."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hummuss", "suite", "studies")
MAX_LINES = 450
STUDY_NAMES = ("context-length", "frame-rate", "gdssm-aggregation", "stream-aggregation", "init-schemes")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `name` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_circles():
    """Tarjan's strongly connected components over our modules: each must be a single module.
    (A package's __init__ that re-exports its own submodules is allowed.)"""
    modules = _modules()
    graph = {m: {d for d in _imports(m, p, set(modules)) if not d.startswith(m + ".")} for m, p in modules.items()}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in graph:
        if m not in index:
            visit(m)
    assert cycles == []


def test_the_library_never_imports_the_suite():
    modules = _modules()
    leaks = {m: sorted(d for d in _imports(m, p, set(modules)) if d.split(".")[0] != "hummuss")
             for m, p in modules.items() if m.split(".")[0] == "hummuss"}
    assert {m: d for m, d in leaks.items() if d} == {}


@pytest.mark.parametrize("pkg", (*PACKAGES, "tests"))
def test_no_source_file_over_the_limit(pkg):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_suite_knows_no_study_by_name():
    """A study's behaviour lives in its own file; only the registry discovers studies."""
    hits = {str(p.relative_to(ROOT)): [s for s in STUDY_NAMES if s in p.read_text()]
            for p in (ROOT / "suite").rglob("*.py") if p.name != "registry.py"}
    assert {k: v for k, v in hits.items() if v} == {}


def test_the_license_is_an_spdx_expression():
    """PEP 639: `license = "MIT"`, not the deprecated `{ text = ... }` table setuptools warns about."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license_ = project["project"]["license"]
    assert isinstance(license_, str) and license_ == "MIT"
    setuptools_floor = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools_floor == ["setuptools>=77"]  # the first setuptools that reads SPDX strings


def test_every_runtime_dependency_is_imported():
    """pyproject's dependencies are what the code imports; nothing declared and never used.
    (psutil is imported by the leases and launchers and by MLflow's system metrics; the
    optional `gpu` extra, nvidia-ml-py, only by MLflow: tests/test_system_metrics.py.)"""
    import re

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in project["project"]["dependencies"]}
    modules = {n: {"pyyaml": "yaml"}.get(n, n.replace("-", "_")) for n in names}
    source = "\n".join(p.read_text() for folder in ("hummuss", "suite", "studies") for p in (ROOT / folder).rglob("*.py"))
    unused = {n for n, m in modules.items() if not re.search(rf"^\s*(import|from) {m}\b", source, re.M)}
    assert unused == set()
