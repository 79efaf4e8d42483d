"""Training a PEFT adapter (or the whole model) with transformers' Trainer.

`TrainParams` is the `train_adapter:` section of params.yaml, the chosen method's block
validated by that method's own params class (forgetful.train.methods). `build_model` puts
the method's trainable weights on the base; `train` runs Trainer with the completion-only
loss (forgetful.train.completion_loss), resumable checkpoints and the caller's callback,
and returns the model and its metrics. No file is written here except Trainer's
checkpoints in `output_dir`.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from forgetful.core.config import ConfigError, DataError, build, require, suggest
from forgetful.data.batches import collate, encode
from forgetful.evaluate.heads import HeadSelector, selectable
from forgetful.train import distributed
from forgetful.train.callbacks import divergence_guard, rank_allocator
from forgetful.train.completion_loss import trainer_class
from forgetful.train.methods import METHODS
from forgetful.train.preference import collate_pairs, encode_pair
from forgetful.train.probes import ProbeParams


@dataclass(frozen=True)
class DPOParams:
    beta: float = 0.1  # how far from the reference (the base) the policy may move: small = far
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO's logistic loss, or IPO's squared one

    def __post_init__(self) -> None:
        require(self.beta > 0, "beta", "must be > 0 (e.g. 0.1)")


@dataclass(frozen=True)
class TrainParams:
    seed: int  # seeds the adapter's initialisation and the data order
    method: str  # a name in forgetful/methods.py; its block below holds its settings
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
    evaluate_every: int = 0  # optimizer steps between probes of forgetting (0 = off)
    keep_every: int = 0  # optimizer steps between weight snapshots kept as an out (0 = none)
    probe: ProbeParams = field(default_factory=ProbeParams)  # what a probe scores
    objective: Literal["sft", "dpo"] = "sft"  # sft: cross-entropy on the answers; dpo: on pairs
    dpo: DPOParams = field(default_factory=DPOParams)  # objective dpo's settings
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
        require(self.evaluate_every >= 0, "evaluate_every", "must be >= 0 (0 = off)")
        require(self.keep_every >= 0, "keep_every", "must be >= 0 (0 = none)")
        require(not (self.keep_every and self.strategy == "fsdp" and self.processes > 1),
                "keep_every", "must be 0 with strategy fsdp (a snapshot is saved by one "
                "process, and FSDP shards the weights over all of them)")
        require(not (self.evaluate_every and self.strategy == "fsdp" and self.processes > 1),
                "evaluate_every", "must be 0 with strategy fsdp (a probe runs on one process, "
                "and FSDP shards the weights over all of them)")
        require(not (self.objective == "dpo" and self.method in METHODS
                     and METHODS[self.method].reallocates_rank), "objective",
                f"dpo cannot train {self.method}: its rank allocator's regulariser is added "
                "only to a loss the model computes itself, and DPO computes its own; use lora "
                "(or dora, rslora) with objective: dpo")
        require(self.batch_size % self.processes == 0, "batch_size",
                f"must be a multiple of processes={self.processes} (it is the batch of all "
                f"processes together), got {self.batch_size}")


# Metrics that differ between two identical runs: kept out of the adapter folder (an out).
VOLATILE = ("train_seconds", "tokens_per_s", "peak_memory_mb", "peak_gpu_memory_mb",
            "processes", "resumed_from_step", "probe_seconds")


def parse_params(data: dict[str, Any]) -> TrainParams:
    """The section minus the method blocks, then the chosen method's block."""
    blocks = {k: data[k] for k in data if k in METHODS}
    rest = {k: v for k, v in data.items() if k not in METHODS}
    p = build(TrainParams, rest, "train_adapter")
    if p.method not in METHODS:
        raise ConfigError(
            f"train_adapter.method: unknown method {p.method!r}{suggest(p.method, METHODS)}; "
            f"choose one of {', '.join(METHODS)}")
    method_params = build(METHODS[p.method].params, blocks.get(p.method) or {},
                          f"train_adapter.{p.method}")
    return dataclasses.replace(p, method_params=method_params)


def rest_fields(p: TrainParams) -> dict[str, Any]:
    """The section's settings but the method's block, as plain values (run_info, MLflow)."""
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
            for k, v in ((k, getattr(p, k)) for k in TrainParams.__dataclass_fields__
                         if k != "method_params")}


def encode_all(records: list[dict], tokenizer: Any, max_length: int, objective: str = "sft"
               ) -> tuple[list[dict], int]:
    """Tokenized records (pairs for dpo) within max_length, and how many were longer."""
    if objective == "dpo":
        encoded = [encode_pair(r, tokenizer) for r in records]
        kept = [e for e in encoded if max(len(e["input_ids"]),
                                          len(e["rejected_input_ids"])) <= max_length]
    else:
        encoded = [encode(r, tokenizer) for r in records]
        kept = [e for e in encoded if len(e["input_ids"]) <= max_length]
    return kept, len(encoded) - len(kept)


