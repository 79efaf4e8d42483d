"""The whole `dvc repro` on the tiny model in a temporary copy of the repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS, copy_repo, dvc, write_params

pytestmark = pytest.mark.slow


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(repo: Path, dotted: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node[key]
    node[last] = value
    write_params(repo / "params.yaml", params)


def test_dvc_repro_end_to_end_and_reruns_only_what_changed(tmp_path: Path,
                                                            tiny_model: Path) -> None:
    repo = copy_repo(tmp_path / "repo")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["tracking"]["uri"] = ""  # the default store: sqlite in the repository root
    write_params(repo / "params.yaml", params)

    first = dvc(repo, "repro")
    assert ran(first) == {"index_inputs", "prepare_base", "format_data@sentiment",
                          "format_data@reading", "gather_eval", "mix_tasks", "train_adapter",
                          "merge_adapter", "evaluate@base", "evaluate@tuned", "measure_drift",
                          "select_model", "report"}
    assert "| sentiment | trained task |" in (repo / "reports/forgetting.md").read_text()
    for noise in ("gemm_4bit_forward", "is_gradient_checkpointing", "FutureWarning"):
        assert noise not in first  # quieted where it comes from (forgetful/core/cli.py)
    metrics = json.loads(dvc(repo, "metrics", "show", "--json"))
    files = next(iter(metrics.values()))["data"]
    assert "tasks" in files["reports/eval/base/scores.json"]["data"]
    assert "tasks" in files["reports/eval/tuned/scores.json"]["data"]

    assert "Data and pipelines are up to date" in dvc(repo, "repro")
    # the digest MLflow's dataset inputs carry is DVC's own md5 of the folder
    from forgetful.core.artifacts import dvc_md5

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage, path in (("mix_tasks", "data/mixed"), ("gather_eval", "data/eval")):
        (out,) = [o for o in lock["stages"][stage]["outs"] if o["path"] == path]
        assert dvc_md5(repo / path) == out["md5"]

    # Each stage depends on its own files (index_inputs' fingerprints), not on all of
    # data/raw: a file no stage reads re-runs only the index.
    (repo / "data/raw/notes.txt").write_text("read by no stage\n")
    assert ran(dvc(repo, "repro")) == {"index_inputs"}
    # A benchmark added to evaluate.files: it is checked for contamination (mix_tasks,
    # whose mixture keeps its bytes, so nothing trains again) and scored on both models.
    (repo / "data/raw/mine.jsonl").write_text("".join(json.dumps(
        {"question": f"Which of these is a colour, number {i}?",
         "choices": ["green", "table", "river"], "answer": 0}) + "\n" for i in range(6)))
    set_param(repo, "evaluate.files", {"mine": {"format": "mc_jsonl",
                                                "path": "data/raw/mine.jsonl"}})
    assert ran(dvc(repo, "repro")) == {"index_inputs", "mix_tasks", "evaluate@base",
                                       "evaluate@tuned", "select_model", "report"}
    assert "mine" in json.loads((repo / "reports/eval/tuned/scores.json").read_text())["general"]

    set_param(repo, "evaluate.max_new_tokens", 6)  # (index_inputs reads evaluate's paths)
    assert ran(dvc(repo, "repro")) == {"index_inputs", "evaluate@base", "evaluate@tuned",
                                       "select_model", "report"}
    # the remedy's budget: a new choice among the same candidates, nothing trained or
    # evaluated again
    set_param(repo, "remedy.budget", 0.5)
    assert ran(dvc(repo, "repro")) == {"select_model", "report"}
    assert "## Remedy" in (repo / "reports/forgetting.md").read_text()

    adapter_a = (repo / "models/adapter/adapter_model.safetensors").read_bytes()
    set_param(repo, "train_adapter.learning_rate", 1.0e-3)
    assert ran(dvc(repo, "repro")) == {"train_adapter", "merge_adapter", "evaluate@tuned",
                                       "measure_drift", "select_model", "report"}
    # Back to the first learning rate: DVC's run cache restores the adapter (and what
    # follows from it) instead of training again, byte for byte.
    set_param(repo, "train_adapter.learning_rate", 5.0e-3)
    back = dvc(repo, "repro")
    assert "Stage 'train_adapter' is cached - skipping run" in back
    assert "train_adapter" not in ran(back)
    assert (repo / "models/adapter/adapter_model.safetensors").read_bytes() == adapter_a

    set_param(repo, "mix_tasks.weights.reading", 0.5)  # a weight: mix onward, no formatting
    assert ran(dvc(repo, "repro")) == {"mix_tasks", "train_adapter", "merge_adapter",
                                       "evaluate@tuned", "measure_drift", "select_model",
                                       "report"}

    # A train-only task (the base model's own answers as replay data, never evaluated): it
    # is formatted and mixed in, the tuned model re-scored; what the base is scored on is
    # the same bytes, so its evaluation stays cached (gather_eval re-runs, same output).
    set_param(repo, "format_data.tasks.replay", {"source": "self_distill", "n_train": 30,
                                                 "n_val": 4, "n_test": 0, "max_new_tokens": 12})
    set_param(repo, "mix_tasks.replay", {"task": "replay", "ratio": 0.25})
    added = dvc(repo, "repro")
    assert ran(added) == {"index_inputs", "format_data@replay", "gather_eval", "mix_tasks",
                          "train_adapter", "merge_adapter", "evaluate@tuned", "measure_drift",
                          "select_model", "report"}
    assert "evaluate@base" not in ran(added)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 4  # one per trained adapter
    assert {r.data.params["train_adapter.learning_rate"] for r in runs} == {"0.005", "0.001"}
    latest = max(runs, key=lambda r: r.info.start_time)
    # replay takes 16 of the same 64; reading gets a third of the other 48
    assert latest.data.metrics["mix.tasks.replay.examples"] == 16
    assert latest.data.metrics["mix.tasks.reading.examples"] == 16
    assert all("eval.tuned.tasks.sentiment.score" in r.data.metrics for r in runs)
