"""Stage merge_adapter: merge the adapter into a fresh copy of the base, and prove it.

Deps:   this module, forgetful.train (merging, methods), models/base, models/adapter, the probe
        prompts (data/mixed/val.jsonl).
Params: merge_adapter.* (probe_examples, tolerance by dtype, qlora_base, strength: the
        share α of the trained change merged, WiSE-FT's interpolation toward the base).
Outs:   <out>/ the tuned model in transformers' format (safetensors + tokenizer) with
        run_info.json; metrics <metrics> (max |logit difference| adapter vs merged); with
        tracking.log_merged, the merged model as an MLflow logged model of the run.
Run:    python -m stages.merge_adapter --base models/base --adapter models/adapter \
            --probe data/mixed/val.jsonl --out models/merged --metrics reports/metrics/merge.json

How a method is merged (merge, dequantize, keep, copy) is its `merge` entry in
forgetful/train/methods.py, carried out by forgetful/train/merging.py; methods that add
inputs rather than weight deltas (prompt, prefix, p-tuning, LLaMA-Adapter) are not merged:
the out holds the adapter with `merged: false` in its run_info, and evaluate loads base +
adapter. Every merge is checked on a probe batch: the merged model's logits must match the
adapter model's within the tolerance for the base's dtype, or the stage fails writing
nothing.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from forgetful.core import tracking
from forgetful.core.artifacts import (
    Timer,
    atomic_dir,
    read_json,
    run_info,
    weights_sha256,
    write_json,
)
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, build, load_params, section
from forgetful.train.merging import MERGES, MergeParams, probe_batch, tolerance_for
from forgetful.train.methods import METHODS


def main(base: Path, adapter: Path, probe: Path, out: Path, metrics_path: Path,
         params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = build(MergeParams, section(params, "merge_adapter"), "merge_adapter")
    tp = tracking.load(params)
    info = read_json(adapter / "run_info.json")
    if p.strength != 1 and not METHODS[info["method"]].mergeable:
        raise ConfigError(f"merge_adapter.strength is {p.strength:g}, but {info['method']} adds "
                          "trained inputs (virtual tokens, prefixes or adaption prompts), not a "
                          "weight change: there is nothing to scale; set strength: 1")
    tolerance = tolerance_for(p, read_json(base / "run_info.json").get("dtype", "float32"))
    timer = Timer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = probe_batch(tokenizer, probe, p.probe_examples)
    ctx = {"base": base, "adapter": adapter, "batch": batch, "tolerance": tolerance,
           "info": info, "p": p}
    merged, metrics = MERGES[METHODS[info["method"]].merge](ctx)
    metrics |= {"tolerance": tolerance, "probe_examples": len(batch["input_ids"])}
    with atomic_dir(out) as tmp:
        if merged is None:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copy2(adapter / name, tmp / name)
        else:
            merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "run_info.json", run_info(
            "merge_adapter", p, base_model=info.get("base_model"), base_path=str(base),
            adapter_path=str(adapter), method=info["method"], merged=metrics["merged"],
            reason=metrics.get("reason"), adapter_sha256=weights_sha256(adapter),
            merge_check=metrics))
    write_json(metrics_path, metrics | {"seconds": timer.seconds})
    run_id = tracking.find_run(tp, weights_sha256(adapter))
    tracking.log_metrics(tp, run_id, {"merge": metrics})
    if metrics["merged"] and tp.log_merged:  # evaluate@tuned links its scores to it
        tracking.log_model(tp, run_id, "merged", out,
                           params={"method": info["method"],
                                   "base_model": info.get("base_model") or {}})
    if metrics["merged"]:
        print(f"merge_adapter: {info['method']}: max |logit diff| "
              f"{metrics['max_abs_logit_diff']:.2e} <= {tolerance:g} -> {out}")
    else:
        print(f"merge_adapter: not merged: {metrics['reason']}. {out} holds the adapter; "
              "evaluate uses it on the base model")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--adapter", "--probe", "--out", "--metrics"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.base, a.adapter, a.probe, a.out, a.metrics, a.params))


if __name__ == "__main__":
    cli()
