"""Stage train_adapter: PEFT training on the mixture, loss on completion tokens only.

Deps:   this module, stages/common (methods, batches, tracking), models/base, data/mixed.
Params: train_adapter.* (seed, method and its block, optimisation and batch settings).
Outs:   <out>/ adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
        with run_info.json (which holds the MLflow run id); metrics <metrics>; the training
        curve <curve> (CSV: step, loss, learning_rate) as a DVC plot; tokens/s per step
        goes to MLflow only, so the curve is the same bytes on every identical run.
Run:    python -m stages.train_adapter --base models/base --data data/mixed \
            --out models/adapter --metrics reports/metrics/train.json \
            --curve reports/plots/train_curve.csv

Uses transformers' Trainer (optimizer, schedule, accumulation, devices, DDP/FSDP under
torchrun, checkpoints); our code tokenizes with label masking, computes the output layer
only where a label is (stages/common/completion_loss.py), resumes from checkpoints of the
same inputs, and logs to MLflow from a callback. The adapter folder is the same bytes on
every identical run, so re-running this stage after a code change that does not change
the result re-runs nothing below it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from stages.common import checkpoints, distributed, tracking
from stages.common.artifacts import (
    atomic_dir,
    git_commit,
    peak_memory_mb,
    read_json,
    read_jsonl,
    run_info,
    weights_sha256,
    write_json,
    write_text,
)
from stages.common.batches import collate, encode
from stages.common.callbacks import make_callback, rank_allocator
from stages.common.cli import run_stage
from stages.common.completion_loss import HeadSelector, selectable, trainer_class
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
    processes: int = 1  # training processes on this machine (torchrun); batch_size is global
    strategy: Literal["ddp", "fsdp"] = "ddp"  # how processes share the model
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU with it
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    checkpoint_every: int = 20  # optimizer steps between resumable checkpoints (0 = none)
    deterministic: bool = False  # GPU: deterministic kernels (CPU kernels already are)
    method_params: Any = None  # filled from the method's block

    def __post_init__(self) -> None:
        require(self.learning_rate > 0, "learning_rate", "must be > 0")
        require(self.max_steps > 0, "max_steps", "must be a positive integer")
        require(self.batch_size > 0, "batch_size", "must be a positive integer")
        require(self.grad_accum > 0, "grad_accum", "must be a positive integer")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(self.max_length > 8, "max_length", "must be > 8 tokens")
        require(0 <= self.max_dropped_share <= 1, "max_dropped_share", "must be in [0, 1]")
        require(self.processes > 0, "processes", "must be a positive integer")
        require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0 = none)")
        require(self.batch_size % self.processes == 0, "batch_size",
                f"must be a multiple of processes={self.processes} (it is the batch of all "
                f"processes together), got {self.batch_size}")


# Metrics that differ between two identical runs: kept out of the adapter folder (an out).
VOLATILE = ("train_seconds", "tokens_per_s", "peak_memory_mb", "processes", "resumed_from_step")


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


def build_model(p: TrainParams, base: Path) -> Any:
    """The base (quantized if the method says so) with the method's trainable weights."""
    import torch
    from transformers import AutoModelForCausalLM

    method = METHODS[p.method]
    load = method.load(p.method_params)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                                 use_safetensors=True, **load)
    if method.peft_config is None:  # full fine-tuning: the model itself is trained
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if load:  # a quantized base: norms in float32, inputs that carry gradients (QLoRA)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=p.gradient_checkpointing)
    return get_peft_model(model, method.peft_config(
        p.method_params, {"max_steps": p.max_steps, "base": base}))


