"""Speed against what a user would otherwise run, on the same machine, model and data.

Training: our train_adapter (transformers' Trainer + the output layer only at labelled
positions) vs TRL's SFTTrainer with its defaults except `bf16=False`, same LoRA config,
hyper-parameters, step count and prompt/completion records. Evaluation: our
multiple-choice scorer vs lm-evaluation-harness's hf backend (HFLM), same items, same
model, same batch size. Each side runs in its own process (peak memory is per process).
It prints and writes a JSON and a Markdown table: tokens/s (all and supervised), peak
memory, final loss, accuracy, the ratios, and the fraction of the measured fp32 matmul
peak the training reaches.

Run (after `dvc repro`, which makes models/base and data/mixed):
    python benchmarks/speed.py --steps 30 --eval-items 500 --out reports/speed
    python benchmarks/speed.py --device cuda ...      # on a GPU machine (bf16 on both sides)
Needs the bench extra: pip install -e .[bench]  (trl, lm-eval).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_params(steps: int) -> Any:
    from forgetful.core.config import load_params, section
    from forgetful.train.trainer import parse_params

    data = dict(section(load_params(ROOT / "params.yaml"), "train_adapter"))
    data.update(max_steps=steps, method="lora")
    return parse_params(data)


def records(data: Path, name: str) -> list[dict]:
    from forgetful.core.artifacts import read_jsonl

    return read_jsonl(data / f"{name}.jsonl")


class Counter:
    """Wraps a collator; counts non-padding and supervised tokens of each batch. The data
    loader may collate a batch ahead, so only the first `used` batches are counted."""

    def __init__(self, collate: Any) -> None:
        self.collate, self.batches = collate, []

    def __call__(self, features: list) -> Any:
        batch = self.collate(features)
        self.batches.append((int(batch["attention_mask"].sum()),
                             int((batch["labels"][:, 1:] != -100).sum())))
        return batch

    def counts(self, used: int) -> dict[str, int]:
        return {"tokens": sum(t for t, _ in self.batches[:used]),
                "supervised": sum(s for _, s in self.batches[:used])}


def val_loss(model: Any, tokenizer: Any, val: list[dict]) -> float:
    """Mean NLL per completion token (with its end token) on the validation records:
    one yardstick for both trainers' adapters."""
    from forgetful.data.batches import encode
    from forgetful.evaluate.scoring import token_loglikelihoods

    pairs = []
    for r in val:
        enc = encode(r, tokenizer)
        n = sum(1 for t in enc["labels"] if t != -100)
        pairs.append((enc["input_ids"][:-n], enc["input_ids"][-n:]))
    model.eval()
    lls = token_loglikelihoods(model, tokenizer, pairs, 16)
    return -sum(lls) / sum(len(c) for _, c in pairs)


def run_ours(a: argparse.Namespace, select: bool = True) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    import stages.train_adapter as stage
    from forgetful.core.artifacts import peak_memory_mb

    p = train_params(a.steps)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    train_set, _ = stage.encode_all(records(a.data, "train"), tokenizer, p.max_length)
    if not select:
        stage.selectable = lambda model: False
    counter = Counter(lambda f: stage.collate(f, pad_id=tokenizer.pad_token_id))
    curve: list[dict] = []
    from forgetful.core import tracking
    from forgetful.train.callbacks import make_callback

    cb = make_callback(tracking.TrackingParams(enabled=False), None, curve)
    model, metrics = stage.train(p, a.model, train_set, [], tokenizer.pad_token_id, cb,
                                 collator=counter)
    seconds = metrics["train_seconds"]
    with torch.no_grad():
        loss = val_loss(model, tokenizer, records(a.data, "val"))
    return {**counter.counts(p.max_steps * p.grad_accum), "seconds": seconds,
            "final_train_loss": curve[-1]["loss"], "val_loss": round(loss, 5),
            "peak_memory_mb": peak_memory_mb()}


