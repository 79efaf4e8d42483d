"""MLflow tracking: one run per trained adapter, shared by train, merge, evaluate and report.

train_adapter creates the run and tags it with the sha256 of the adapter's weights; later
stages find the run by that tag (`find_run`), so no run id is written into any DVC output
and the outputs are the same bytes whether MLflow is up or not. DVC metrics files
stay the record; MLflow mirrors them, so the `tracking:` params are deliberately not DVC
params (changing where runs are logged must not re-run the pipeline).

The store is the URI in $MLFLOW_TRACKING_URI, else `tracking.uri` in params.yaml, else
`sqlite:///<repo>/mlflow.db`, the file `mlflow ui` opens by default in the repo root.
A store that cannot be reached (a server that refuses connections, a dead sqlite path)
gives one warning per stage and no tracking; the stage's outputs are unchanged.
`tracking.required: true` makes it an error instead.
`dvc exp run --temp/--queue` executes in <repo>/.dvc/tmp/exps/<name>/; the default store
is resolved to the repository above that folder so every experiment lands in one store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetful.core.config import ConfigError, build, require

log = logging.getLogger(__name__)
EXPERIMENT_TEMP = (".dvc", "tmp", "exps")


@dataclass(frozen=True)
class TrackingParams:
    uri: str = ""  # empty = sqlite:///<repo>/mlflow.db; $MLFLOW_TRACKING_URI wins over this
    experiment: str = "forgetful"  # MLflow experiment name
    enabled: bool = True  # false = log nothing to MLflow (DVC outputs are the same)
    required: bool = False  # true = an unreachable store fails the stage instead of a warning
    register: str = ""  # registered model name: each run's adapter becomes a version of it
    # true = merge_adapter also logs the merged model (transformers' format) as a logged
    # model of the run: ~540 MB a run for the default model in fp32, so off by default
    # (the merged model is always in DVC: models/merged)
    log_merged: bool = False

    def __post_init__(self) -> None:
        require(bool(self.experiment), "experiment", "must be a non-empty name")


class TrackingUnavailable(ConfigError):
    """The store cannot be reached and tracking.required is true."""


ADAPTER_TAG = "forgetful.adapter_sha256"
# MLflow 3 keeps an experiment's kind as this tag; without it `mlflow ui` may open a new
# experiment in its GenAI view (traces, judges) instead of the training runs table.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in the UI
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # a logged model's registered versions (JSON)
_down: dict[str, str] = {}  # uri -> why it is unreachable, once per process
_probed: set[str] = set()  # uris that answered the probe (probed once, not per log call)


def redact(uri: str) -> str:
    """The URI without credentials (user:token@host -> ***@host), for messages."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def _unreachable(p: TrackingParams, why: str) -> None:
    uri = tracking_uri(p)
    if p.required:
        raise TrackingUnavailable(
            f"MLflow store {redact(uri)} is unreachable ({why}) and tracking.required is true; "
            "start the server, fix tracking.uri / MLFLOW_TRACKING_URI, or set required: false")
    if uri not in _down:
        log.warning("warning: MLflow store %s is unreachable (%s); this stage logs nothing to "
                    "MLflow, its outputs are the same (tracking.required: true fails instead)",
                    redact(uri), why)
    _down[uri] = why


def _probe(uri: str) -> str | None:
    """For an HTTP store: why it cannot be reached in 3 s, or None. Without this, MLflow's
    client retries a refused connection for minutes."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3).close()  # noqa: S310
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as err:
        return type(err).__name__ + (f": {err.reason}" if hasattr(err, "reason") else "")
    return None


def available(p: TrackingParams) -> bool:
    """Tracking is on and the store answers (probed once per process)."""
    if not p.enabled:
        return False
    uri = tracking_uri(p)
    if uri in _down:
        return False
    if uri not in _probed:
        why = _probe(uri)
        if why:
            _unreachable(p, why)
            return False
        _probed.add(uri)
    return True


# Where the exceptions of a store that cannot be reached or written come from.
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3", "alembic")


def store_error(err: BaseException) -> bool:
    """A connection or storage failure (the store is down, refuses, is read-only, is
    corrupt), as opposed to a bug: an OSError, or an exception of the store's client
    libraries."""
    module = type(err).__module__.split(".")[0]
    return isinstance(err, OSError) or module in STORE_MODULES


# MLflow's own loggers that print, at ERROR with a traceback, the same store failure it then
# raises (a read-only or corrupt mlflow.db: ~90 lines), and its INFO lines on creating
# tables. guarded() turns that exception into our one warning, so these are duplicates.
STORE_LOGGERS = ("mlflow.store.db.utils", "alembic")


@contextlib.contextmanager
def _quiet_store_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in STORE_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a tracking call only if the store is available; a store failure inside it (the
    store went away mid-run) becomes the same one warning, or TrackingUnavailable if
    required; any other exception is a bug and propagates."""

    @functools.wraps(fn)
    def call(p: TrackingParams, *args: Any, **kwargs: Any) -> Any:
        if not available(p):
            return None
        try:
            with _quiet_store_loggers():
                return fn(p, *args, **kwargs)
        except TrackingUnavailable:
            raise
        except Exception as err:
            if not store_error(err):
                raise  # a bug, ours or MLflow's: surface it
            _unreachable(p, f"{type(err).__name__}: {' '.join(redact(str(err)).split())[:200]}")
            return None

    return call


