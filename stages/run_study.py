"""The learning–forgetting study: sweeps of method, LoRA rank and replay over seeds.

Not a DVC stage: a driver over the pipeline, like run_seeds. Every point (a configuration
at one seed, forgetful/study/plan.py) is one DVC experiment run on DVC's queue
(forgetful/study/queue.py) and one MLflow run in the experiment `study.experiment`. A
point's name carries a hash of its overrides and of the pipeline it runs
(forgetful/study/fingerprint.py), so re-running the study skips the points that finished
with this code, and runs again those made by other code. Then every point's per-item
scores are read back (forgetful/study/collect.py) and the report is drawn
(forgetful/study/draw.py): reports/study.md, reports/study.json, reports/study/frontier.png
and reports/study/items.json.gz, the per-item scores of every point, committed, from which
`--from-items` redraws the report with no DVC cache and no training. A point found in that
file with this code's name counts as done.

Run:    python -m stages.run_study --lr-sweep        # once: the learning rates, as data
        python -m stages.run_study [--preset quick]  # queue, run, collect, report
        python -m stages.run_study --collect-only    # the report from the DVC experiments
        python -m stages.run_study --collect-only --from-mlflow  # ... from MLflow alone
        python -m stages.run_study --from-items      # ... from reports/study/items.json.gz
        python -m stages.run_study --backfill-mlflow  # older runs' per-item scores, from DVC
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import read_json, write_json
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, build, load_params, section
from forgetful.core.tracking import load as load_tracking
from forgetful.report.forgetting import ReportParams
from forgetful.report.study import Run
from forgetful.study import fingerprint
from forgetful.study.collect import backfill_mlflow, from_dvc, from_mlflow, read_items, require_all
from forgetful.study.draw import Where, draw
from forgetful.study.plan import learning_rates, lr_sweep, points, study_params
from forgetful.study.queue import experiments, longest_first, run_points, stale

DEFAULT_OUT = Path("reports/study")


def trial(params: dict[str, Any], method: str, lr: float, steps: int, work: Path) -> dict:
    """Train one method at one rate on the default mixture; its losses and seconds."""
    import yaml

    from stages import train_adapter

    run = json.loads(json.dumps(params))
    run["train_adapter"].update(method=method, learning_rate=lr, max_steps=steps,
                                evaluate_every=0)
    run["tracking"]["enabled"] = False
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
    started = time.perf_counter()
    train_adapter.main(Path("models/base"), Path("data/mixed"), work / "adapter",
                       work / "train.json", work / "curve.csv", work / "params.yaml")
    metrics = read_json(work / "train.json")
    print(f"run_study: lr sweep {method} {lr:.0e}: eval loss {metrics['eval_loss']}",
          flush=True)
    return {"method": method, "learning_rate": lr, "eval_loss": metrics["eval_loss"],
            "train_loss": metrics["train_loss"],
            "seconds": round(time.perf_counter() - started, 1)}


def gather(a: argparse.Namespace, todo: list, kept: dict[str, Run], jobs: int, out: Path
           ) -> tuple[list[Run], int, int, list[str]]:
    """The runs of every point: from the per-item file where it holds the point (this
    code's name), else from its DVC experiment, running first what neither has."""
    have = experiments()
    pending = [] if a.collect_only else \
        [pt for pt in todo if pt.name not in have and pt.name not in kept]
    print(f"run_study: {len(todo)} points, {len(todo) - len(pending)} already done",
          flush=True)
    restarts = 0
    if pending:
        timed = [x for x in (out.with_suffix(".json"), DEFAULT_OUT.with_suffix(".json"))
                 if x.exists()]
        restarts = run_points(longest_first(pending, timed[0]) if timed else pending, jobs)
        have = experiments()
    missing = [pt for pt in todo if pt.name not in kept]
    require_all(missing, have, "finished DVC experiment (nor a line in the per-item file)",
                "run `python -m stages.run_study` without --collect-only")
    fresh = {r.info["name"]: r for r in from_dvc(missing, have)}
    runs = [kept.get(pt.name) or fresh[pt.name] for pt in todo]
    return runs, len(pending), restarts, stale(todo, [*have, *kept])


def main(a: argparse.Namespace) -> None:
    suffix = "" if a.preset == "default" else f"-{a.preset}"  # never over the default's
    out = a.out or Path(f"{DEFAULT_OUT}{suffix}")
    where = Where(out, a.figure or DEFAULT_OUT / f"frontier{suffix}.png",
                  Path("README.md") if out == Path(f"{DEFAULT_OUT}{suffix}") else None)
    params = load_params(a.params)
    p = study_params(params, a.preset)
    if a.lr_sweep:
        work = Path(".dvc/tmp/lr_sweep")
        lr_sweep(p, lambda method, lr, steps: trial(params, method, lr, steps, work))
        return
    min_effect = build(ReportParams, section(params, "report"), "report").min_effect
    code = fingerprint.pipeline(Path("."), str(a.params))
    plan = points(p, params, learning_rates(p), code)
    tp = dataclasses.replace(load_tracking(params), experiment=p.experiment)  # the study's
    if a.backfill_mlflow:
        filled = backfill_mlflow(plan.points, experiments(), tp)
        print(f"run_study: per-item scores copied from DVC into {len(filled)} MLflow runs"
              + "".join(f"\n  {name}" for name in filled))
        return
    started = time.perf_counter()
    pending, restarts, old = 0, 0, []
    if a.from_items:  # exactly the runs the file holds, whatever code made them
        runs = read_items(where.items)
    elif a.from_mlflow:  # the MLflow store alone: every point's run and its artifacts
        runs = from_mlflow(plan.points, tp)
    else:
        kept = {r.info["name"]: r for r in read_items(where.items)} \
            if where.items.exists() else {}
        runs, pending, restarts, old = gather(a, plan.points, kept, p.jobs, out)
    if not runs:
        raise ConfigError("no points to report")
    # Each invocation's wall time, kept: a later one that only redraws does not hide the
    # time the points took when they ran.
    log_path = out / "invocations.json"
    log = read_json(log_path) if log_path.exists() else []
    log.append({"preset": a.preset, "points": len(plan.points), "ran": pending,
                "collect_only": a.collect_only or a.from_items or a.from_mlflow,
                "date": time.strftime("%Y-%m-%d %H:%M"),
                "seconds": round(time.perf_counter() - started, 1),
                "worker_restarts": restarts})
    write_json(log_path, log)
    for c in draw(p, plan, runs, a.preset, log, where, code, old, min_effect):
        print(f"run_study: {c['claim']}: {c['verdict']}")
    print(f"run_study: {len(runs)} points -> {out.with_suffix('.md')}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="default, or one of study.presets")
    parser.add_argument("--lr-sweep", action="store_true",
                        help="pick each method's learning rate (writes study.learning_rates)")
    parser.add_argument("--collect-only", action="store_true",
                        help="report from the finished experiments, no training")
    parser.add_argument("--from-mlflow", action="store_true",
                        help="read the points back from their MLflow runs (metrics and "
                             "artifacts) instead of their DVC experiments")
    parser.add_argument("--from-items", action="store_true",
                        help="redraw the report from the per-item scores committed beside "
                             "it (<out>/items.json.gz): no DVC, no MLflow, no training")
    parser.add_argument("--backfill-mlflow", action="store_true",
                        help="copy per-item scores from the DVC experiments into the MLflow "
                             "runs that lack them (points logged before the report stage "
                             "logged them), so --from-mlflow can redraw every point")
    parser.add_argument("--out", type=Path, default=None,
                        help="the report is <out>.md and <out>.json, its invocations "
                             "<out>/invocations.json and per-item scores <out>/items.json.gz "
                             "(default reports/study, for another preset reports/study-<preset>)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="default reports/study/frontier.png (frontier-<preset>.png)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a))


if __name__ == "__main__":
    cli()
