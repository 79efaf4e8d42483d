"""Stage gather_eval: the evaluated tasks' test items, in the one folder evaluation reads.

Deps:   this module, forgetful.data.eval_sets, data/formatted.
Params: format_data.tasks (which tasks are evaluated: `evaluate: false` marks train-only
        tasks, such as replay data).
Outs:   <out>/tasks.json (evaluated task -> metric and label words) and, per evaluated
        task, <out>/<task>/test.jsonl and, for built-in tasks, test_in_template.jsonl:
        byte copies of format_data's splits.
Run:    python -m stages.gather_eval --formatted data/formatted --out data/eval

Why a stage: evaluate@base (minutes on a real benchmark set) and the training probe
depend on this folder, not on all of data/formatted and every task's params. Adding a
train-only task, or changing a task's training split, re-runs this stage in a second; its
output is then the same bytes, and DVC leaves the base model's scores cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forgetful.core.artifacts import atomic_dir
from forgetful.core.cli import run_stage
from forgetful.core.config import load_params, section
from forgetful.data.eval_sets import gather
from forgetful.data.sources import parse_task


def main(formatted: Path, out: Path, params_file: Path = Path("params.yaml")) -> None:
    tasks = section(load_params(params_file), "format_data").get("tasks") or {}
    evaluated = [t for t, block in tasks.items() if parse_task(t, block).spec.evaluate]
    with atomic_dir(out) as tmp:
        manifest = gather(formatted, evaluated, tmp)
    print(f"gather_eval: {len(manifest)} evaluated tasks ({', '.join(manifest) or 'none'}) "
          f"-> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatted", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.formatted, a.out, a.params))


if __name__ == "__main__":
    cli()