LOCK_RETRIES = 8  # waits of 0.5, 1, 2, 4, 8, 8, 8, 8 s: about 40 s in all


def locked(err: BaseException) -> bool:
    """SQLite's "database is locked": another process (a second `dvc queue` worker) holds
    the write lock; it passes, so the call is retried, not counted as a dead store."""
    return "database is locked" in str(err)


class RetryingClient:
    """MlflowClient whose every call is retried while the SQLite store is locked. Each
    call is one transaction (create_run, log_batch, set_tag...), so a retry repeats only
    the one that did not happen."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(LOCK_RETRIES + 1):
                try:
                    return attr(*args, **kwargs)
                except Exception as err:
                    if not locked(err) or attempt == LOCK_RETRIES:
                        raise
                    time.sleep(0.5 * 2 ** min(attempt, 4))
            raise AssertionError("unreachable")

        return call


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

    return RetryingClient(MlflowClient(tracking_uri=tracking_uri(p)))


def _experiment_id(c: Any, p: TrackingParams) -> str:
    found = c.get_experiment_by_name(p.experiment)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND[0]) is None:  # made before the kind was set
            c.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return found.experiment_id
    location = None
    if not (os.environ.get("MLFLOW_TRACKING_URI") or p.uri):
        # Keep artifacts beside the default store, not in whichever folder ran first.
        location = (repo_root() / "mlartifacts").as_uri()
    return c.create_experiment(p.experiment, artifact_location=location,
                               tags=dict([EXPERIMENT_KIND]))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@guarded
def start_run(p: TrackingParams, run_name: str, params: Mapping[str, Any],
              tags: Mapping[str, str]) -> str | None:
    """Create the pipeline's run; returns its id, or None when tracking is disabled."""
    c = client(p)
    from mlflow.entities import Param

    run = c.create_run(_experiment_id(c, p), run_name=run_name, tags=dict(tags))
    logged = [Param(key, str(value)[:6000]) for key, value in flatten(params).items()]
    for start in range(0, len(logged), 100):  # MLflow takes at most 100 params per batch
        c.log_batch(run.info.run_id, params=logged[start : start + 100])
    return run.info.run_id


@guarded
def log_metrics(p: TrackingParams, run_id: str | None, metrics: Mapping[str, Any],
                step: int | None = None, model_id: str | None = None) -> None:
    """Numeric leaves of `metrics` as dotted names; with `model_id`, linked to that logged
    model too (its page lists them)."""
    if not run_id:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step or 0, model_id=model_id)
             for key, value in flatten(metrics).items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)]
    c = client(p)
    for start in range(0, len(batch), 1000):  # one transaction per 1000 (MLflow's limit)
        c.log_batch(run_id, metrics=batch[start : start + 1000])


@guarded
def log_artifacts(p: TrackingParams, run_id: str | None, paths: list[Path],
                  artifact_path: str | None = None) -> None:
    if not run_id:
        return
    c = client(p)
    for path in paths:
        if path.is_dir():
            c.log_artifacts(run_id, str(path), artifact_path)
        elif path.exists():
            c.log_artifact(run_id, str(path), artifact_path)


@guarded
def finish(p: TrackingParams, run_id: str | None) -> None:
    if run_id:
        client(p).set_terminated(run_id)


@guarded
def fail(p: TrackingParams, run_id: str | None, reason: str) -> None:
    """End the run as FAILED, with the reason as its description (the UI shows it)."""
    if run_id:
        c = client(p)
        c.set_tag(run_id, DESCRIPTION_TAG, f"**Failed:** {reason}")
        c.set_terminated(run_id, status="FAILED")


@guarded
def tag_adapter(p: TrackingParams, run_id: str | None, sha256: str) -> None:
    """Mark the run as the one that trained the adapter with these weights."""
    if run_id:
        client(p).set_tag(run_id, ADAPTER_TAG, sha256)


@guarded
def find_run(p: TrackingParams, sha256: str | None) -> str | None:
    """The newest run of the experiment that trained the adapter with these weights, or
    None (with a warning) if the store has none."""
    if not sha256:
        return None
    c = client(p)
    found = c.get_experiment_by_name(p.experiment)
    runs = c.search_runs([found.experiment_id], f"tags.`{ADAPTER_TAG}` = '{sha256}'",
                         order_by=["attribute.start_time DESC"], max_results=1) if found else []
    if not runs:
        log.warning("warning: no MLflow run in %s trained the adapter %s…; this stage logs "
                    "nothing to MLflow", redact(tracking_uri(p)), sha256[:12])
        return None
    return runs[0].info.run_id


