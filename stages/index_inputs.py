"""Stage index_inputs: fingerprint the local files each stage reads, one JSON per reader.

Deps:   this module, forgetful.data.inputs, data/raw (where params.yaml's files live).
Params: format_data.tasks, evaluate (the paths in files, text_files, lm_eval_include; any
        other evaluate change re-runs it in a second, writing the same bytes).
Outs:   <out>/format/<task>.json for every task (its files: a `file` task's path, a local
        `hf_dataset` folder; [] for built-in and self_distill tasks) and
        <out>/evaluate.json (benchmark, text and lm-eval task files): per file its params
        key, path, size and sha256.
Run:    python -m stages.index_inputs --out data/inputs

Why a stage: format_data@<task> depends on <out>/format/<task>.json and evaluate (and
mix_tasks' contamination check) on <out>/evaluate.json instead of all of data/raw. Adding
or editing a file re-runs this stage in a second; only the readers whose JSON changed run
again. Files outside data/raw are fingerprinted too, but DVC notices their edits only
when something else re-runs this stage: keep data under data/raw.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forgetful.core.artifacts import atomic_dir, write_json
from forgetful.core.cli import run_stage
from forgetful.core.config import load_params
from forgetful.data.inputs import index


def main(out: Path, params_file: Path = Path("params.yaml")) -> None:
    readers = index(load_params(params_file), Path.cwd())
    with atomic_dir(out) as tmp:
        for reader, files in readers.items():
            (tmp / reader).parent.mkdir(parents=True, exist_ok=True)
            write_json(tmp / f"{reader}.json", files)  # no timestamps: same files, same bytes
    counted = sum(len(f) for f in readers.values())
    print(f"index_inputs: {counted} local files for {len(readers)} readers -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.out, a.params))


if __name__ == "__main__":
    cli()
