"""Where the study's points are read back from: their DVC experiments, their MLflow runs, or
the committed per-item file.

Each source gives the same `Run` per point (forgetful.report.study): the base and tuned
per-item scores (reports/eval/{base,tuned}/predictions.jsonl), the forgetting report's
kinds (which benchmark was trained), and the point's size and seconds. A point is a
forgetful.study.plan.Point.
- `from_dvc`: each point's DVC experiment (the commit `dvc exp show` names), read with
  dvc.api from the DVC cache;
- `from_mlflow`: each point's MLflow run (run name = point name, in study.experiment):
  its metrics, and the artifacts the report stage logs (report/forgetting.json and
  eval/{base,tuned}/predictions.jsonl). Redraws the study from the MLflow store alone.
- `write_items` / `read_items`: every point's per-item scores in one small gzipped JSON
  file committed beside the report (reports/study/items.json.gz), so the study can be
  redrawn with other statistics with no DVC cache and no training;
- `backfill_mlflow`: gives the runs of points logged before the report stage logged the
  per-item scores those scores, from the point's DVC experiment (checked to be the same run).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.artifacts import write_bytes
from forgetful.core.config import ConfigError, DataError
from forgetful.report.study import Run, make_run
from forgetful.study.plan import Point

PREDICTIONS = {"base": "reports/eval/base/predictions.jsonl",
               "tuned": "reports/eval/tuned/predictions.jsonl"}
FORGETTING = "reports/metrics/forgetting.json"
# the seconds a point spent in its own stages: training, the tuned model's evaluation, drift
SECONDS = {"reports/metrics/train.json": ("train_seconds", "train.train_seconds"),
           "reports/eval/tuned/scores.json": ("seconds", "eval.tuned.seconds"),
           "reports/eval/drift/scores.json": ("seconds", "drift.seconds")}


def learning_rate(point: Point) -> float:
    return float(dict(s.split("=", 1) for s in point.sets)["train_adapter.learning_rate"])


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def require_all(points: list[Point], have: dict[str, Any], what: str, fix: str) -> None:
    missing = [p.name for p in points if p.name not in have]
    if missing:
        raise ConfigError(f"{len(missing)} of {len(points)} points have no {what} (first: "
                          f"{missing[0]}); {fix}")


def from_dvc(points: list[Point], revs: dict[str, str]) -> list[Run]:
    """Every point's per-item scores and metrics, read from its DVC experiment (`revs`:
    experiment name -> commit)."""
    import dvc.api
    from dvc.exceptions import PathMissingError

    require_all(points, revs, "finished DVC experiment",
                "run `python -m stages.run_study` without --collect-only")
    runs = []
    for point in points:
        rev = revs[point.name]

        def read(path: str, rev: str = rev) -> str:
            return dvc.api.read(path, rev=rev)

        train = json.loads(read("reports/metrics/train.json"))
        seconds = 0.0
        for path, (key, _) in SECONDS.items():  # a stage restored from the run cache
            try:  # counts what it took when it ran; a skipped stage (no drift) has none
                seconds += float(json.loads(read(path)).get(key) or 0)
            except (PathMissingError, FileNotFoundError):  # not written by this pipeline
                continue
        info = {"trainable_params": train["trainable_params"],
                "train_seconds": train["train_seconds"], "learning_rate": learning_rate(point),
                "stage_seconds": round(seconds, 1), "rev": rev, "name": point.name,
                "code": point.code}
        runs.append(make_run(point.config, point.sweep, point.seed,
                             jsonl(read(PREDICTIONS["base"])), jsonl(read(PREDICTIONS["tuned"])),
                             json.loads(read(FORGETTING)), info))
    return runs


def finished_runs(points: list[Point], tp: tracking.TrackingParams) -> tuple[Any, dict[str, Any]]:
    """The MLflow client and each point's newest finished run of its name in tp.experiment;
    a point without one is an error."""
    c = tracking.client(tp)
    experiment = c.get_experiment_by_name(tp.experiment)
    if experiment is None:
        raise ConfigError(f"{tracking.redact(tracking.tracking_uri(tp))} has no MLflow "
                          f"experiment {tp.experiment!r} (study.experiment): no point was "
                          "logged there")
    found: dict[str, Any] = {}
    for run in c.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                             order_by=["attributes.start_time DESC"], max_results=50000):
        found.setdefault(run.info.run_name, run)
    require_all(points, found, f"finished MLflow run in experiment {tp.experiment!r}",
                "run `python -m stages.run_study` first")
    return c, found


def from_mlflow(points: list[Point], tp: tracking.TrackingParams) -> list[Run]:
    """Every point's per-item scores and metrics from its MLflow run (the newest finished
    run of that name in tp.experiment); a run without the report's artifacts is an error
    that names it."""
    derived = [pt.name for pt in points if pt.after]
    if derived:
        raise ConfigError(
            f"{len(derived)} points reuse another point's training (strength points, first: "
            f"{derived[0]}): their stages log to the MLflow run that trained the adapter "
            "(found by its hash), so the MLflow store does not hold them apart; redraw from "
            "the DVC experiments (--collect-only) or the per-item file (--from-items)")
    c, found = finished_runs(points, tp)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for point in points:
            run = found[point.name]
            files = {}
            for key, path in (("base", "eval/base/predictions.jsonl"),
                              ("tuned", "eval/tuned/predictions.jsonl"),
                              ("forgetting", "report/forgetting.json")):
                try:  # a folder each: MLflow puts a file artifact at <dst>/<its name>
                    files[key] = Path(c.download_artifacts(run.info.run_id, path,
                                                           f"{tmp}/{run.info.run_id}/{key}"))
                except Exception as err:  # noqa: BLE001 - MLflow's error for a missing file
                    raise ConfigError(
                        f"MLflow run {run.info.run_id} ({point.name}) has no artifact {path} "
                        f"({type(err).__name__}): logged before the report stage logged "
                        "predictions? `python -m stages.run_study --backfill-mlflow` copies "
                        "them from its DVC experiment, or redraw from DVC (without "
                        "--from-mlflow)") from err
            m = run.data.metrics
            info = {"trainable_params": int(m["train.trainable_params"]),
                    "train_seconds": m["train.train_seconds"],
                    "learning_rate": learning_rate(point),
                    "stage_seconds": round(sum(m.get(k, 0.0) for _, k in SECONDS.values()), 1),
                    "rev": run.info.run_id, "name": point.name, "code": point.code}
            runs.append(make_run(point.config, point.sweep, point.seed,
                                 jsonl(files["base"].read_text()),
                                 jsonl(files["tuned"].read_text()),
                                 json.loads(files["forgetting"].read_text()), info))
    return runs


def backfill_mlflow(points: list[Point], revs: dict[str, str], tp: tracking.TrackingParams
                    ) -> list[str]:
    """Log eval/{base,tuned}/predictions.jsonl into every point's MLflow run that lacks them
    (a run logged before the report stage logged them), read from the point's DVC
    experiment (`revs`: name -> commit). The run must be that experiment's: its
    report/forgetting.json artifact must equal the experiment's forgetting metrics, else an
    error names the point. Returns the names of the points given their scores."""
    import dvc.api

    require_all(points, revs, "finished DVC experiment to copy the scores from",
                "run `python -m stages.run_study` without --collect-only")
    c, found = finished_runs(points, tp)
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for point in points:
            run_id = found[point.name].info.run_id
            if all(c.list_artifacts(run_id, f"eval/{key}") for key in PREDICTIONS):
                continue
            rev = revs[point.name]
            logged = Path(c.download_artifacts(run_id, "report/forgetting.json",
                                               f"{tmp}/{point.name}/check"))
            if json.loads(logged.read_text()) != json.loads(dvc.api.read(FORGETTING, rev=rev)):
                raise ConfigError(
                    f"MLflow run {run_id} ({point.name}) is not the run of DVC experiment "
                    f"{rev[:7]}: their forgetting reports differ; not copying its scores "
                    "(re-run the point: `dvc exp remove` it, then `python -m stages.run_study`)")
            for key, path in PREDICTIONS.items():
                file = Path(tmp, point.name, key, "predictions.jsonl")
                file.parent.mkdir(parents=True)
                file.write_text(dvc.api.read(path, rev=rev))
                c.log_artifact(run_id, str(file), f"eval/{key}")
            done.append(point.name)
    return done


ITEMS_FORMAT = "forgetful study items 1"


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def write_items(path: Path, runs: list[Run]) -> None:
    """Every run's per-item base and tuned scores, item ids written once per benchmark,
    gzipped with no timestamp (the same runs give the same bytes)."""
    ids: dict[str, list[str]] = {}
    points = []
    for run in runs:
        entry: dict[str, Any] = {"name": run.info.get("name"), "config": run.config,
                                 "sweep": run.sweep, "seed": run.seed, "kinds": run.kinds,
                                 "info": run.info, "base": {}, "tuned": {}}
        for side in ("base", "tuned"):
            for bench, scores in getattr(run, side).items():
                order = ids.setdefault(bench, sorted(scores))
                if sorted(scores) != order:
                    raise DataError(f"{path}: point {entry['name']} scored other {bench} items "
                                    f"than the first point ({len(scores)} vs {len(order)}): "
                                    "every point must score the same test items")
                entry[side][bench] = [_number(scores[i]) for i in order]
        points.append(entry)
    body = json.dumps({"format": ITEMS_FORMAT, "items": ids, "points": points},
                      separators=(",", ":"), sort_keys=True).encode()
    write_bytes(path, gzip.compress(body, mtime=0))


def read_items(path: Path) -> list[Run]:
    """The runs `write_items` kept, as `Run`s (info["code"]: the pipeline they ran)."""
    if not path.exists():
        raise ConfigError(f"{path} not found: it is written by `python -m stages.run_study` "
                          "once the points have run")
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a gzipped JSON file of per-item scores ({err}); "
                        "restore it (`git checkout -- " + str(path) + "`) or re-run the "
                        "study") from err
    if data.get("format") != ITEMS_FORMAT:
        raise DataError(f"{path}: format {data.get('format')!r}, expected {ITEMS_FORMAT!r}")
    ids = data["items"]
    return [Run(p["config"], p["sweep"], p["seed"],
                *({b: dict(zip(ids[b], v, strict=True)) for b, v in p[side].items()}
                  for side in ("base", "tuned")), p["kinds"], p["info"])
            for p in data["points"]]
