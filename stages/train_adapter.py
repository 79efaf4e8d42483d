"""Stage train_adapter: PEFT training on the mixture, loss on completion tokens only.

Deps:   this module, stages/common (methods, batches, tracking), models/base, data/mixed.
Params: train_adapter.* (seed, method and its block, optimisation and batch settings).
Outs:   <out>/ adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
        with run_info.json (which holds the MLflow run id); metrics <metrics>; the training
        curve <curve> (CSV: step, loss, learning_rate, tokens_per_s) as a DVC plot.
Run:    python -m stages.train_adapter --base models/base --data data/mixed \
            --out models/adapter --metrics reports/metrics/train.json \
            --curve reports/plots/train_curve.csv

Uses transformers' Trainer (optimizer, schedule, accumulation, devices); our code only
tokenizes with label masking and logs to MLflow from a callback.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from stages.common import tracking
from stages.common.artifacts import (
    Timer,
    atomic_dir,
    git_commit,
    peak_memory_mb,
    read_json,
    read_jsonl,
    run_info,
    write_json,
    write_text,
)
from stages.common.batches import collate, encode
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section
from stages.common.methods import METHODS


@dataclass(frozen=True)
class TrainParams:
    seed: int  # seeds the adapter's initialisation and the data order
    method: str  # a name in stages/common/methods.py; its block below holds its settings
    learning_rate: float  # peak learning rate (AdamW)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    warmup_steps: int  # linear warm-up, in optimizer steps
    max_steps: int  # optimizer steps to train
    batch_size: int  # sequences per forward pass
    grad_accum: int  # forward passes per optimizer step
    max_length: int  # tokens; longer records are dropped and counted
    weight_decay: float
    max_dropped_share: float = 0.05  # fail if more than this share of records exceeds max_length
    method_params: Any = None  # filled from the method's block

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.max_steps > 0, "max_steps", "must be a positive integer")
        require(self.batch_size > 0, "batch_size", "must be a positive integer")
        require(self.grad_accum > 0, "grad_accum", "must be a positive integer")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.max_length > 8, "max_length", "must be > 8 tokens")
        require(0 <= self.max_dropped_share <= 1, "max_dropped_share", "must be in [0, 1]")


def parse_params(data: dict[str, Any]) -> TrainParams:
    """The section minus the method blocks, then the chosen method's block."""
    blocks = {k: data[k] for k in data if k in METHODS}
    rest = {k: v for k, v in data.items() if k not in METHODS}
    p = build(TrainParams, rest, "train_adapter")
    if p.method not in METHODS:
        raise ConfigError(
            f"train_adapter.method: unknown method {p.method!r}; choose one of {', '.join(METHODS)}"
        )
    method_params = build(METHODS[p.method].params, blocks.get(p.method) or {},
                          f"train_adapter.{p.method}")
    return TrainParams(**{**rest_fields(p), "method_params": method_params})


def rest_fields(p: TrainParams) -> dict[str, Any]:
    return {k: getattr(p, k) for k in TrainParams.__dataclass_fields__ if k != "method_params"}


def encode_all(records: list[dict], tokenizer: Any, max_length: int) -> tuple[list[dict], int]:
    encoded = [encode(r, tokenizer) for r in records]
    kept = [e for e in encoded if len(e["input_ids"]) <= max_length]
    return kept, len(encoded) - len(kept)


def make_callback(tp: tracking.TrackingParams, run_id: str | None, curve: list[dict]) -> Any:
    from transformers import TrainerCallback

    class CurveLogger(TrainerCallback):
        """Keeps the training curve for the DVC plot and mirrors it to MLflow."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.tokens0 = time.perf_counter(), 0

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            if not logs or "loss" not in logs:
                return
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            point = {
                "step": state.global_step,
                "loss": round(float(logs["loss"]), 5),
                "learning_rate": float(logs.get("learning_rate", 0.0)),
                "tokens_per_s": round((tokens - self.tokens0) / max(now - self.t0, 1e-9), 1),
            }
            self.t0, self.tokens0 = now, tokens
            curve.append(point)
            tracking.log_metrics(tp, run_id, {k: v for k, v in point.items() if k != "step"},
                                 step=state.global_step)

    return CurveLogger()


def _rank_allocator() -> Any:
    from transformers import TrainerCallback

    class RankAllocator(TrainerCallback):
        """AdaLoRA's budget step: after the optimizer step, before gradients are zeroed."""

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                              **kw: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    return RankAllocator


def build_model(p: TrainParams, base: Path) -> Any:
    """The base (quantized if the method says so) with the method's trainable weights."""
    import torch
    from transformers import AutoModelForCausalLM

    method = METHODS[p.method]
    load = method.load(p.method_params)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **load)
    if method.peft_config is None:  # full fine-tuning: the model itself is trained
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if load:  # a quantized base: norms in float32, inputs that carry gradients (QLoRA)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, method.peft_config(
        p.method_params, {"max_steps": p.max_steps, "base": base}))