def train(p: TrainParams, base: Path, train_set: list[dict], val_set: list[dict],
          pad_id: int, callback: Any, collator: Any = None, output_dir: Path | None = None,
          resume: Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Train; with `output_dir`, checkpoints every p.checkpoint_every steps go there, and
    `resume` (a checkpoint in it) continues a run exactly where it stopped."""
    import torch
    from transformers import TrainingArguments, set_seed

    RankAllocator = rank_allocator()  # noqa: N806 (a class)
    set_seed(p.seed)  # before the adapter is built: its initial weights depend on it
    model = build_model(p, base)
    method = METHODS[p.method]
    callbacks = [callback] + ([RankAllocator()] if method.reallocates_rank else [])
    trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
    total = sum(t.numel() for t in model.parameters())
    cuda = torch.cuda.is_available()
    per_process = p.batch_size // distributed.world_size()
    with tempfile.TemporaryDirectory() as scratch:
        saving = output_dir is not None and p.checkpoint_every > 0
        args = TrainingArguments(
            output_dir=str(output_dir) if saving else scratch,
            save_strategy="steps" if saving else "no", save_steps=p.checkpoint_every or 1,
            save_total_limit=2, max_steps=p.max_steps, per_device_train_batch_size=per_process,
            per_device_eval_batch_size=per_process, gradient_accumulation_steps=p.grad_accum,
            learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler,
            warmup_steps=p.warmup_steps, weight_decay=p.weight_decay, logging_steps=1,
            eval_strategy="no", report_to="none", seed=p.seed,
            full_determinism=p.deterministic,
            data_seed=p.seed, use_cpu=not cuda,
            # (named activation_checkpointing from transformers 5.2x on; the old name works
            # across 5.x, so it is passed only when asked for)
            **({"gradient_checkpointing": True,
                "gradient_checkpointing_kwargs": {"use_reentrant": False}}
               if p.gradient_checkpointing else {}),
            **distributed.precision_args(p.precision, cuda,
                                         cuda and torch.cuda.is_bf16_supported()),
            **(distributed.STRATEGIES[p.strategy] if distributed.world_size() > 1 else {}),
            include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
            disable_tqdm=True, prediction_loss_only=True,
        )
        trainer = trainer_class()(model=model, args=args, train_dataset=train_set,
                                  eval_dataset=val_set or None,
                                  data_collator=collator or partial(collate, pad_id=pad_id),
                                  callbacks=callbacks)
        if selectable(model):  # the output layer only where a label is (completion_loss)
            trainer.selector = HeadSelector(model)
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        seconds = time.perf_counter() - started
        eval_loss = trainer.evaluate()["eval_loss"] if val_set else None
        if trainer.selector is not None:
            trainer.selector.remove()
    tokens = trainer.state.num_input_tokens_seen - callback.start_tokens  # this session's
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


def open_run(p: TrainParams, params: dict, tp: tracking.TrackingParams, base_info: dict,
             resumed_run: str | None) -> str | None:
    """The MLflow run of this training: the interrupted run's, when resuming; else new."""
    if not distributed.is_main():  # one MLflow run, however many processes train
        return None
    if resumed_run and tracking.reopen(tp, resumed_run):
        return resumed_run
    return tracking.start_run(
        tp, run_name=f"{p.method}-{time.strftime('%Y%m%d-%H%M%S')}",
        params={"train_adapter": rest_fields(p) | {p.method: vars(p.method_params)},
                "mix_tasks": params.get("mix_tasks", {}), "format_data.template":
                params.get("format_data", {}).get("template")},
        tags={"git_commit": git_commit() or "", "method": p.method,
              "base_model": str(base_info.get("base_model", {}).get("source"))})


def main(base: Path, data: Path, out: Path, metrics_path: Path, curve_path: Path,
         params_file: Path = Path("params.yaml"), checkpoint_dir: Path | None = None) -> None:
    params = load_params(params_file)
    p = parse_params(section(params, "train_adapter"))
    tp = tracking.load(params)
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
    resume, resumed_run, key = None, None, ""
    if checkpoint_dir is not None:
        key = checkpoints.fingerprint(section(params, "train_adapter"),
                                      [data / "train.jsonl", data / "val.jsonl"],
                                      weights_sha256(base))
        resume, resumed_run = checkpoints.resume_point(checkpoint_dir, key,
                                                       clear_stale=distributed.is_main())
    run_id = open_run(p, params, tp, base_info, resumed_run)
    if checkpoint_dir is not None and distributed.is_main():
        checkpoints.start(checkpoint_dir, key, run_id)
    if resume is None:
        mix_info = read_json(data / "run_info.json")
        tracking.log_metrics(tp, run_id, {"mix": mix_info.get("composition", {})})
    else:
        print(f"train_adapter: resuming from {resume} (MLflow run {run_id})", flush=True)
    curve = checkpoints.load_curve(resume)
    model, metrics = train(p, base, train_set, val_set, tokenizer.pad_token_id,
                           make_callback(tp, run_id, curve), output_dir=checkpoint_dir,
                           resume=resume)
    if not distributed.is_main():  # rank 0 writes the outputs
        return
    metrics |= {"train_loss": round(sum(c["loss"] for c in curve) / len(curve), 5),
                "final_loss": curve[-1]["loss"], "dropped_too_long": dropped,
                "processes": distributed.world_size(),
                "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0}
    write_outputs(p, model, metrics, curve, base, base_info, out, metrics_path, curve_path)
    tracking.tag_adapter(tp, run_id, weights_sha256(out))
    tracking.log_metrics(tp, run_id, {f"train.{k}": v for k, v in metrics.items()})
    if metrics["adapter_mb"] < 200:  # a full fine-tune's whole model stays in DVC only
        tracking.log_artifacts(tp, run_id, [out], "adapter")
    tracking.finish(tp, run_id)
    if checkpoint_dir is not None:
        checkpoints.clear(checkpoint_dir)
    print(f"train_adapter: {metrics['steps']} steps, loss {metrics['train_loss']}, "
          f"{metrics['tokens_per_s']} tokens/s -> {out}")


def sort_config_lists(path: Path) -> None:
    """PEFT keeps target_modules as a set and saves it in hash order, which changes from
    one Python process to the next; sorted, the file is the same bytes every run."""
    import json

    if not path.exists():
        return
    config = json.loads(path.read_text())
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def write_outputs(p: TrainParams, model: Any, metrics: dict, curve: list[dict], base: Path,
                  base_info: dict, out: Path, metrics_path: Path, curve_path: Path) -> None:
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        sort_config_lists(tmp / "adapter_config.json")
        metrics["adapter_mb"] = round(sum(f.stat().st_size for f in tmp.iterdir()) / 2**20, 3)
        metrics["peak_memory_mb"] = peak_memory_mb()
        write_json(tmp / "run_info.json", run_info(
            "train_adapter", {**rest_fields(p), p.method: vars(p.method_params)},
            method=p.method, base_model=base_info.get("base_model"), base_path=str(base),
            metrics={k: v for k, v in metrics.items() if k not in VOLATILE},
        ))
    write_json(metrics_path, metrics)
    write_text(curve_path, "step,loss,learning_rate\n" + "".join(
        f"{c['step']},{c['loss']},{c['learning_rate']}\n" for c in curve))


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--data", "--out", "--metrics", "--curve"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="persistent folder for resumable checkpoints")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()

    def run() -> None:
        p = parse_params(section(load_params(a.params), "train_adapter"))
        if p.processes > 1 and not distributed.launched():
            distributed.relaunch(p.processes, "stages.train_adapter", sys.argv[1:])
            return
        main(a.base, a.data, a.out, a.metrics, a.curve, a.params, a.checkpoints)

    run_stage(run)


if __name__ == "__main__":
    cli()
