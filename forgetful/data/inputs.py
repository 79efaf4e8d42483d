"""Fingerprints of the local files a stage reads, so each stage depends on its own files.

DVC cannot give one `format_data@<task>` instance a dep that only some tasks have (a
`file` task's path; a built-in task has none), so every instance used to depend on all of
data/raw: adding any file re-formatted every task. The stage index_inputs reads data/raw
once and writes one small JSON per reader instead: `format/<task>.json` (that task's
files, empty for built-in tasks) and `evaluate.json` (evaluate.files, text_files,
lm_eval_include). Each stage depends on its own JSON, which changes exactly when one of
its files (or their paths) does; the stage then checks, before reading, that the files
still have the fingerprints DVC saw (`verify`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgetful.core.artifacts import file_sha256, read_json
from forgetful.core.config import DataError, user_paths

FORMAT_DIR = "format"


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def fingerprint(key: str, value: str, root: Path) -> list[dict[str, Any]]:
    """One entry per file under the path `value` (a file, or a folder's files), named by the
    params key that gave it; a path that does not exist is an error naming that key."""
    path = root / value
    if not path.exists():
        raise DataError(f"{key}: {value} not found (relative to {root}); fix the path in "
                        "params.yaml or put the file there")
    return [{"key": key, "path": f.relative_to(root).as_posix() if f.is_relative_to(root)
             else str(f), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in _files(path)]


def index(params: dict[str, Any], root: Path) -> dict[str, list[dict[str, Any]]]:
    """Reader -> the fingerprints of the files it reads: `format/<task>` for every task
    (built-in ones get an empty list) and `evaluate`."""
    tasks = (params.get("format_data") or {}).get("tasks") or {}
    readers: dict[str, list[dict[str, Any]]] = {f"{FORMAT_DIR}/{t}": [] for t in tasks}
    readers["evaluate"] = []
    for key, value in user_paths(params):
        parts = key.split(".")
        if parts[0] == "format_data":
            readers[f"{FORMAT_DIR}/{parts[2]}"] += fingerprint(key, value, root)
        elif parts[0] == "evaluate":
            readers["evaluate"] += fingerprint(key, value, root)
    return readers


def verify(index_file: Path, root: Path) -> None:
    """Fail when a file changed after index_inputs fingerprinted it (DVC would cache this
    stage's output under the old fingerprint)."""
    for entry in read_json(index_file):
        path = root / entry["path"]
        if not path.exists() or file_sha256(path) != entry["sha256"]:
            raise DataError(f"{entry['path']} ({entry['key']}) changed after index_inputs "
                            f"fingerprinted it in {index_file}; run `dvc repro` again")