@guarded
def reopen(p: TrackingParams, run_id: str | None) -> str | None:
    """The run id, if that run exists in the store; None (with a warning) if not."""
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        client(p).get_run(run_id)
    except MlflowException:
        log.warning("MLflow run %s is not in %s; this stage logs nothing to MLflow",
                    run_id, redact(tracking_uri(p)))
        return None
    return run_id


@guarded
def runs_with(p: TrackingParams, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every run of the experiment that has all `keys` as metrics: name, id and those values
    (for plots across experiments). Empty when tracking is disabled."""
    c = client(p)
    found = c.get_experiment_by_name(p.experiment)
    if found is None:
        return []
    runs = c.search_runs([found.experiment_id], max_results=1000)
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name,
             **{k: r.data.metrics[k] for k in keys}}
            for r in runs if all(k in r.data.metrics for k in keys)]


@guarded
def log_datasets(p: TrackingParams, run_id: str | None, datasets: list[dict[str, Any]]) -> None:
    """Each dataset (name, digest, source, context: training / evaluation, profile) as an
    MLflow dataset input of the run: the runs table's Datasets column. The digest is DVC's
    md5 of the folder, so a dataset in MLflow is the same version `dvc` names."""
    if not run_id or not datasets:
        return

    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = [DatasetInput(Dataset(d["name"], d["digest"], "local", json.dumps(
                  {"uri": d["source"]}), profile=json.dumps(d.get("profile", {}))),
              [InputTag("mlflow.data.context", d["context"])]) for d in datasets]
    client(p).log_inputs(run_id, datasets=inputs)


@guarded
def describe(p: TrackingParams, run_id: str | None, text: str) -> None:
    """The run's description (shown on its page and in the runs table)."""
    if run_id:
        client(p).set_tag(run_id, DESCRIPTION_TAG, text)


@guarded
def log_model(p: TrackingParams, run_id: str | None, name: str, folder: Path,
              params: Mapping[str, Any] | None = None) -> str | None:
    """The folder (an adapter in PEFT's format, or a merged model in transformers') as an
    MLflow logged model of the run; returns its model id. Load it back with
    `mlflow.artifacts.download_artifacts("models:/<model id>")` and PEFT or transformers."""
    if not run_id:
        return None
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    c = client(p)
    run = c.get_run(run_id)
    model = c.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                  params={k: str(v)[:6000] for k, v in
                                          flatten(params or {}).items()},
                                  model_type="peft-adapter" if name == "adapter" else
                                  "transformers")
    c.log_model_artifacts(model.model_id, str(folder))
    c.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    # a run output too: the run page's "Logged models" lists a run's outputs, not every
    # model whose source_run_id is the run
    c.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    return model.model_id


@guarded
def find_model(p: TrackingParams, run_id: str | None, name: str) -> str | None:
    """The id of the run's logged model of that name (the newest), or None."""
    if not run_id:
        return None
    c = client(p)
    run = c.get_run(run_id)
    found = c.search_logged_models([run.info.experiment_id],
                                   filter_string=f"source_run_id = '{run_id}' AND "
                                                 f"name = '{name}'",
                                   order_by=[{"field_name": "creation_time",
                                              "ascending": False}], max_results=1)
    return found[0].model_id if found else None


@guarded
def register(p: TrackingParams, run_id: str | None, model_id: str | None,
             passed: bool) -> int | None:
    """With `tracking.register` set, the logged model becomes a new version of that
    registered model, aliased `candidate`, and `champion` only when the forgetting gate
    passed (report.max_forgetting); returns the version."""
    if not (p.register and run_id and model_id):
        return None
    from mlflow.exceptions import MlflowException

    c = client(p)
    try:
        c.create_registered_model(p.register)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # the artifact location, not models:/<id>: MLflow resolves that through the global
    # tracking URI, which is not necessarily this client's
    source = c.get_logged_model(model_id).artifact_location
    version = c.create_model_version(p.register, source, run_id=run_id,
                                     model_id=model_id,
                                     tags={"forgetting_gate": "passed" if passed else "failed"})
    # the logged model's page lists its versions from this tag (mlflow.register_model sets
    # it; the client call above does not)
    tags = c.get_logged_model(model_id).tags
    listed = json.loads(tags.get(MODEL_VERSIONS_TAG, "[]"))
    c.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(
        [*listed, {"name": p.register, "version": version.version}])})
    c.set_registered_model_alias(p.register, "candidate", version.version)
    if passed:
        c.set_registered_model_alias(p.register, "champion", version.version)
    return version.version
