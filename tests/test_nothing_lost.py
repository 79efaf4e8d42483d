"""Nothing lost: a killed run resumes, identical runs give identical bytes, MLflow being
down changes nothing in the outputs, outputs round-trip through a DVC remote, and params
cannot point a stage outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from forgetful.core.config import ConfigError, load_params
from tests.conftest import TINY_PARAMS, dvc, tiny_repo, write_params

pytestmark = pytest.mark.slow

UNREACHABLE = "http://forgetful:s3cr3t-pass@127.0.0.1:9"  # port 9 refuses connections
TIMING = {"seconds", "train_seconds", "tokens_per_s", "peak_memory_mb", "peak_gpu_memory_mb",
          "wall_time_s", "processes", "resumed_from_step"}


def outs(repo: Path) -> dict[str, str]:
    """Every stage out in dvc.lock -> its md5: what DVC caches and compares."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o.get("md5", "") for stage in lock["stages"].values()
            for o in stage.get("outs", [])}


def untimed(path: Path) -> object:
    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in TIMING}
        return node
    return strip(json.loads(path.read_text()))


def test_killed_training_resumes_to_the_same_adapter(tmp_path: Path, tiny_model: Path) -> None:
    steps = dict(max_steps=300, checkpoint_every=30)
    killed = tiny_repo(tmp_path / "killed", tiny_model, **steps)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train_adapter"],
                            cwd=killed, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints/train_adapter/checkpoint-60/trainer_state.json"
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-training, as an OOM killer or a lost node would
    proc.wait()
    assert not (killed / "models/adapter").exists()  # nothing half-written for DVC to cache

    again = dvc(killed, "repro", "train_adapter")
    resumed = int(re.search(r"resuming from \S*checkpoint-(\d+)", again).group(1))
    assert 60 <= resumed < 300
    print(f"killed during training; resumed from step {resumed} of 300")
    straight = tiny_repo(tmp_path / "straight", tiny_model, **steps)
    dvc(straight, "repro", "train_adapter")

    for name in ("adapter_model.safetensors", "adapter_config.json", "run_info.json"):
        assert (killed / "models/adapter" / name).read_bytes() == \
            (straight / "models/adapter" / name).read_bytes(), name
    assert (killed / "reports/plots/train_curve.csv").read_text() == \
        (straight / "reports/plots/train_curve.csv").read_text()
    assert json.loads((killed / "reports/metrics/train.json").read_text())[
        "resumed_from_step"] == resumed
    assert not list((killed / "checkpoints/train_adapter").iterdir())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{killed / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1  # reattached, not duplicated
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    assert {m.step for m in history} == set(range(1, 301))
    assert runs[0].data.metrics["train.resumed_from_step"] == resumed


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny pipeline, run once with the default MLflow store (sqlite, reachable)."""
    repo = tiny_repo(tmp_path_factory.mktemp("up") / "repo", tiny_model)
    dvc(repo, "repro")
    return repo


def test_mlflow_down_changes_no_output_and_warns(tmp_path: Path, tiny_model: Path,
                                                up: Path) -> None:
    down = tiny_repo(tmp_path / "down", tiny_model)
    env = {"MLFLOW_TRACKING_URI": UNREACHABLE, "MLFLOW_TRACKING_TOKEN": "s3cr3t-token"}
    started = time.time()
    log = dvc(down, "repro", env=env)
    assert time.time() - started < 600  # no minutes of HTTP retries per call
    def data(repo: Path) -> dict[str, str]:  # metrics files carry timings: compared below
        return {p: md5 for p, md5 in outs(repo).items()
                if not (p.startswith("reports/") and p.endswith(".json"))}

    assert data(down) == data(up)  # models, data, predictions, plots: the same bytes
    for metrics in sorted((up / "reports").rglob("*.json")):
        rel = metrics.relative_to(up)
        assert untimed(down / rel) == untimed(metrics), rel
    for same in ("reports/plots/train_curve.csv", "reports/plots/forgetting.csv",
                 "reports/forgetting.md"):
        assert (down / same).read_text() == (up / same).read_text(), same
    # One warning per stage that tracks (train, merge, 2 x evaluate, drift, select_model,
    # report) ...
    warnings = re.findall(r"MLflow store (\S+) is unreachable", log)
    assert len(warnings) == 7
    assert set(warnings) == {"http://***@127.0.0.1:9"}  # ... with the credentials hidden
    for path in [*down.rglob("*")]:  # every output, lock and log; not the copied tests
        if path.is_file() and not {".git", "tests"} & set(path.relative_to(down).parts) \
                and path.stat().st_size < 5_000_000:
            data = path.read_bytes()
            assert b"s3cr3t" not in data, path
    assert "s3cr3t" not in log

    params = yaml.safe_load((down / "params.yaml").read_text())
    params["tracking"]["required"] = True
    write_params(down / "strict.yaml", params)
    done = subprocess.run(
        [sys.executable, "-m", "stages.train_adapter", "--base", "models/base", "--data",
         "data/mixed", "--out", str(tmp_path / "adapter"), "--metrics", str(tmp_path / "m.json"),
         "--curve", str(tmp_path / "c.csv"), "--params", "strict.yaml"],
        cwd=down, env={**os.environ, **env}, capture_output=True, text=True)
    assert done.returncode == 2
    assert "unreachable" in done.stderr and "tracking.required is true" in done.stderr
    assert "s3cr3t" not in done.stderr
    assert not (tmp_path / "adapter").exists()


def set_train(repo: Path, **values: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train_adapter"].update(values)
    write_params(repo / "params.yaml", params)


def test_a_diverged_run_is_never_cached(tmp_path: Path, up: Path) -> None:
    """A learning rate that makes training NaN: one error line, a non-zero exit, no adapter,
    nothing in DVC's run cache (a second try fails again instead of being restored); the
    sane rate then restores the cached adapter."""
    repo = tmp_path / "repo"
    shutil.copytree(up, repo)
    set_train(repo, learning_rate=1.0e30, warmup_steps=0)
    for _ in range(2):
        log = dvc(repo, "repro", ok=False)
        assert "error: training diverged at step " in log and "Traceback" not in log
        assert "ERROR: failed to reproduce 'train_adapter'" in log
        assert not (repo / "models/adapter").exists()
    assert "train_adapter" in dvc(repo, "status")
    set_train(repo, learning_rate=TINY_PARAMS["train_adapter"]["learning_rate"], warmup_steps=0)
    log = dvc(repo, "repro")
    assert "Stage 'train_adapter' is cached - skipping run, checking out outputs" in log
    assert (repo / "models/adapter/adapter_model.safetensors").read_bytes() == \
        (up / "models/adapter/adapter_model.safetensors").read_bytes()
    assert "Data and pipelines are up to date" in dvc(repo, "status")


def test_a_hand_edited_out_is_reported_then_restored(tmp_path: Path, up: Path) -> None:
    """`dvc status` names an out edited by hand; the next `dvc repro` puts back the bytes
    its stage made (from the run cache) and runs nothing below it."""
    repo = tmp_path / "repo"
    shutil.copytree(up, repo)
    mixed = repo / "data/mixed/train.jsonl"
    original = mixed.read_bytes()
    mixed.write_bytes(original + b'{"messages": []}\n')
    status = dvc(repo, "status")
    assert "mix_tasks:" in status and "modified:" in status and "data/mixed" in status
    log = dvc(repo, "repro")
    assert "Stage 'mix_tasks' is cached - skipping run, checking out outputs" in log
    assert "Running stage 'train_adapter'" not in log
    assert mixed.read_bytes() == original
    assert "Data and pipelines are up to date" in dvc(repo, "status")


def test_outputs_round_trip_through_the_dvc_remote(tmp_path: Path, up: Path) -> None:
    repo = tmp_path / "clone"
    shutil.copytree(up, repo)
    dvc(repo, "remote", "modify", "--local", "local", "url", str(tmp_path / "storage"))
    dvc(repo, "push")
    shutil.rmtree(repo / ".dvc" / "cache")
    # The cached outs (models, data, predictions); metrics, plots and checkpoints are
    # `cache: false`: git (or nothing) keeps them.
    cached = [p for p in outs(repo) if (repo / p).exists()
              and (p.startswith(("models/", "data/")) or p.endswith(".jsonl"))]
    for path in cached:
        target = repo / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert "models/adapter" in cached and "data/mixed" in cached
    dvc(repo, "pull")
    assert all((repo / p).exists() for p in cached)
    assert "Data and pipelines are up to date" in dvc(repo, "status")
    assert (repo / "models/adapter/adapter_model.safetensors").read_bytes() == \
        (up / "models/adapter/adapter_model.safetensors").read_bytes()


def test_params_paths_stay_inside_the_repository(tmp_path: Path) -> None:
    params = json.loads(json.dumps(TINY_PARAMS))
    params.pop("safety")
    params["evaluate"]["files"] = {"mine": {"format": "mc_jsonl", "path": "../elsewhere.jsonl"}}
    with pytest.raises(ConfigError, match=r"evaluate\.files\.mine\.path: \.\./elsewhere\.jsonl "
                                          r"is outside the repository.*allow_outside_paths"):
        load_params(write_params(tmp_path / "params.yaml", params))
    params["evaluate"]["files"] = {}
    params["format_data"]["tasks"]["mine"] = {"source": "file", "path": "/etc/passwd"}
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.mine\.path: /etc/passwd"):
        load_params(write_params(tmp_path / "params.yaml", params))
    params["format_data"]["tasks"]["mine"]["path"] = "data/raw/mine.jsonl"
    params["prepare_base"]["local_path"] = "models/../models/upstream"  # inside: fine
    assert load_params(write_params(tmp_path / "params.yaml", params))
    params["safety"] = {"allow_outside_paths": True}
    params["format_data"]["tasks"]["mine"]["path"] = "/srv/data/mine.jsonl"
    assert load_params(write_params(tmp_path / "params.yaml", params))