def run_trl(a: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from forgetful.core.artifacts import peak_memory_mb

    p = train_params(a.steps)
    m = p.method_params
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]}
            for r in records(a.data, "train")]
    config = SFTConfig(
        output_dir=str(a.scratch / "trl"), max_steps=p.max_steps,
        per_device_train_batch_size=p.batch_size, gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.learning_rate, lr_scheduler_type=p.lr_scheduler,
        warmup_steps=p.warmup_steps, weight_decay=p.weight_decay, seed=p.seed,
        max_length=p.max_length, logging_steps=1, save_strategy="no", report_to="none",
        bf16=a.device == "cuda", use_cpu=a.device == "cpu", disable_tqdm=True)
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=[Losses()],
                         peft_config=LoraConfig(task_type=TaskType.CAUSAL_LM, r=m.r,
                                                lora_alpha=m.alpha, lora_dropout=m.dropout,
                                                target_modules=list(m.target_modules)))
    counter = Counter(trainer.data_collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        loss = val_loss(trainer.model, tokenizer, records(a.data, "val"))
    return {**counter.counts(p.max_steps * p.grad_accum), "seconds": round(seconds, 1),
            "final_train_loss": losses[-1],
            "val_loss": round(loss, 5), "peak_memory_mb": peak_memory_mb()}


def mc_items(a: argparse.Namespace) -> list[dict]:
    from forgetful.evaluate.benchmarks import FileBenchmark, load_file_benchmark

    return load_file_benchmark(FileBenchmark("piqa", str(a.piqa / "valid.jsonl"),
                                             str(a.piqa / "valid-labels.lst"), a.eval_items))


def run_eval_ours(a: argparse.Namespace) -> dict[str, Any]:
    from forgetful.core.artifacts import peak_memory_mb
    from forgetful.evaluate.scoring import load_for_eval, multiple_choice

    items = mc_items(a)
    model, tokenizer = load_for_eval(a.model)
    started = time.perf_counter()
    results = multiple_choice(model, tokenizer, items, a.eval_batch)
    seconds = time.perf_counter() - started
    return {"items": len(items), "seconds": round(seconds, 1),
            "acc": sum(r["acc"] for r in results) / len(items),
            "acc_norm": sum(r["acc_norm"] for r in results) / len(items),
            "per_item": [[r["acc"], r["acc_norm"]] for r in results],
            "peak_memory_mb": peak_memory_mb()}


def run_eval_lm_eval(a: argparse.Namespace, batch_size: int | None = None) -> dict[str, Any]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from forgetful.core.artifacts import peak_memory_mb
    from forgetful.evaluate.scoring import load_for_eval

    items = mc_items(a)
    model, tokenizer = load_for_eval(a.model)
    folder = a.scratch / "lm_eval"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (folder / "speed_mc.yaml").write_text(
        f"task: speed_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'items.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: context\ndoc_to_choice: choices\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    started = time.perf_counter()
    result = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size or a.eval_batch),
        tasks=["speed_mc"], task_manager=TaskManager(include_path=str(folder)),
        log_samples=True)
    seconds = time.perf_counter() - started
    samples = sorted(result["samples"]["speed_mc"], key=lambda s: s["doc_id"])
    r = result["results"]["speed_mc"]
    return {"items": len(items), "seconds": round(seconds, 1), "acc": r["acc,none"],
            "acc_norm": r["acc_norm,none"],
            "per_item": [[s["acc"], s["acc_norm"]] for s in samples],
            "peak_memory_mb": peak_memory_mb()}


def run_matmul(a: argparse.Namespace) -> dict[str, Any]:
    """Best of several fp32 2048x2048 matmuls: the machine's practical peak."""
    import torch

    x, y = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        torch.mm(x, y)
        best = min(best, time.perf_counter() - started)
    return {"gflops": round(2 * 2048**3 / best / 1e9, 1), "threads": torch.get_num_threads()}


JOBS = {"matmul": run_matmul, "ours": run_ours,
        "ours_full_head": lambda a: run_ours(a, select=False), "trl": run_trl,
        "eval_ours": run_eval_ours, "eval_lm_eval": run_eval_lm_eval,
        # lm-eval's own default: `lm_eval --model hf ...` without --batch_size runs batch 1
        "eval_lm_eval_default": lambda a: run_eval_lm_eval(a, batch_size=1)}


