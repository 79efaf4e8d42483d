"""train_adapter on 2 CPU processes (torchrun, gloo; DDP, and FSDP with its sharded weights
gathered for the save) gives the adapter 1 process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forgetful.core.config import ConfigError
from forgetful.train.trainer import parse_params
from stages import format_data, gather_eval, mix_tasks, prepare_base
from tests.conftest import TINY_PARAMS, write_params


def train(root: Path, name: str, params: dict) -> dict:
    pfile = write_params(root / f"{name}.yaml", params)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.train_adapter", "--base", str(root / "base"),
         "--data", str(root / "mixed"), "--out", str(root / name), "--metrics",
         str(root / f"{name}.json"), "--curve", str(root / f"{name}.csv"), "--params",
         str(pfile), "--eval-sets", str(root / "eval"), "--probe",
         str(root / f"{name}-probe.csv")], cwd=Path(__file__).resolve().parents[1], env=env,
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((root / f"{name}.json").read_text())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_the_same_adapter_as_one(tmp_path: Path, tiny_model: Path,
                                                     strategy: str) -> None:
    from safetensors.torch import load_file

    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["train_adapter"].update(max_steps=6, batch_size=8)  # lora dropout is 0 here
    pfile = write_params(tmp_path / "params.yaml", params)
    prepare_base.main(tmp_path / "base", pfile)
    for task in params["format_data"]["tasks"]:
        format_data.main(task, tmp_path / "base", tmp_path / "formatted" / task,
                         tmp_path / f"{task}.json", pfile)
    gather_eval.main(tmp_path / "formatted", tmp_path / "eval", pfile)
    mix_tasks.main(tmp_path / "formatted", tmp_path / "base", tmp_path / "mixed",
                   tmp_path / "mix.json", pfile)

    one = train(tmp_path, "one", params)
    params["train_adapter"]["processes"] = 2  # 4 sequences per process, 8 per step in all
    params["train_adapter"]["strategy"] = strategy
    if strategy == "ddp":  # the probe runs on process 0 mid-training; it changes nothing
        params["train_adapter"].update(evaluate_every=3, probe={
            "general_items": 20, "task_items": 4, "max_new_tokens": 4})
    two = train(tmp_path, "two", params)

    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 6
    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # a whole adapter, not one process's shard
    assert all(a[k].shape == b[k].shape for k in a)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float(a[k].abs().max()) for k in a if "lora_B" in k)
    assert moved > 1e-3  # training changed the adapter ...
    print(f"1 vs 2 processes ({strategy}): max |adapter weight difference| {diff:.2e}, "
          f"largest lora_B entry {moved:.2e}, "
          f"train loss {one['train_loss']} vs {two['train_loss']}")
    assert diff < 1e-5, f"1 vs 2 processes differ by {diff}"  # ... and both agree
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    if strategy == "ddp":
        probe = (tmp_path / "two-probe.csv").read_text().splitlines()
        assert [row.split(",")[0] for row in probe[1:]] == ["0", "3", "6"]
    curve_one = (tmp_path / "one.csv").read_text().splitlines()
    curve_two = (tmp_path / "two.csv").read_text().splitlines()
    assert len(curve_one) == len(curve_two) == 7  # header + one point per step
    losses_one = [float(r.split(",")[1]) for r in curve_one[1:]]
    losses_two = [float(r.split(",")[1]) for r in curve_two[1:]]
    assert losses_two == pytest.approx(losses_one, rel=1e-3)  # the same batches, step by step


def test_batch_must_split_evenly_over_processes() -> None:
    data = dict(TINY_PARAMS["train_adapter"], processes=3)
    with pytest.raises(ConfigError, match=r"train_adapter.batch_size must be a multiple of "
                                          r"processes=3"):
        parse_params(data)
    with pytest.raises(ConfigError, match="train_adapter.strategy"):
        parse_params(dict(TINY_PARAMS["train_adapter"], strategy="zero3"))
