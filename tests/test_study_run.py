"""`make study` on the tiny model: queued DVC experiments, two workers, one MLflow store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import dvc, tiny_repo, write_params

pytestmark = pytest.mark.slow

STUDY = {"seeds": 2, "jobs": 2, "experiment": "study", "max_steps": 4,
         "methods": ["lora", "full"], "ranks": [2], "narrow": {"reading": 1.0},
         "replay_ratios": [0.0, 0.25],
         "replay_task": {"source": "self_distill", "n_train": 20, "n_val": 4, "n_test": 0,
                         "max_new_tokens": 8},
         "learning_rates": "reports/study/learning_rates.json", "aa_seeds": 0,
         "strengths": [], "presets": {}}


def study(repo: Path, *args: str, ok: bool = True) -> str:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "stages.run_study", *args], cwd=repo,
                          capture_output=True, text=True, timeout=1500,
                          env={**__import__("os").environ, **env})
    assert (done.returncode == 0) == ok, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def test_study_two_workers_one_store_then_cached(tmp_path: Path, tiny_model: Path) -> None:
    repo = tiny_repo(tmp_path / "repo", tiny_model)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"] = STUDY
    write_params(repo / "params.yaml", params)
    subprocess.run(["git", "commit", "-qam", "study params"], cwd=repo, check=True,
                   env={**__import__("os").environ, "GIT_AUTHOR_NAME": "t",
                        "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})
    dvc(repo, "repro")
    study(repo, "--lr-sweep")
    rates = json.loads((repo / "reports/study/learning_rates.json").read_text())
    assert set(rates["chosen"]) == {"lora", "full"}
    assert 6 <= len(rates["trials"]) <= 10  # three each, and up to two past an edge
    first = study(repo)
    # 5 configurations (lora, full, rank 2, replay 0, replay 0.25) x 2 seeds
    assert "10 points, 0 already done" in first
    text = (repo / "reports/study.md").read_text()
    for claim in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        assert claim in text
    assert (repo / "reports/study/frontier.png").stat().st_size > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    # one per point, named after it: nothing lost to two workers writing one SQLite file
    assert len(runs) == 10
    points = json.loads((repo / "reports/study.json").read_text())["points"]
    assert {r.info.run_name for r in runs} == {
        run["name"] for p in points.values() for run in p["runs"]}
    for run in runs:  # every stage of every point logged its metrics
        for key in ("train.train_loss", "eval.tuned.general_mean_acc",
                    "forgetting.mean_gain"):
            assert key in run.data.metrics, (run.info.run_name, key)

    again = study(repo)  # every point finished: nothing queued, only redrawn
    assert "10 points, 10 already done" in again and "queued" not in again
    redrawn = study(repo, "--collect-only")
    from_dvc = json.loads((repo / "reports/study.json").read_text())
    assert from_dvc["claims"]
    assert "run_study:" in redrawn
    # the same tables from the MLflow store alone (runs' metrics and logged predictions)
    study(repo, "--collect-only", "--from-mlflow")
    from_mlflow = json.loads((repo / "reports/study.json").read_text())
    assert from_mlflow["claims"] == from_dvc["claims"]
    for config, point in from_dvc["points"].items():
        for measure in ("learning", "general", "untrained", "elsewhere"):
            assert from_mlflow["points"][config][measure] == point[measure], (config, measure)
        assert from_mlflow["points"][config]["info"] == point["info"], config

    # a run logged before the report stage logged per-item scores: the MLflow redraw names
    # it; --backfill-mlflow copies its scores from its DVC experiment, then the redraw works
    old = runs[0]
    shutil.rmtree(Path(urlparse(old.info.artifact_uri).path) / "eval")
    refused = study(repo, "--collect-only", "--from-mlflow", ok=False)
    assert old.info.run_name in refused and "--backfill-mlflow" in refused
    filled = study(repo, "--backfill-mlflow")
    assert "into 1 MLflow runs" in filled and old.info.run_name in filled
    assert "into 0 MLflow runs" in study(repo, "--backfill-mlflow")  # nothing left to copy
    study(repo, "--collect-only", "--from-mlflow")
    assert json.loads((repo / "reports/study.json").read_text())["points"] == \
        from_mlflow["points"]

    # the committed per-item file alone: the same report with every experiment gone, and
    # a new `make study` counts its points (this code's names) as done
    items = repo / "reports/study/items.json.gz"
    assert 0 < items.stat().st_size < 200_000
    dvc(repo, "exp", "remove", "-A")
    study(repo, "--from-items")
    from_items = json.loads((repo / "reports/study.json").read_text())
    assert from_items["claims"] == from_dvc["claims"]
    assert from_items["points"] == from_mlflow["points"]  # the last draw wrote the file
    again = study(repo)
    assert "10 points, 10 already done" in again and "queued" not in again
