"""Where MLflow runs go: one store for `dvc repro` and for `dvc exp run --temp/--queue`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forgetful.core import tracking
from forgetful.core.config import ConfigError


def test_experiment_temp_folders_resolve_to_the_repository(tmp_path: Path) -> None:
    temp = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpk2j3" / "sub"
    assert tracking.repo_root(temp) == tmp_path / "repo"
    assert tracking.repo_root(tmp_path / "repo") == tmp_path / "repo"


def test_default_uri_is_sqlite_in_the_repository_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    temp = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpk2j3"
    p = tracking.TrackingParams()
    assert tracking.tracking_uri(p, temp) == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"


def test_environment_wins_over_params(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    p = tracking.TrackingParams(uri="sqlite:///elsewhere.db")
    assert tracking.tracking_uri(p) == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(p) == "sqlite:///elsewhere.db"


def test_tracking_section_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"tracking\.enabled must be true or false"):
        tracking.load({"tracking": {"enabled": "yes"}})


def test_disabled_tracking_logs_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = tracking.TrackingParams(enabled=False)
    assert tracking.start_run(p, "r", {"a": 1}, {}) is None
    tracking.log_metrics(p, None, {"x": 1.0})
    assert not (tmp_path / "mlflow.db").exists()


def test_run_is_reopened_and_nested_metrics_flattened(tmp_path: Path) -> None:
    p = tracking.TrackingParams(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="t")
    run_id = tracking.start_run(p, "r", {"train": {"lr": 0.1}}, {"git_commit": "abc"})
    assert tracking.reopen(p, run_id) == run_id
    tracking.log_metrics(p, run_id, {"eval": {"tasks": {"s": {"score": 0.5, "metric": "em"}}}})
    run = tracking.client(p).get_run(run_id)
    assert run.data.params == {"train.lr": "0.1"}
    assert run.data.metrics == {"eval.tasks.s.score": 0.5}
    assert run.data.tags["git_commit"] == "abc"
    assert tracking.reopen(p, "0" * 32) is None


def test_only_store_failures_count_as_unreachable(tmp_path: Path, monkeypatch, caplog) -> None:
    """A refused connection or an unreadable store: one warning, nothing logged, the stage
    goes on. Any other exception in tracking code is a bug and surfaces."""
    import logging

    p = tracking.TrackingParams(uri=f"sqlite:///{tmp_path / 'bug.db'}", experiment="t")

    def bug(_: object) -> None:
        raise KeyError("a bug in our tracking code")

    monkeypatch.setattr(tracking, "client", bug)
    with pytest.raises(KeyError, match="a bug"):
        tracking.log_metrics(p, "0" * 32, {"x": 1.0})

    def refused(_: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    down = tracking.TrackingParams(uri=f"sqlite:///{tmp_path / 'down.db'}", experiment="t")
    monkeypatch.setattr(tracking, "client", refused)
    with caplog.at_level(logging.WARNING):
        assert tracking.log_metrics(down, "0" * 32, {"x": 1.0}) is None
        assert tracking.log_metrics(down, "0" * 32, {"y": 1.0}) is None
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "ConnectionRefusedError" in warnings[0].getMessage()
    monkeypatch.undo()

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not an sqlite database" * 100)
    broken = tracking.TrackingParams(uri=f"sqlite:///{corrupt}", experiment="t")
    assert tracking.start_run(broken, "r", {}, {}) is None  # warned, not raised


def test_a_read_only_store_prints_our_one_line_not_mlflows_tracebacks(tmp_path: Path) -> None:
    """A store that cannot be written (here an existing mlflow.db opened read-only: root
    ignores file modes) makes MLflow log ~90 lines of its own traceback before raising;
    the stage's stderr is only our warning."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("t")
    code = (
        "from forgetful.core import tracking\n"
        f"p = tracking.TrackingParams(uri='sqlite:///file:{db}?mode=ro&uri=true', "
        "experiment='t')\n"
        "assert tracking.start_run(p, 'r', {'a': 1}, {}) is None\n"
        "assert tracking.log_metrics(p, None, {'x': 1.0}) is None\n"
        "print('went on')\n")
    # cwd: MLflow makes the artifact root of this URI (./file:/tmp/...) relative to it;
    # the project comes from PYTHONPATH so nothing lands in the checkout.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "went on"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "is unreachable" in lines[0] and "readonly database" in lines[0]


def test_a_locked_sqlite_store_is_waited_for_not_given_up(monkeypatch) -> None:
    """Two `dvc queue` workers write one mlflow.db: SQLite answers "database is locked"
    while the other holds the write lock; the call is retried, each as one transaction."""
    import sqlite3

    waits = []
    monkeypatch.setattr(tracking.time, "sleep", waits.append)

    class Inner:
        calls = 0

        def log_batch(self, run_id: str, metrics: list) -> str:
            Inner.calls += 1
            if Inner.calls <= 2:
                raise sqlite3.OperationalError("database is locked")
            return f"{run_id}: {len(metrics)}"

        def get_run(self, run_id: str) -> None:
            raise sqlite3.OperationalError("no such table: runs")

    client = tracking.RetryingClient(Inner())
    assert client.log_batch("r", metrics=[1, 2]) == "r: 2"
    assert Inner.calls == 3 and waits == [0.5, 1.0]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):  # not a lock: raised
        client.get_run("r")
    assert len(waits) == 2


def test_champion_stays_on_the_last_version_that_passed_the_gate(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the experiment's artifacts go beside the store
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    tp = tracking.TrackingParams(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="x",
                                 register="mine")
    run_id = tracking.start_run(tp, "run", {"a": 1}, {})
    first = tracking.register(tp, run_id, tracking.log_model(tp, run_id, "adapter", adapter),
                              passed=True)
    second = tracking.register(tp, run_id, tracking.log_model(tp, run_id, "adapter", adapter),
                               passed=False)  # the registered model exists: a new version
    assert (int(first), int(second)) == (1, 2)
    aliases = tracking.client(tp).get_registered_model("mine").aliases
    assert aliases == {"candidate": 2, "champion": 1}
    assert tracking.register(tracking.TrackingParams(uri=tp.uri, experiment="x"), run_id,
                             "m-any", passed=True) is None  # registration is opt-in
