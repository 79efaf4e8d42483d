"""Merging a trained adapter into its base, proven on a probe batch.

How a method is merged is the method's `merge` entry in forgetful.train.methods, mapped
here by one registry, `MERGES`:
- merge: the LoRA family and IA3 are merged into W with PEFT's merge_and_unload.
- dequantize: QLoRA is merged into the dequantized 4-bit base (the weights it was trained
  against) by default, or into the original-precision base (`qlora_base: original`).
- keep: prompt tuning, p-tuning, prefix tuning and LLaMA-Adapter add inputs, not weight
  deltas, so they cannot merge; evaluate loads base + adapter.
- copy: full fine-tuning already produced a whole model.
Every merge is checked: the merged model's logits must match the adapter model's within
the tolerance for the base's dtype (`MergeMismatch` otherwise).

Strength α (merge_adapter.strength, in [0, 1]) merges α times the trained change, the
weight interpolation of WiSE-FT (Wortsman et al. 2022) between the base (α = 0) and the
tuned model (α = 1, the plain merge, its weights byte for byte): for the LoRA family the
delta's scaling times α, DoRA's magnitude interpolated between the base's column norms and
the trained one, IA3's vectors interpolated toward 1, full fine-tuning's every weight
θ_base + α(θ_tuned − θ_base). The check then compares against the adapter model with its
delta scaled the same way. Methods that add inputs have no delta to scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from forgetful.core.artifacts import read_jsonl, require_safetensors
from forgetful.core.config import ConfigError, DataError, NonFinite, build, require
from forgetful.train.methods import METHODS

# float32 merges agree to ~1e-4 on a 135M model; half precision rounds each weight to
# 8 (bf16) or 11 (fp16) mantissa bits, so their merged logits move further.
TOLERANCES = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}


@dataclass(frozen=True)
class MergeParams:
    probe_examples: int  # validation prompts used to compare logits
    tolerance: dict[str, float] = field(default_factory=lambda: dict(TOLERANCES))
    qlora_base: Literal["dequantized", "original"] = "dequantized"
    strength: float = 1.0  # α: the share of the trained change merged (1 = all, 0 = the base)

    def __post_init__(self) -> None:
        require(self.probe_examples > 0, "probe_examples", "must be a positive integer")
        require(0 <= self.strength <= 1, "strength",
                f"must be in [0, 1] (0 = the base, 1 = the whole change), got {self.strength}")
        for dtype, tol in self.tolerance.items():
            require(tol > 0, f"tolerance.{dtype}", "must be > 0")


def tolerance_for(p: MergeParams, dtype: str) -> float:
    """The logit tolerance of a merge into a base of this dtype (merge_adapter.tolerance)."""
    if dtype not in p.tolerance:
        raise ConfigError(f"merge_adapter.tolerance has no entry for the base's dtype {dtype}; "
                          f"add one (defaults: {TOLERANCES})")
    return p.tolerance[dtype]


def probe_batch(tokenizer: Any, probe: Path, n: int) -> dict[str, Any]:
    """The merge check's batch: the first `n` validation records (prompt + answer)."""
    prompts = [r["prompt"] + r["completion"] for r in read_jsonl(probe)[:n]]
    if not prompts:
        raise DataError(f"{probe} is empty; the merge check needs probe prompts "
                        "(raise mix_tasks.val_per_task)")
    return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


class MergeMismatch(RuntimeError):
    """The merged model does not reproduce the adapter model's logits."""


def probe_logits(model: Any, batch: dict[str, Any]) -> Any:
    import torch

    device = next(model.parameters()).device  # a 4-bit base sits on the GPU when there is one
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    return logits.masked_fill(batch["attention_mask"][..., None] == 0, 0.0)


def scale_delta(model: Any, alpha: float) -> None:
    """α times the trained change, in place, on a PeftModel: the LoRA family's scaling
    (AdaLoRA's too) times α; DoRA's magnitude m -> (1 − α)·‖W‖ + α·m, so that α = 0 is W;
    IA3's vectors l -> 1 + α(l − 1)."""
    import torch
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight
    from peft.utils.other import transpose

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLayer):
                for name in module.lora_A:
                    module.scaling[name] *= alpha
                    magnitude = getattr(module, "lora_magnitude_vector", {})
                    if name in magnitude:
                        weight = dequantize_module_weight(module.get_base_layer())
                        norm = torch.linalg.norm(transpose(weight, module.fan_in_fan_out),
                                                 dim=1)
                        m = magnitude[name].weight
                        m.copy_((1 - alpha) * norm.to(m.dtype) + alpha * m)
            elif isinstance(module, IA3Layer):
                for vector in module.ia3_l.values():
                    vector.copy_(1 + alpha * (vector - 1))


