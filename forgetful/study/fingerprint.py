"""What made a point: a hash of the code, data and params behind its per-item scores.

A study point's scores come from the evaluate stages and every stage upstream of them
(prepare_base … merge_adapter), as dvc.yaml declares them. `pipeline` hashes what those
stages read that no stage writes — their code (stages/*.py and the forgetful/ modules
dvc.yaml lists), local data (data/raw) and dvc.yaml itself — and the values of the params
they declare, as params.yaml holds them before a point's own overrides (those are in the
point's name already). Two points with the same overrides and the same fingerprint ran the
same pipeline; an edit to any of it gives a new fingerprint, so the points made before are
run again (or, when only redrawn, named as made by other code). What the study reads but
no score depends on (the report and drift stages, the study's own statistics) is left out:
redrawing a study with better statistics keeps its points.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from forgetful.core.config import load_params

SCORED_BY = ("evaluate@base", "evaluate@tuned")  # the stages whose outs the study reads


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [path] if path.exists() else []


def sources(root: Path = Path(".")) -> tuple[list[str], list[str]]:
    """The files and params behind the scored stages: (paths relative to `root`, dotted
    params keys), from DVC's own reading of dvc.yaml."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        by_name = {stage.name: stage for stage in graph.nodes}
        missing = [s for s in SCORED_BY if s not in by_name]
        if missing:
            raise ValueError(f"dvc.yaml has no stage {missing[0]}: the study reads the "
                             f"outputs of {', '.join(SCORED_BY)}")
        stages = set()
        for name in SCORED_BY:
            stages |= {by_name[name], *nx.descendants(graph, by_name[name])}
        outs = [Path(str(o.def_path)) for stage in graph.nodes for o in stage.outs]
        files, keys = set(), set()
        for stage in stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    keys.update(dep.params or [])
                    continue
                path = Path(str(dep.def_path))
                # an out, inside one, or holding one (data/formatted): written by a stage
                if not any(path == o or o in path.parents or path in o.parents
                           for o in outs):
                    files.add(str(path))
    return sorted(files | {"dvc.yaml"}), sorted(keys)


def pipeline(root: Path = Path("."), params_file: str = "params.yaml") -> str:
    """The fingerprint: sha256 over the source files' bytes and the params' values."""
    files, keys = sources(root)
    params = load_params(root / params_file)
    digest = hashlib.sha256()
    for name in files:
        for file in _files(root / name):
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    digest.update(json.dumps({k: _lookup(params, k) for k in keys}, sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()
