"""Stage merge_adapter: merge the adapter into a fresh copy of the base, and prove it.

Deps:   this module, stages/common/methods.py, models/base, models/adapter, the probe
        prompts (data/mixed/val.jsonl).
Params: merge_adapter.* (probe_examples, tolerance by dtype, qlora_base).
Outs:   <out>/ the tuned model in transformers' format (safetensors + tokenizer) with
        run_info.json; metrics <metrics> (max |logit difference| adapter vs merged).
Run:    python -m stages.merge_adapter --base models/base --adapter models/adapter \
            --probe data/mixed/val.jsonl --out models/merged --metrics reports/metrics/merge.json

How a method is merged is the method's `merge` entry in stages/common/methods.py:
- merge: the LoRA family and IA3 are merged into W with PEFT's merge_and_unload.
- dequantize: QLoRA is merged into the dequantized 4-bit base (the weights it was trained
  against) by default, or into the original-precision base (`qlora_base: original`).
- keep: prompt tuning, p-tuning, prefix tuning and LLaMA-Adapter add inputs, not weight
  deltas, so they cannot merge. The stage says so plainly, the out holds the adapter with
  `merged: false` in its run_info, and evaluate loads base + adapter.
- copy: full fine-tuning already produced a whole model.
Every merge is checked on a probe batch: the merged model's logits must match the adapter
model's within the tolerance for the base's dtype, or the stage fails writing nothing.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.common import tracking
from stages.common.artifacts import (
    Timer,
    atomic_dir,
    read_json,
    read_jsonl,
    require_safetensors,
    run_info,
    weights_sha256,
    write_json,
)
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section
from stages.common.methods import METHODS

# float32 merges agree to ~1e-4 on a 135M model; half precision rounds each weight to
# 8 (bf16) or 11 (fp16) mantissa bits, so their merged logits move further.
TOLERANCES = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}


@dataclass(frozen=True)
class MergeParams:
    probe_examples: int  # validation prompts used to compare logits
    tolerance: dict[str, float] = field(default_factory=lambda: dict(TOLERANCES))
    qlora_base: Literal["dequantized", "original"] = "dequantized"

    def __post_init__(self) -> None:
        require(self.probe_examples > 0, "probe_examples", "must be a positive integer")
        for dtype, tol in self.tolerance.items():
            require(tol > 0, f"tolerance.{dtype}", "must be > 0")


class MergeMismatch(RuntimeError):
    """The merged model does not reproduce the adapter model's logits."""


def probe_logits(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    device = next(model.parameters()).device  # a 4-bit base sits on the GPU when there is one
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    return logits.masked_fill(batch["attention_mask"][..., None] == 0, 0.0)


def merge_checked(base_model: Any, adapter: Path, batch: dict, tolerance: float
                  ) -> tuple[Any, dict[str, Any]]:
    """merge_and_unload, then the logits check on the probe batch."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, require_safetensors(adapter)).eval()
    before = probe_logits(model, batch)
    merged = model.merge_and_unload().eval()
    diff = float((before - probe_logits(merged, batch)).abs().max())
    if not diff <= tolerance:
        raise MergeMismatch(f"merged logits differ from the adapter's by {diff:.3g} > tolerance "
                            f"{tolerance:g} (merge_adapter.tolerance); nothing was written")
    return merged, {"merged": True, "max_abs_logit_diff": diff}


def _float_base(ctx: dict) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ctx["base"], dtype=torch.float32,
                                                use_safetensors=True)


def _merge(ctx: dict) -> tuple[Any, dict[str, Any]]:
    return merge_checked(_float_base(ctx), ctx["adapter"], ctx["batch"], ctx["tolerance"])


def _dequantize(ctx: dict) -> tuple[Any, dict[str, Any]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method = METHODS[ctx["info"]["method"]]
    params = build(method.params, ctx["info"]["params"][ctx["info"]["method"]], "adapter")
    quantized = lambda: AutoModelForCausalLM.from_pretrained(  # noqa: E731
        ctx["base"], dtype=torch.float32, use_safetensors=True, **method.load(params))
    # A fresh 4-bit load: bitsandbytes repacks weights on the CPU's first forward pass.
    target = quantized().dequantize() if ctx["p"].qlora_base == "dequantized" else \
        _float_base(ctx)
    merged, metrics = merge_checked(target, ctx["adapter"], ctx["batch"], ctx["tolerance"])
    trained = PeftModel.from_pretrained(quantized(), require_safetensors(ctx["adapter"])).eval()
    # How far the merged model is from what was trained (4-bit base + adapter): information,
    # not a check; 4-bit kernels round differently from a dequantized matmul.
    metrics["diff_vs_4bit_adapter"] = float(
        (probe_logits(trained, ctx["batch"]) - probe_logits(merged, ctx["batch"])).abs().max())
    metrics["qlora_base"] = ctx["p"].qlora_base
    return merged, metrics


def _copy(ctx: dict) -> tuple[Any, dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ctx["adapter"], dtype=torch.float32,
                                                 use_safetensors=True)
    return model, {"merged": True, "max_abs_logit_diff": 0.0,
                   "note": "full fine-tuning trained the whole model; nothing to merge"}


def _keep(ctx: dict) -> tuple[Any, dict[str, Any]]:
    method = ctx["info"]["method"]
    return None, {"merged": False, "max_abs_logit_diff": None,
                  "reason": f"{method} adds trained inputs (virtual tokens, prefixes or "
                            "adaption prompts), not weight deltas, so it cannot be merged "
                            "into the base weights"}


MERGES: dict[str, Callable[[dict], tuple[Any, dict[str, Any]]]] = {
    "merge": _merge, "dequantize": _dequantize, "copy": _copy, "keep": _keep,
}


def main(base: Path, adapter: Path, probe: Path, out: Path, metrics_path: Path,
         params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = build(MergeParams, section(params, "merge_adapter"), "merge_adapter")
    tp = tracking.load(params)
    info = read_json(adapter / "run_info.json")
    dtype = read_json(base / "run_info.json").get("dtype", "float32")
    if dtype not in p.tolerance:
        raise ConfigError(f"merge_adapter.tolerance has no entry for the base's dtype {dtype}; "
                          f"add one (defaults: {TOLERANCES})")
    prompts = [r["prompt"] + r["completion"] for r in read_jsonl(probe)[: p.probe_examples]]
    if not prompts:
        raise DataError(f"{probe} is empty; the merge check needs probe prompts "
                        "(raise mix_tasks.val_per_task)")
    timer = Timer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ctx = {"base": base, "adapter": adapter, "batch": batch, "tolerance": p.tolerance[dtype],
           "info": info, "p": p}
    merged, metrics = MERGES[METHODS[info["method"]].merge](ctx)
    metrics |= {"tolerance": p.tolerance[dtype], "probe_examples": len(prompts)}
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
    if metrics["merged"]:
        print(f"merge_adapter: {info['method']}: max |logit diff| "
              f"{metrics['max_abs_logit_diff']:.2e} <= {p.tolerance[dtype]:g} -> {out}")
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
