"""GPU checks (`make gpu-check`): QLoRA with bitsandbytes on CUDA, bf16 compute, merge.

Skipped where there is no CUDA device (CI, laptops). On a GPU machine they take well under
5 minutes: a tiny model, a few steps each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method,block", [
    ("qlora", {"r": 8, "alpha": 16, "compute_dtype": "bfloat16"}),
    ("lora", {"r": 8, "alpha": 16}),
])
def test_train_and_merge_on_cuda(tmp_path: Path, method: str, block: dict) -> None:
    from stages import format_data, merge_adapter, mix_tasks, prepare_base, train_adapter
    from tests.conftest import TINY_PARAMS, build_tiny_model, write_params

    model = build_tiny_model(tmp_path / "tiny", hidden=128)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(model)
    params["tracking"]["enabled"] = False
    params["train_adapter"].update(method=method, max_steps=10, learning_rate=1e-2)
    params["train_adapter"][method] = block
    params["merge_adapter"]["tolerance"] = {"float32": 1e-3}
    pfile = write_params(tmp_path / "params.yaml", params)
    prepare_base.main(tmp_path / "base", pfile)
    for task in params["format_data"]["tasks"]:
        format_data.main(task, tmp_path / "base", tmp_path / "f" / task, tmp_path / "m.json",
                         pfile)
    mix_tasks.main(tmp_path / "f", tmp_path / "base", tmp_path / "mixed", tmp_path / "mix.json",
                   pfile)
    train_adapter.main(tmp_path / "base", tmp_path / "mixed", tmp_path / "adapter",
                       tmp_path / "train.json", tmp_path / "curve.csv", pfile)
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert metrics["steps"] == 10 and metrics["tokens_per_s"] > 0
    device_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < metrics["peak_gpu_memory_mb"] <= device_mb  # the device's peak, not the host's
    merge_adapter.main(tmp_path / "base", tmp_path / "adapter", tmp_path / "mixed" / "val.jsonl",
                       tmp_path / "merged", tmp_path / "merge.json", pfile)
    merge = json.loads((tmp_path / "merge.json").read_text())
    assert merge["merged"] and merge["max_abs_logit_diff"] <= 1e-3
