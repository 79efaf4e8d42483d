"""Seeds: the default pipeline over N seeds as DVC experiments, then one report over them.

Not a DVC stage: a driver over the pipeline, like compare_methods. Run k (k = 0 … N−1,
N = seeds.runs in params.yaml) is `dvc exp run -S train_adapter.seed=<seed + k>
-S mix_tasks.seed=<seed + k> -S tracking.experiment=<experiment>`: one DVC experiment
(`dvc exp show`) and one MLflow run each. Only training and what follows it re-run; the
base model's evaluation comes from DVC's cache. After each run its per-item scores (base
and tuned predictions, trimmed to id and score) and its forgetting.json are copied to
reports/seeds/run-<k>/, with the fingerprint of the pipeline that made it
(forgetful/study/fingerprint.py); then reports/seeds.md and reports/seeds.json give per
benchmark the mean over seeds with its crossed seeds × items interval
(forgetful/report/seeds.py). A kept run is run again when the pipeline changed.
Run k = 0 is the default run itself and goes last, so the workspace ends as `dvc repro`
leaves it (its train stage is already up to date when `dvc repro` ran before).

Run:    python -m stages.run_seeds                 # N from params.yaml seeds.runs
        python -m stages.run_seeds --collect-only  # the report from reports/seeds/ as it is
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import read_json, read_jsonl, write_json, write_jsonl, write_text
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, build, load_params, require, section
from forgetful.report.forgetting import ReportParams
from forgetful.report.readme import section_body, write_between
from forgetful.report.seeds import aggregate, markdown
from forgetful.study import fingerprint

DEFAULT_OUT = Path("reports/seeds")
README_BLOCK = ("<!-- seeds: written by stages/run_seeds.py from reports/seeds.md -->",
                "<!-- /seeds -->")


@dataclass(frozen=True)
class SeedsParams:
    runs: int = 3  # runs of the default pipeline, seeds seed + 0 … seed + runs − 1
    experiment: str = "seeds"  # MLflow experiment of the runs

    def __post_init__(self) -> None:
        require(self.runs >= 2, "runs", "must be >= 2 (one run has no seed variance)")


KEEP = ("kind", "task", "id", "correct", "acc", "answer_format")


def trimmed(rows: list[dict]) -> list[dict]:
    """Per-item scores only (what the bootstrap needs), not prompts and answers."""
    return [{k: r[k] for k in KEEP if k in r} for r in rows
            if r["kind"] in ("task", "task_in_template", "general")]


def run_once(k: int, train_seed: int, mix_seed: int, experiment: str, out: Path,
             code: str) -> None:
    """Run k as a DVC experiment and keep its per-item scores; a run already kept with
    the same seeds and pipeline (an earlier, interrupted `make seeds`) is not run again."""
    folder = out / f"run-{k}"
    if (folder / "seeds.json").exists():
        kept = read_json(folder / "seeds.json")
        if (kept["train"], kept["mix"], kept.get("code")) == (train_seed, mix_seed, code):
            print(f"run_seeds: run {k} already in {folder}", flush=True)
            return
    args = ["dvc", "exp", "run", "-S", f"train_adapter.seed={train_seed}",
            "-S", f"mix_tasks.seed={mix_seed}", "-S", f"tracking.experiment={experiment}"]
    print(f"run_seeds: run {k}: {' '.join(args)}", flush=True)
    started = time.perf_counter()
    subprocess.run(args, check=True)
    keep(folder, train_seed, mix_seed, time.perf_counter() - started, code)
    print(f"run_seeds: run {k} done in {time.perf_counter() - started:.0f}s", flush=True)


def keep(folder: Path, train_seed: int, mix_seed: int, seconds: float | None,
         code: str) -> None:
    """The workspace's per-item scores and forgetting metrics, as the last run left them."""
    if folder.exists():
        shutil.rmtree(folder)
    write_jsonl(folder / "base.jsonl", trimmed(read_jsonl(Path("reports/eval/base/"
                                                               "predictions.jsonl"))))
    write_jsonl(folder / "tuned.jsonl", trimmed(read_jsonl(Path("reports/eval/tuned/"
                                                                "predictions.jsonl"))))
    write_json(folder / "forgetting.json", read_json(Path("reports/metrics/forgetting.json")))
    write_json(folder / "seeds.json", {"train": train_seed, "mix": mix_seed,
                                       "seconds": None if seconds is None else
                                       round(seconds, 1), "code": code})


def load_runs(out: Path, n: int) -> list[dict[str, Any]]:
    runs = []
    for k in range(n):
        folder = out / f"run-{k}"
        if not (folder / "seeds.json").exists():
            raise ConfigError(f"{folder} is missing: run `python -m stages.run_seeds` first "
                              f"(seeds.runs={n})")
        runs.append({"seeds": read_json(folder / "seeds.json"),
                     "forgetting": read_json(folder / "forgetting.json"),
                     "base": read_jsonl(folder / "base.jsonl"),
                     "tuned": read_jsonl(folder / "tuned.jsonl")})
    return runs


def main(a: argparse.Namespace) -> None:
    params = load_params(a.params)
    p = build(SeedsParams, section(params, "seeds"), "seeds")
    min_effect = build(ReportParams, section(params, "report"), "report").min_effect
    train_seed = section(params, "train_adapter")["seed"]
    mix_seed = section(params, "mix_tasks")["seed"]
    if not a.collect_only:
        code = fingerprint.pipeline(Path("."), str(a.params))
        original = a.params.read_text()
        try:
            for k in reversed(range(p.runs)):  # k = 0, the default run, last
                run_once(k, train_seed + k, mix_seed + k, p.experiment, a.out, code)
        finally:  # `dvc exp run -S` edits params.yaml; the last run's values are the defaults
            a.params.write_text(original)
    runs = load_runs(a.out, p.runs)
    rows = aggregate(runs, min_effect)
    write_json(a.out.with_suffix(".json"), {"runs": [r["seeds"] for r in runs], "rows": rows})
    text = markdown(rows, runs, min_effect)
    write_text(a.out.with_suffix(".md"), text)
    if a.out == DEFAULT_OUT:  # the README shows this one
        if not write_between("README.md", *README_BLOCK, section_body(text)):
            print(f"run_seeds: README.md has no {README_BLOCK[0]} block; not updated")
    print(f"run_seeds: {p.runs} runs -> {a.out.with_suffix('.md')}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect-only", action="store_true",
                        help="report from the runs already in --out")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder of the runs; the report is <out>.md and <out>.json")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a))


if __name__ == "__main__":
    cli()
