"""The house: dvc.yaml lists every module a stage runs, and the library's layers hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

LAYERS = ("core", "data", "evaluate", "train", "report", "study")  # each imports earlier ones


def project_imports(path: Path) -> set[Path]:
    """The project modules (forgetful/..., stages/...) that `path` imports, anywhere in it
    (lazy imports inside functions too), as paths relative to the repository."""
    found: set[Path] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        if parts[0] not in ("forgetful", "stages"):
            return
        module = Path(*parts).with_suffix(".py")
        if (REPO / module).exists():
            found.add(module)
        elif not (REPO / Path(*parts) / "__init__.py").exists():
            raise AssertionError(f"{path} imports {dotted}, which is not in the repository")

    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            add(node.module)
            for alias in node.names:  # `from forgetful.core import tracking` is a module
                if (REPO / Path(*node.module.split("."), alias.name + ".py")).exists():
                    add(f"{node.module}.{alias.name}")
    return found


def closure(path: Path) -> set[Path]:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(project_imports(current))
    return seen


def stage_deps() -> dict[str, tuple[str, set[str]]]:
    """Stage name -> (its module, the deps dvc.yaml lists), foreach stages included."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = body["cmd"].split("python -m ", 1)[1].split()[0]
        out[name] = (module, {str(d) for d in body.get("deps", [])})
    return out


def test_every_module_a_stage_runs_is_a_dep_of_that_stage() -> None:
    missing = {}
    for name, (module, deps) in stage_deps().items():
        code = {str(p) for p in closure(Path(*module.split(".")).with_suffix(".py"))}
        if code - deps:
            missing[name] = sorted(code - deps)
    assert not missing, f"dvc.yaml deps lack modules these stages import: {missing}"


def test_dvc_yaml_lists_no_module_a_stage_does_not_run() -> None:
    """The reverse: a stale dep re-runs a stage for edits that cannot change it."""
    extra = {}
    for name, (module, deps) in stage_deps().items():
        code = {str(p) for p in closure(Path(*module.split(".")).with_suffix(".py"))}
        listed = {d for d in deps if d.endswith(".py")}
        if listed - code:
            extra[name] = sorted(listed - code)
    assert not extra, f"dvc.yaml lists modules these stages never import: {extra}"


def test_the_dependency_walk_sees_lazy_and_module_imports(tmp_path: Path) -> None:
    # evaluate imports the lm-eval bridge inside a function; train_adapter imports
    # `distributed` as a module name (`from forgetful.train import distributed`).
    assert Path("forgetful/evaluate/harness.py") in closure(Path("stages/evaluate.py"))
    assert Path("forgetful/train/distributed.py") in project_imports(
        Path("stages/train_adapter.py"))


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for layer_index, layer in enumerate(LAYERS):
        for path in sorted((REPO / "forgetful" / layer).glob("*.py")):
            rel = path.relative_to(REPO)
            for imported in project_imports(rel):
                if imported.parts[0] == "stages":
                    wrong.append(f"{rel} imports the stage {imported}")
                elif imported.parts[1] in LAYERS and \
                        LAYERS.index(imported.parts[1]) > layer_index:
                    wrong.append(f"{rel} imports {imported} (a higher layer)")
    assert not wrong, wrong


def test_package_inits_hold_only_a_docstring() -> None:
    """So that importing one module runs no other code, and the dependency walk is whole."""
    for init in sorted((REPO / "forgetful").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), init
        assert isinstance(body[0].value, ast.Constant), init


def test_installed_distribution_ships_forgetful_not_stages() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(REPO), include=include)
    assert "forgetful.evaluate" in packages
    assert not any(p.split(".")[0] in ("stages", "tests", "benchmarks") for p in packages)