def train(p: TrainParams, base: Path, train_set: list[dict], val_set: list[dict],
          pad_id: int, callback: Any) -> tuple[Any, dict[str, Any]]:
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    RankAllocator = _rank_allocator()  # noqa: N806 (a class)
    set_seed(p.seed)  # before the adapter is built: its initial weights depend on it
    model = build_model(p, base)
    method = METHODS[p.method]
    callbacks = [callback] + ([RankAllocator()] if method.reallocates_rank else [])
    trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
    total = sum(t.numel() for t in model.parameters())
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=p.max_steps, per_device_train_batch_size=p.batch_size,
            per_device_eval_batch_size=p.batch_size, gradient_accumulation_steps=p.grad_accum,
            learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler,
            warmup_steps=p.warmup_steps, weight_decay=p.weight_decay, logging_steps=1,
            save_strategy="no", eval_strategy="no", report_to="none", seed=p.seed,
            data_seed=p.seed, use_cpu=not torch.cuda.is_available(),
            include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train_set,
                          eval_dataset=val_set or None,
                          data_collator=partial(collate, pad_id=pad_id), callbacks=callbacks)
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        eval_loss = trainer.evaluate()["eval_loss"] if val_set else None
    tokens = trainer.state.num_input_tokens_seen
    supervised = sum(sum(1 for t in f["labels"] if t != -100) for f in train_set)
    metrics = {
        "train_loss": round(result.training_loss, 5),
        "eval_loss": round(eval_loss, 5) if eval_loss is not None else None,
        "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "supervised_token_share": round(supervised / sum(len(f["labels"]) for f in train_set), 4),
        "trainable_params": trainable,
        "total_params": total,
    }
    return model, metrics


def main(base: Path, data: Path, out: Path, metrics_path: Path, curve_path: Path,
         params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = parse_params(section(params, "train_adapter"))
    tp = tracking.load(params)
    timer = Timer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    train_set, dropped = encode_all(read_jsonl(data / "train.jsonl"), tokenizer, p.max_length)
    val_set, _ = encode_all(read_jsonl(data / "val.jsonl"), tokenizer, p.max_length)
    if not train_set and not dropped:
        raise DataError(f"{data / 'train.jsonl'} is empty; nothing to train on")
    if dropped > p.max_dropped_share * (len(train_set) + dropped):
        raise DataError(
            f"{data / 'train.jsonl'}: {dropped} of {len(train_set) + dropped} records are longer "
            f"than train_adapter.max_length={p.max_length} tokens, over max_dropped_share="
            f"{p.max_dropped_share}; raise max_length or shorten the records")
    base_info = read_json(base / "run_info.json")
    run_id = tracking.start_run(
        tp, run_name=f"{p.method}-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"train_adapter": rest_fields(p) | {p.method: vars(p.method_params)},
                "mix_tasks": params.get("mix_tasks", {}), "format_data.template":
                params.get("format_data", {}).get("template")},
        tags={"git_commit": git_commit() or "", "method": p.method,
              "base_model": str(base_info.get("base_model", {}).get("source"))},
    )
    mix_info = read_json(data / "run_info.json")
    tracking.log_metrics(tp, run_id, {"mix": mix_info.get("composition", {})})
    curve: list[dict] = []
    model, metrics = train(p, base, train_set, val_set, tokenizer.pad_token_id,
                           make_callback(tp, run_id, curve))
    metrics["final_loss"] = curve[-1]["loss"] if curve else None
    metrics["dropped_too_long"] = dropped
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        metrics["adapter_mb"] = round(sum(f.stat().st_size for f in tmp.iterdir()) / 2**20, 3)
        metrics["peak_memory_mb"] = peak_memory_mb()
        write_json(tmp / "run_info.json", run_info(
            "train_adapter", {**rest_fields(p), p.method: vars(p.method_params)}, timer,
            method=p.method, base_model=base_info.get("base_model"), base_path=str(base),
            mlflow_run_id=run_id, metrics=metrics,
        ))
    write_json(metrics_path, metrics)
    header = "step,loss,learning_rate,tokens_per_s\n"
    write_text(curve_path, header + "".join(
        f"{c['step']},{c['loss']},{c['learning_rate']},{c['tokens_per_s']}\n" for c in curve))
    tracking.log_metrics(tp, run_id, {f"train.{k}": v for k, v in metrics.items()})
    if metrics["adapter_mb"] < 200:  # a full fine-tune's whole model stays in DVC only
        tracking.log_artifacts(tp, run_id, [out], "adapter")
    tracking.finish(tp, run_id)
    print(f"train_adapter: {metrics['steps']} steps, loss {metrics['train_loss']}, "
          f"{metrics['tokens_per_s']} tokens/s -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--data", "--out", "--metrics", "--curve"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.base, a.data, a.out, a.metrics, a.curve, a.params))


if __name__ == "__main__":
    cli()
