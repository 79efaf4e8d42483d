"""MLflow tracking: one run per trained adapter, shared by train, merge, evaluate and report.

train_adapter creates the run and writes its id into the adapter's run_info.json; later
stages read it from their input's run_info and log into the same run. DVC metrics files
stay the record; MLflow mirrors them, so the `tracking:` params are deliberately not DVC
params (changing where runs are logged must not re-run the pipeline).

The store is the URI in $MLFLOW_TRACKING_URI, else `tracking.uri` in params.yaml, else
`sqlite:///<repo>/mlflow.db`, the file `mlflow ui` opens by default in the repo root.
`dvc exp run --temp/--queue` executes in <repo>/.dvc/tmp/exps/<name>/; the default store
is resolved to the repository above that folder so every experiment lands in one store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.config import build, require

log = logging.getLogger(__name__)
EXPERIMENT_TEMP = (".dvc", "tmp", "exps")


@dataclass(frozen=True)
class TrackingParams:
    uri: str = ""  # empty = sqlite:///<repo>/mlflow.db; $MLFLOW_TRACKING_URI wins over this
    experiment: str = "forgetful"  # MLflow experiment name
    enabled: bool = True  # false = log nothing to MLflow (DVC outputs are the same)

    def __post_init__(self) -> None:
        require(bool(self.experiment), "experiment", "must be a non-empty name")


def load(params: Mapping[str, Any]) -> TrackingParams:
    return build(TrackingParams, params.get("tracking") or {}, "tracking")


def repo_root(cwd: Path | None = None) -> Path:
    """The repository root, also from inside a `dvc exp run --temp` work folder."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - len(EXPERIMENT_TEMP) + 1):
        if parts[i : i + len(EXPERIMENT_TEMP)] == EXPERIMENT_TEMP:
            return Path(*parts[:i])
    return cwd


def tracking_uri(p: TrackingParams, cwd: Path | None = None) -> str:
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or p.uri
        or f"sqlite:///{repo_root(cwd) / 'mlflow.db'}"
    )


def client(p: TrackingParams) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(p))


def _experiment_id(c: Any, p: TrackingParams) -> str:
    found = c.get_experiment_by_name(p.experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if not (os.environ.get("MLFLOW_TRACKING_URI") or p.uri):
        # Keep artifacts beside the default store, not in whichever folder ran first.
        location = (repo_root() / "mlartifacts").as_uri()
    return c.create_experiment(p.experiment, artifact_location=location)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def start_run(p: TrackingParams, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, str]) -> str | None:
    """Create the pipeline's run; returns its id, or None when tracking is disabled."""
    if not p.enabled:
        return None
    c = client(p)
    run = c.create_run(_experiment_id(c, p), run_name=run_name, tags=dict(tags))
    for key, value in flatten(params).items():
        c.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def log_metrics(p: TrackingParams, run_id: str | None, metrics: Mapping[str, Any],
                step: int | None = None) -> None:
    if not (p.enabled and run_id):
        return
    c = client(p)
    for key, value in flatten(metrics).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            c.log_metric(run_id, key, float(value), step=step or 0)


def log_artifacts(p: TrackingParams, run_id: str | None, paths: list[Path],
                  artifact_path: str | None = None) -> None:
    if not (p.enabled and run_id):
        return
    c = client(p)
    for path in paths:
        if path.is_dir():
            c.log_artifacts(run_id, str(path), artifact_path)
        elif path.exists():
            c.log_artifact(run_id, str(path), artifact_path)


def finish(p: TrackingParams, run_id: str | None) -> None:
    if p.enabled and run_id:
        client(p).set_terminated(run_id)


def reopen(p: TrackingParams, run_id: str | None) -> str | None:
    """The run id to log into, if that run exists in the store; None (with a warning) if not."""
    if not (p.enabled and run_id):
        return None
    from mlflow.exceptions import MlflowException

    try:
        client(p).get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s is not in %s; this stage logs nothing to MLflow",
                    run_id, tracking_uri(p))
        return None
    return run_id


def runs_with(p: TrackingParams, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every run of the experiment that has all `keys` as metrics: name, id and those values
    (for plots across experiments). Empty when tracking is disabled."""
    if not p.enabled:
        return []
    c = client(p)
    found = c.get_experiment_by_name(p.experiment)
    if found is None:
        return []
    runs = c.search_runs([found.experiment_id], max_results=1000)
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name,
             **{k: r.data.metrics[k] for k in keys}}
            for r in runs if all(k in r.data.metrics for k in keys)]
