"""Stage merge_adapter: merge the adapter into a fresh copy of the base, and prove it.

Deps:   this module, models/base, models/adapter, data/mixed/val.jsonl (the probe prompts).
Params: merge_adapter.* (probe_examples, tolerance).
Outs:   <out>/ a merged model in transformers' format (safetensors + tokenizer) with
        run_info.json; metrics <metrics> (max |logit difference| adapter vs merged).
Run:    python -m stages.merge_adapter --base models/base --adapter models/adapter \
            --probe data/mixed/val.jsonl --out models/merged --metrics reports/metrics/merge.json

The stage fails, writing nothing, when the merged model's logits on the probe batch differ
from the adapter model's by more than the tolerance.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common import tracking
from stages.common.artifacts import Timer, atomic_dir, read_json, read_jsonl, run_info, write_json
from stages.common.cli import run_stage
from stages.common.config import DataError, build, load_params, require, section
from stages.common.methods import METHODS


@dataclass(frozen=True)
class MergeParams:
    probe_examples: int  # validation prompts used to compare logits
    tolerance: float  # largest |logit difference| accepted

    def __post_init__(self) -> None:
        require(self.probe_examples > 0, "probe_examples", "must be a positive integer")
        require(self.tolerance > 0, "tolerance", "must be > 0")


class MergeMismatch(RuntimeError):
    """The merged model does not reproduce the adapter model's logits."""


def probe_logits(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        logits = model(**batch).logits
    return logits.masked_fill(batch["attention_mask"][..., None] == 0, 0.0)


def main(base: Path, adapter: Path, probe: Path, out: Path, metrics_path: Path,
         params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = build(MergeParams, section(params, "merge_adapter"), "merge_adapter")
    tp = tracking.load(params)
    adapter_info = read_json(adapter / "run_info.json")
    if not METHODS[adapter_info["method"]].mergeable:
        raise DataError(f"{adapter}: method {adapter_info['method']!r} cannot be merged")
    prompts = [r["prompt"] + r["completion"] for r in read_jsonl(probe)[: p.probe_examples]]
    if not prompts:
        raise DataError(f"{probe} is empty; the merge check needs probe prompts "
                        "(raise mix_tasks.val_per_task)")
    timer = Timer()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    before = probe_logits(model, batch)
    merged = model.merge_and_unload().eval()
    after = probe_logits(merged, batch)
    diff = float((before - after).abs().max())
    metrics = {"max_abs_logit_diff": diff, "tolerance": p.tolerance, "probe_examples": len(prompts)}
    if not diff <= p.tolerance:
        raise MergeMismatch(f"merged logits differ from the adapter's by {diff:.3g} > tolerance "
                            f"{p.tolerance:g} (merge_adapter.tolerance); nothing was written")
    run_id = tracking.reopen(tp, adapter_info.get("mlflow_run_id"))
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "run_info.json", run_info(
            "merge_adapter", p, timer, base_model=adapter_info.get("base_model"),
            base_path=str(base), adapter_path=str(adapter), method=adapter_info["method"],
            mlflow_run_id=adapter_info.get("mlflow_run_id"), merge_check=metrics,
        ))
    write_json(metrics_path, metrics)
    tracking.log_metrics(tp, run_id, {"merge.max_abs_logit_diff": diff})
    print(f"merge_adapter: max |logit diff| {diff:.2e} <= {p.tolerance:g} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--adapter", "--probe", "--out", "--metrics"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.base, a.adapter, a.probe, a.out, a.metrics, a.params))


if __name__ == "__main__":
    cli()