def in_subprocess(job: str, argv: list[str]) -> dict[str, Any]:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"speed-{job}-{os.getpid()}.json"
    subprocess.run([sys.executable, __file__, *argv, "--job", job, "--result", str(out)],
                   check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    out.unlink()
    print(f"{job}: {json.dumps({k: v for k, v in result.items() if k != 'per_item'})}",
          flush=True)
    return result


def table(r: dict[str, Any], a: argparse.Namespace, params: float) -> str:
    def rate(x: dict, key: str) -> float:
        return x[key] / x["seconds"]

    lines = ["| training | tokens/s | supervised tokens/s | peak memory (MB) | last-step loss "
             "| validation loss | fraction of fp32 peak |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("ours", "ours (train_adapter)"),
                        ("ours_full_head", "ours, output layer everywhere"),
                        ("trl", "TRL SFTTrainer (bf16=False)")):
        x = r[name]
        frac = rate(x, "tokens") * 4 * params / (r["matmul"]["gflops"] * 1e9)
        lines.append(f"| {label} | {rate(x, 'tokens'):.1f} | {rate(x, 'supervised'):.1f} | "
                     f"{x['peak_memory_mb']:.0f} | {x['final_train_loss']:.4f} | "
                     f"{x['val_loss']:.4f} | {frac:.2f} |")
    lines += ["", "| evaluation (PIQA) | items | seconds | items/s | acc | acc_norm | "
              "peak memory (MB) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("eval_ours", f"ours (batch {a.eval_batch})"),
                        ("eval_lm_eval", f"lm-eval hf backend (batch {a.eval_batch})"),
                        ("eval_lm_eval_default", "lm-eval hf backend (its default, batch 1)")):
        x = r[name]
        lines.append(f"| {label} | {x['items']} | {x['seconds']} | "
                     f"{x['items'] / x['seconds']:.2f} | {x['acc']:.4f} | {x['acc_norm']:.4f} | "
                     f"{x['peak_memory_mb']:.0f} |")
    s = r["summary"]
    lines += ["", f"Training speed-up over SFTTrainer: **{s['train_speedup']:.2f}×** "
              f"(validation loss {s['val_loss_ratio']:.4f}× TRL's). Evaluation speed-up over "
              f"lm-eval at the same batch size: **{s['eval_speedup']:.2f}×**; over lm-eval's "
              f"default settings: **{s['eval_speedup_default']:.2f}×**; items scored "
              f"differently: {s['eval_items_differing']}. Fraction of fp32 peak counts "
              f"4 × {params / 1e6:.0f}M "
              f"FLOPs per token against {r['matmul']['gflops']} GFLOP/s measured "
              f"({r['matmul']['threads']} threads). {a.steps} steps, batch "
              f"{r['config']['batch_size']}, device {a.device}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/base")
    parser.add_argument("--data", type=Path, default=ROOT / "data/mixed")
    parser.add_argument("--piqa", type=Path, default=ROOT.parent / "shared/data/piqa")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-items", type=int, default=500)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/speed-scratch"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports/speed")
    parser.add_argument("--only", nargs="*", default=list(JOBS), help="jobs to run")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.job:  # a child process: one measurement
        a.result.write_text(json.dumps(JOBS[a.job](a)))
        return
    argv = list(sys.argv[1:])
    results = {job: in_subprocess(job, argv) for job in a.only}
    if set(JOBS) <= set(results):
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(a.model)
        import torch
        from transformers import AutoModelForCausalLM

        params = sum(t.numel() for t in AutoModelForCausalLM.from_config(
            cfg, dtype=torch.float32).parameters())
        ours, trl = results["ours"], results["trl"]
        differing = sum(not x == y == z for x, y, z in zip(
            results["eval_ours"]["per_item"], results["eval_lm_eval"]["per_item"],
            results["eval_lm_eval_default"]["per_item"], strict=True))
        results["summary"] = {
            "train_speedup": round((ours["tokens"] / ours["seconds"])
                                   / (trl["tokens"] / trl["seconds"]), 3),
            "val_loss_ratio": round(ours["val_loss"] / trl["val_loss"], 4),
            "eval_speedup": round(results["eval_lm_eval"]["seconds"]
                                  / results["eval_ours"]["seconds"], 3),
            "eval_speedup_default": round(results["eval_lm_eval_default"]["seconds"]
                                          / results["eval_ours"]["seconds"], 3),
            "eval_items_differing": differing,
            "model_params": params,
        }
        results["config"] = {"steps": a.steps, "batch_size": train_params(a.steps).batch_size,
                             "eval_items": a.eval_items, "eval_batch": a.eval_batch,
                             "device": a.device}
        for job in ("eval_ours", "eval_lm_eval", "eval_lm_eval_default"):
            results[job].pop("per_item")
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
        markdown = table(results, a, params)
        (a.out / "speed.md").write_text("# Speed benchmark\n\n" + markdown)
        print(markdown)


if __name__ == "__main__":
    main()
