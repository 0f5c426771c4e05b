"""The import rules of the architecture, checked by reading the sources (ast), so a change
that breaks a layer boundary fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dwsearch"
MODEL_CODE = ("dwsearch.builder", "dwsearch.blocks", "dwsearch.costs", "dwsearch.registry",
              "dwsearch.spec", "dwsearch.zoo", "dwsearch.run")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def offenders(prefix: str, banned: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for name, path in SOURCES.items():
        if name == prefix or name.startswith(prefix + "."):
            bad = sorted(m for m in imports(path) if within(m, banned))
            if bad:
                out[name] = bad
    return out


@pytest.mark.parametrize("layer", ["dwsearch.data", "dwsearch.train"])
def test_data_and_train_never_import_model_code(layer: str) -> None:
    assert offenders(layer, MODEL_CODE) == {}


@pytest.mark.parametrize("leaf", ["dwsearch.errors", "dwsearch.records", "dwsearch._lazy",
                                  "dwsearch.yamlio", "dwsearch.limits", "dwsearch.arguments",
                                  "dwsearch.convention", "dwsearch.urls", "dwsearch.files"])
def test_leaves_import_nothing_heavy(leaf: str) -> None:
    banned = ("torch", "numpy", "optuna", "pandas", "fvcore", "torchvision")
    assert offenders(leaf, banned) == {}
    internal = {m for m in imports(SOURCES[leaf]) if m.startswith("dwsearch")}
    assert internal <= {"dwsearch.errors"}


def test_spec_imports_only_errors_at_module_level() -> None:
    tree = ast.parse(SOURCES["dwsearch.spec"].read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in top if m.startswith("dwsearch")} == {"dwsearch.errors", "dwsearch.yamlio"}


def test_registry_imports_no_block_module() -> None:
    assert not any(m.startswith("dwsearch.blocks") for m in imports(SOURCES["dwsearch.registry"]))


def test_only_the_study_package_imports_optuna() -> None:
    users = {n for n, p in SOURCES.items() if any(m.startswith("optuna") for m in imports(p))}
    assert all(n.startswith("dwsearch.study") for n in users), users


def test_configs_and_cli_import_no_torch_at_module_level() -> None:
    for name in ("dwsearch.train.config", "dwsearch.data.config", "dwsearch.cli",
                 "dwsearch.cli._common", "dwsearch.cli.models", "dwsearch.cli.training",
                 "dwsearch.cli.bench", "dwsearch.cli.study", "dwsearch.cli.compress",
                 "dwsearch.compress", "dwsearch.compress.config", "dwsearch.study.options"):
        tree = ast.parse(SOURCES[name].read_text())
        top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.startswith(("torch", "optuna", "pydantic", "dwsearch.builder",
                                     "dwsearch.costs", "dwsearch.run", "dwsearch.bench",
                                     "dwsearch.study.config", "dwsearch.study.worker"))
                       for m in top), name


def test_the_metrics_table_is_a_leaf_the_report_can_read() -> None:
    banned = ("torch", "numpy", "optuna", "pandas", "fvcore", "torchvision")
    assert offenders("dwsearch.metrics", banned) == {}
    internal = {m for m in imports(SOURCES["dwsearch.metrics"]) if m.startswith("dwsearch")}
    assert internal <= {"dwsearch.errors", "dwsearch.records"}


def test_deploy_imports_no_optuna_or_pandas_and_its_runtimes_lazily() -> None:
    assert offenders("dwsearch.deploy", ("optuna", "pandas", "dwsearch.study",
                                         "dwsearch.report")) == {}
    runtimes = ("executorch", "onnxruntime", "onnx", "onnxscript", "torchao")
    for name, path in SOURCES.items():
        if name.startswith("dwsearch.deploy"):
            tree = ast.parse(path.read_text())
            top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            assert not [m for m in top if within(m, runtimes)], name


def test_compress_imports_no_optuna_or_pandas_and_torch_pruning_lazily() -> None:
    """dwsearch.compress is torch-side (run and study call it, never the reverse) and
    imports Torch-Pruning and the deployment runtimes only when a model is pruned or
    lowered, so it imports without the compress extra."""
    assert offenders("dwsearch.compress", ("optuna", "pandas", "dwsearch.study",
                                           "dwsearch.report", "dwsearch.cli")) == {}
    lazy = ("torch_pruning", "executorch", "onnxruntime", "torchao")
    for name, path in SOURCES.items():
        if name.startswith("dwsearch.compress"):
            tree = ast.parse(path.read_text())
            top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            assert not [m for m in top if within(m, lazy)], name


PUBLIC_API = {
    "dwsearch.train.config": ["TrainConfig"],
    "dwsearch.data.config": ["DataConfig"],
    "dwsearch.study.runner": ["load_config", "run_study", "StudyOutcome"],
    "dwsearch.study.options": ["WorkerOptions"],
    "dwsearch.study.config": ["StudyConfig"],
    "dwsearch.study.results": ["load_results", "StudyResults"],
    "dwsearch.report": ["make_report", "open_study", "ReportPaths"],
    "dwsearch.run": ["train_spec"],
    "dwsearch.builder": ["build_model"],
    "dwsearch.zoo": ["load_spec"],
}


def _fresh(code: str) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in PUBLIC_API.items()
                                               for n in names])
def test_the_public_api_is_importable_from_dwsearch(module: str, name: str) -> None:
    import importlib

    import dwsearch

    namespace: dict[str, object] = {}
    exec(f"from dwsearch import {name} as imported", namespace)  # the statement users write
    assert namespace["imported"] is getattr(importlib.import_module(module), name)
    assert getattr(dwsearch, name) is namespace["imported"] and name in dwsearch.__all__


def test_import_dwsearch_stays_light_and_reads_its_version_from_the_metadata() -> None:
    """``import dwsearch`` imports neither torch, optuna nor pandas (the API is lazy), and
    ``__version__`` is the installed package's (pyproject.toml), not a second copy."""
    heavy = _fresh("import sys, dwsearch\n"
                   "print(sorted(m for m in ('torch', 'optuna', 'pandas') if m in sys.modules))")
    assert heavy == "[]"
    version = _fresh("import importlib.metadata as metadata\n"
                     "real = metadata.version\n"
                     "metadata.version = lambda name: '9.9.9' if name == 'dwsearch' else real(name)\n"
                     "import dwsearch\nprint(dwsearch.__version__)")
    assert version == "9.9.9"
    import importlib.metadata

    import dwsearch

    assert dwsearch.__version__ == importlib.metadata.version("dwsearch")