def merge_checked(base_model: Any, adapter: Path, batch: dict, tolerance: float,
                  alpha: float = 1.0) -> tuple[Any, dict[str, Any]]:
    """merge_and_unload (of α times the change), then the logits check on the probe
    batch against the adapter model with the same α."""
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, require_safetensors(adapter)).eval()
    if alpha != 1:
        scale_delta(model, alpha)
    before = probe_logits(model, batch)
    if not bool(torch.isfinite(before).all()):
        raise NonFinite(f"{adapter}: the adapter model gives non-finite logits (NaN or inf): "
                        "its training diverged; re-train with a lower "
                        "train_adapter.learning_rate; nothing was written")
    merged = model.merge_and_unload().eval()
    after = probe_logits(merged, batch)
    if not bool(torch.isfinite(after).all()):
        raise NonFinite(f"{adapter}: the merged model gives non-finite logits (NaN or inf) "
                        "where the adapter model's are finite: the merge overflowed the "
                        "base's dtype (prepare_base.dtype); nothing was written")
    diff = float((before - after).abs().max())
    if not diff <= tolerance:
        raise MergeMismatch(f"merged logits differ from the adapter's by {diff:.3g} > tolerance "
                            f"{tolerance:g} (merge_adapter.tolerance); nothing was written")
    return merged, {"merged": True, "max_abs_logit_diff": diff, "strength": alpha}


def _float_base(ctx: dict) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ctx["base"], dtype=torch.float32,
                                                use_safetensors=True)


def _merge(ctx: dict) -> tuple[Any, dict[str, Any]]:
    return merge_checked(_float_base(ctx), ctx["adapter"], ctx["batch"], ctx["tolerance"],
                         ctx["p"].strength)


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
    merged, metrics = merge_checked(target, ctx["adapter"], ctx["batch"], ctx["tolerance"],
                                    ctx["p"].strength)
    trained = PeftModel.from_pretrained(quantized(), require_safetensors(ctx["adapter"])).eval()
    if ctx["p"].strength != 1:
        scale_delta(trained, ctx["p"].strength)
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
    alpha = ctx["p"].strength
    if alpha != 1:  # θ_base + α(θ_tuned − θ_base), every weight
        base = _float_base(ctx).state_dict()
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if tensor.is_floating_point():
                    tensor.copy_(base[name] + alpha * (tensor - base[name]))
    return model, {"merged": True, "max_abs_logit_diff": 0.0, "strength": alpha,
                   "note": "full fine-tuning trained the whole model; nothing to merge"
                   + ("" if alpha == 1 else f"; every weight moved {alpha:g} of the way "
                      "from the base's")}


def _keep(ctx: dict) -> tuple[Any, dict[str, Any]]:
    method = ctx["info"]["method"]
    return None, {"merged": False, "max_abs_logit_diff": None,
                  "reason": f"{method} adds trained inputs (virtual tokens, prefixes or "
                            "adaption prompts), not weight deltas, so it cannot be merged "
                            "into the base weights"}


MERGES: dict[str, Callable[[dict], tuple[Any, dict[str, Any]]]] = {
    "merge": _merge, "dequantize": _dequantize, "copy": _copy, "keep": _keep,
}


def merged_at(ctx: dict, alpha: float) -> tuple[Any, dict[str, Any]]:
    """The model `ctx["adapter"]` gives at strength α, by its method's merge (checked on
    the probe batch as merge_adapter checks it): a merged model, or for a method that adds
    inputs (which has no α but 1) the unmerged base + adapter, with metrics["merged"]
    False. `ctx`: base, adapter, batch, tolerance, info (the adapter's run_info), p."""
    from peft import PeftModel

    method = METHODS[ctx["info"]["method"]]
    if alpha != 1 and not method.mergeable:
        raise ValueError(f"{ctx['info']['method']} has no weight change to scale")
    model, metrics = MERGES[method.merge]({**ctx, "p": replace(ctx["p"], strength=alpha)})
    if model is None:
        model = PeftModel.from_pretrained(_float_base(ctx), require_safetensors(ctx["adapter"]))
    return model.eval(), metrics