def require_pairs(records: list[dict], where: str) -> None:
    """objective dpo: every record a preference pair, else an error naming the tasks."""
    plain = sorted({r["task"] for r in records if not r.get("rejected")})
    if plain:
        raise DataError(
            f"{where}: train_adapter.objective is dpo, but task{'s' if len(plain) > 1 else ''} "
            f"{', '.join(plain)} ha{'ve' if len(plain) > 1 else 's'} no rejected answers (not "
            "format: preference); set their mix_tasks.weights to 0, or objective: sft (which "
            "trains on the chosen answers of preference tasks)")


def peft_model(base: str | Path, method: str, settings: Any = None, max_steps: int = 100,
               gradient_checkpointing: bool = False) -> Any:
    """The base model (a transformers folder; quantized if the method says so) with the
    method's trainable weights: a peft PeftModel, or the model itself for `full`.
    `settings` is the method's block as in params.yaml (a dict, validated by the method's
    params class) or that class itself; `max_steps` matters to methods that schedule by
    step (AdaLoRA's rank budget)."""
    import torch
    from transformers import AutoModelForCausalLM

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}{suggest(method, METHODS)}; choose one "
                          f"of {', '.join(METHODS)}")
    spec = METHODS[method]
    if not isinstance(settings, spec.params):
        settings = build(spec.params, settings or {}, f"train_adapter.{method}")
    load = spec.load(settings)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                                 use_safetensors=True, **load)
    if spec.peft_config is None:  # full fine-tuning: the model itself is trained
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if load:  # a quantized base: norms in float32, inputs that carry gradients (QLoRA)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing)
    return get_peft_model(model, spec.peft_config(settings, {"max_steps": max_steps,
                                                             "base": base}))


def head_selector(model: Any, method: str) -> HeadSelector | None:
    """The output layer only where a label is (forgetful.train.completion_loss), where the
    model allows it. Not for AdaLoRA: PEFT adds its orthogonal regulariser to the loss
    only when the model computes the loss itself (from `labels`), so AdaLoRA keeps
    transformers' standard loss, over the same completion tokens."""
    if not selectable(model) or METHODS[method].reallocates_rank:
        return None
    return HeadSelector(model)


def build_model(p: TrainParams, base: Path) -> Any:
    """The model `train` trains: `peft_model` with the stage's params."""
    return peft_model(base, p.method, p.method_params, p.max_steps, p.gradient_checkpointing)


def train(p: TrainParams, base: Path, train_set: list[dict], val_set: list[dict],
          pad_id: int, callback: Any, collator: Any = None, output_dir: Path | None = None,
          resume: Path | None = None, probe: Any = None, keep: Any = None
          ) -> tuple[Any, dict[str, Any]]:
    """Train; with `output_dir`, checkpoints every p.checkpoint_every steps go there, and
    `resume` (a checkpoint in it) continues a run exactly where it stopped. `probe` is a
    callback that scores the model during training (forgetful.train.probes), `keep` one
    that saves snapshots (forgetful.train.callbacks.keeper)."""
    import torch
    from transformers import TrainingArguments, set_seed

    RankAllocator = rank_allocator()  # noqa: N806 (a class)
    set_seed(p.seed)  # before the adapter is built: its initial weights depend on it
    model = build_model(p, base)
    method = METHODS[p.method]
    callbacks = [callback, divergence_guard(p.learning_rate, p.warmup_steps, p.precision)] + \
        ([RankAllocator()] if method.reallocates_rank else []) + \
        [c for c in (probe, keep) if c is not None]
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
            logging_nan_inf_filter=False,  # a NaN loss is logged as NaN: the guard sees it
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
        pairs = p.objective == "dpo"
        trainer = trainer_class()(model=model, args=args, train_dataset=train_set,
                                  eval_dataset=val_set or None,
                                  data_collator=collator or partial(
                                      collate_pairs if pairs else collate, pad_id=pad_id),
                                  callbacks=callbacks)
        if pairs:  # the reference: the base (adapter off), or a frozen copy for `full`
            trainer.preference = (p.dpo, None if method.peft_config else frozen_copy(model))
            trainer.model_accepts_loss_kwargs = False  # Trainer divides by accumulation
        trainer.selector = None if pairs else head_selector(model, p.method)
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


def frozen_copy(model: Any) -> Any:
    """A copy of the model that does not train: `full`'s DPO reference."""
    import copy

    reference = copy.deepcopy(model).eval()
    for t in reference.parameters():
        t.requires_grad_(False)
    return reference


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
