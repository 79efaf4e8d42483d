"""The evaluation folder (data/eval): what evaluate and the training probe score.

gather_eval writes it from format_data's folders: per evaluated task its test split and
(built-in tasks) in-template split, byte for byte, and tasks.json (task -> metric, label
words). Nothing else goes in, so a change that does not touch what is scored (a new
train-only task, a larger training split) leaves the folder, and the base model's cached
scores, as they were.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from forgetful.core.artifacts import read_json, read_jsonl, write_json
from forgetful.core.config import DataError
from forgetful.data.formatting import IN_TEMPLATE
from forgetful.data.metrics import LIKELIHOOD_METRICS

TASKS_FILE = "tasks.json"


def label_words(task_folder: Path) -> list[str]:
    """Every label word a classification task uses: the completions of all its formatted
    splits (train, val and test), sorted."""
    return sorted({r["completion"] for split in sorted(task_folder.glob("*.jsonl"))
                   for r in read_jsonl(split)})


def gather(formatted: Path, evaluated: list[str], out: Path) -> dict[str, dict]:
    """Copy each evaluated task's test splits from `formatted` into `out` (an empty
    folder) and write tasks.json; returns its contents."""
    manifest = {}
    for task in evaluated:
        folder = formatted / task
        test = folder / "test.jsonl"
        if not test.exists():
            raise DataError(f"{test} not found: format_data has not run for task '{task}' "
                            "(run `dvc repro`)")
        if not read_jsonl(test):
            raise DataError(f"{test} is empty; evaluate needs test examples (raise "
                            f"format_data.tasks.{task}.n_test, or set evaluate: false)")
        (out / task).mkdir()
        for split in ("test", IN_TEMPLATE):
            if (folder / f"{split}.jsonl").exists():
                shutil.copyfile(folder / f"{split}.jsonl", out / task / f"{split}.jsonl")
        metric = read_json(folder / "run_info.json")["metric"]
        manifest[task] = {"metric": metric, "labels": label_words(folder)
                          if metric in LIKELIHOOD_METRICS else []}
    write_json(out / TASKS_FILE, manifest)  # no timestamps: same inputs, same bytes
    return manifest


@dataclass
class EvalSets:
    tests: dict[str, list[dict]] = field(default_factory=dict)  # task -> test records
    in_template: dict[str, list[dict]] = field(default_factory=dict)  # task -> records
    labels: dict[str, list[str]] = field(default_factory=dict)  # classification tasks


def read_eval_sets(folder: Path, cap: int = 0) -> EvalSets:
    """The evaluated tasks in gather_eval's folder, each split cut to its first `cap`
    records (0 = all)."""
    manifest_path = folder / TASKS_FILE
    if not manifest_path.exists():
        raise DataError(f"{manifest_path} not found: gather_eval writes it (run `dvc repro`)")
    out = EvalSets()
    for task, info in read_json(manifest_path).items():
        records = read_jsonl(folder / task / "test.jsonl")
        out.tests[task] = records[:cap] if cap else records
        seen_path = folder / task / f"{IN_TEMPLATE}.jsonl"
        seen = read_jsonl(seen_path) if seen_path.exists() else []
        if seen:
            out.in_template[task] = seen[:cap] if cap else seen
        if info["labels"]:
            out.labels[task] = info["labels"]
    return out
