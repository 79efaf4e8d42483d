"""Speed against what a user would otherwise run, on the same machine, model and data.

Training: our train_adapter (transformers' Trainer, the output layer only at labelled
positions) against TRL's SFTTrainer configured as a user tuning for speed would: the same
LoRA config, hyper-parameters, step count and prompt/completion records, and gradient
checkpointing off (SFTConfig turns it on by default; a "TRL defaults" row keeps that run for
reference), padded and padding-free (`padding_free=True`: no padding computed); the faster
of those two is the ratio's baseline. Evaluation: our multiple-choice scorer against
lm-evaluation-harness's hf backend (HFLM) on the same items and model, lm-eval at the best
batch size found on this machine (a search over `auto` and fixed sizes) and at batch 1 (its
command-line default).

Fair timers: every timer covers the same work on both sides and nothing else. Training:
`trainer.train()` alone (model, data and trainer built before). Evaluation: from items in
memory to per-item results (ours: `multiple_choice`; lm-eval: `evaluator.evaluate` on a
task dict and an HFLM built before, so its task index, dataset load and model wrap are
outside, as our load is). Each measurement runs in its own process; the rounds are
interleaved (every job once per round, --repeats rounds) and the report gives the median
and range. It saves every step's loss of each trainer (both see the same batches in the
same order) and the library versions, and counts the FLOPs each side performs
(flops_per_batch) for the fraction of the machine's measured fp32 matmul rate.

It writes reports/speed/speed.{json,md} and the README's speed tables (between its
README_BLOCK markers). Run (after `dvc repro`, which makes models/base and data/mixed):
    python benchmarks/speed.py --steps 20 --eval-items 300 --repeats 3 --out reports/speed
    python benchmarks/speed.py --device cuda ...      # on a GPU machine (bf16 on both sides)
Needs the bench extra: pip install -e .[bench]  (trl, lm-eval).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LM_EVAL_BATCHES = ("auto", 8, 16, 32, 64)  # searched once; the fastest is raced
BASELINES = ("trl", "lm-eval")  # versions recorded beside artifacts.package_versions


def train_params(steps: int) -> Any:
    from forgetful.core.config import load_params, section
    from forgetful.train.trainer import parse_params

    data = dict(section(load_params(ROOT / "params.yaml"), "train_adapter"))
    data.update(max_steps=steps, method="lora", checkpoint_every=0)
    return parse_params(data)


def records(data: Path, name: str) -> list[dict]:
    from forgetful.core.artifacts import read_jsonl

    return read_jsonl(data / f"{name}.jsonl")


class Counter:
    """Wraps a collator; counts the non-padding, supervised and computed (padded) positions
    of each batch. The data loader may collate a batch ahead, so only the first `used`
    batches are counted."""

    def __init__(self, collate: Any) -> None:
        self.collate, self.batches = collate, []

    def __call__(self, features: list) -> Any:
        batch = self.collate(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")  # none in a padding-free (flattened) batch
        self.batches.append((int(mask.sum()) if mask is not None else int(ids.numel()),
                             int((batch["labels"][:, 1:] != -100).sum()),
                             int(ids.shape[0]), int(ids.shape[1])))
        return batch

    def counts(self, used: int) -> dict[str, Any]:
        kept = self.batches[:used]
        return {"tokens": sum(b[0] for b in kept), "supervised": sum(b[1] for b in kept),
                "shapes": [[b[1], b[2], b[3]] for b in kept]}  # supervised, rows, length


class ForwardCounter:
    """Hooks on a model: the shape of every body forward (rows, length: padded positions
    included) and the positions the output layer runs at, for the FLOPs an evaluation
    performs. The head hook runs after any pre-hook that selects positions
    (heads.HeadSelector), so it counts what was computed."""

    def __init__(self, model: Any) -> None:
        self.passes: list[list[int]] = []
        self.head = 0
        body = model.get_decoder()
        self.handles = [
            body.register_forward_pre_hook(self.on_body, with_kwargs=True),
            model.get_output_embeddings().register_forward_hook(self.on_head)]

    def on_body(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        self.passes.append([int(ids.shape[0]), int(ids.shape[1])])

    def on_head(self, module: Any, args: tuple, output: Any) -> None:
        self.head += int(output.numel() // output.shape[-1])

    def counts(self) -> dict[str, Any]:
        for h in self.handles:
            h.remove()
        return {"passes": self.passes, "head_positions": self.head}


def eval_flops(shape: dict[str, int], passes: list[list[int]], head_positions: int) -> float:
    """FLOPs of an evaluation's forward passes (2 per multiply-add): every computed
    position through the body's matmuls and attention scores, the output layer where it
    ran. Norms and activations left out, as in flops_per_batch."""
    body = sum(2 * shape["body_matmul_params"] * rows * length
               + rows * shape["layers"] * 4 * length * length * shape["hidden"]
               for rows, length in passes)
    return body + 2 * shape["head_params"] * head_positions


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

    import forgetful.train.trainer as trainer
    from forgetful.core import tracking
    from forgetful.core.artifacts import peak_memory_mb
    from forgetful.data.batches import collate
    from forgetful.train.callbacks import make_callback

    p = train_params(a.steps)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    train_set, _ = trainer.encode_all(records(a.data, "train"), tokenizer, p.max_length)
    if not select:  # the ablation: logits at every position, as a plain Trainer computes them
        trainer.selectable = lambda model: False
    counter = Counter(lambda f: collate(f, pad_id=tokenizer.pad_token_id))
    curve: list[dict] = []
    cb = make_callback(tracking.TrackingParams(enabled=False), None, curve, [])
    model, metrics = trainer.train(p, a.model, train_set, [], tokenizer.pad_token_id, cb,
                                   collator=counter)
    with torch.no_grad():
        loss = val_loss(model, tokenizer, records(a.data, "val"))
    losses = [c["loss"] for c in curve if "loss" in c]
    return {**counter.counts(p.max_steps * p.grad_accum), "seconds": metrics["train_seconds"],
            "losses": losses, "val_loss": round(loss, 5), "peak_memory_mb": peak_memory_mb(),
            "head_at": "supervised" if select else "all", "recompute": False,
            "trainable": metrics["trainable_params"]}


def run_trl(a: argparse.Namespace, checkpointing: bool = False, padding_free: bool = False
            ) -> dict[str, Any]:
    """TRL's SFTTrainer on the same records; `padding_free`: each batch flattened into one
    row, position ids restarting per record (no padding computed; TRL then wants
    max_length None, and every record is within it already)."""
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
        max_length=None if padding_free else p.max_length, padding_free=padding_free,
        logging_steps=1, save_strategy="no", report_to="none",
        bf16=a.device == "cuda", use_cpu=a.device == "cpu", disable_tqdm=True,
        gradient_checkpointing=checkpointing)
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
    trainable = sum(t.numel() for t in trainer.model.parameters() if t.requires_grad)
    # TRL >= 1.x projects the output layer only at labelled positions (its fused LM head)
    return {**counter.counts(p.max_steps * p.grad_accum), "seconds": round(seconds, 1),
            "losses": losses, "val_loss": round(loss, 5), "peak_memory_mb": peak_memory_mb(),
            "head_at": "supervised", "recompute": checkpointing, "trainable": trainable}


def mc_items(a: argparse.Namespace) -> list[dict]:
    from forgetful.evaluate.benchmarks import FileBenchmark, load_file_benchmark

    return load_file_benchmark(FileBenchmark("piqa", str(a.piqa / "valid.jsonl"),
                                             str(a.piqa / "valid-labels.lst"), a.eval_items))


def run_eval_ours(a: argparse.Namespace) -> dict[str, Any]:
    from forgetful.core.artifacts import peak_memory_mb
    from forgetful.evaluate.scoring import load_for_eval, multiple_choice

    items = mc_items(a)
    model, tokenizer = load_for_eval(a.model)
    counter = ForwardCounter(model)
    started = time.perf_counter()
    results = multiple_choice(model, tokenizer, items, a.eval_batch)
    seconds = time.perf_counter() - started
    return {"items": len(items), "seconds": round(seconds, 1), **counter.counts(),
            "acc": sum(r["acc"] for r in results) / len(items),
            "acc_norm": sum(r["acc_norm"] for r in results) / len(items),
            "per_item": [[r["acc"], r["acc_norm"]] for r in results],
            "peak_memory_mb": peak_memory_mb()}


def run_eval_lm_eval(a: argparse.Namespace, batch_size: int | str) -> dict[str, Any]:
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

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
    # set-up outside the timer, as our model load is: the model wrap, the task index, the data
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    tasks = get_task_dict(["speed_mc"], TaskManager(include_path=str(folder)))
    counter = ForwardCounter(model)
    started = time.perf_counter()
    result = evaluate(lm=lm, task_dict=tasks, log_samples=True)
    seconds = time.perf_counter() - started
    counted = counter.counts()
    samples = sorted(result["samples"]["speed_mc"], key=lambda s: s["doc_id"])
    r = result["results"]["speed_mc"]
    return {"items": len(items), "seconds": round(seconds, 1), "acc": r["acc,none"],
            "acc_norm": r["acc_norm,none"], "batch_size": batch_size, **counted,
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


TRAINING = {"ours": ("ours (train_adapter)", lambda a: run_ours(a)),
            "ours_full_head": ("ours, output layer at every position",
                               lambda a: run_ours(a, select=False)),
            "trl": ("TRL SFTTrainer, gradient checkpointing off", lambda a: run_trl(a)),
            "trl_padding_free": ("TRL SFTTrainer, padding-free, gradient checkpointing off",
                                 lambda a: run_trl(a, padding_free=True)),
            "trl_defaults": ("TRL SFTTrainer defaults (gradient checkpointing on)",
                             lambda a: run_trl(a, checkpointing=True))}


TRL_TUNED = ("trl", "trl_padding_free")  # the rows the best-configured TRL is chosen from


def job(name: str, a: argparse.Namespace) -> dict[str, Any]:
    if name == "matmul":
        return run_matmul(a)
    if name in TRAINING:
        return TRAINING[name][1](a)
    if name == "eval_ours":
        return run_eval_ours(a)
    batch = name.removeprefix("eval_lm_eval_")  # eval_lm_eval_<batch size or auto>
    return run_eval_lm_eval(a, batch if batch == "auto" else int(batch))


def in_subprocess(name: str, argv: list[str]) -> dict[str, Any]:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"speed-{name}-{os.getpid()}.json"
    subprocess.run([sys.executable, __file__, *argv, "--job", name, "--result", str(out)],
                   check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    out.unlink()
    shown = {k: v for k, v in result.items()
             if k not in ("per_item", "losses", "shapes", "passes")}
    print(f"{name}: {json.dumps(shown)}", flush=True)
    return result


def model_shape(model: Path) -> dict[str, int]:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    embed = c.vocab_size * c.hidden_size
    total = (c.num_hidden_layers * (
        2 * c.hidden_size * c.hidden_size * c.num_key_value_heads // c.num_attention_heads
        + 2 * c.hidden_size * c.hidden_size + 3 * c.hidden_size * c.intermediate_size))
    return {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "vocab": c.vocab_size,
            "body_matmul_params": total, "head_params": embed}


def flops_per_batch(shape: dict[str, int], supervised: int, rows: int, length: int,
                    head_at: str, recompute: bool, trainable: int) -> float:
    """FLOPs one training micro-batch performs (2 per multiply-add), counted from what runs:
    every computed position (padding included) through the body's matmuls and attention
    scores, the output layer at the positions it is applied to, the backward pass's input
    gradients (2x the forward; the frozen base gets no weight gradients), LoRA's small
    matmuls with their weight gradients, and one more body forward under gradient
    checkpointing. Norms, activations and the optimizer are left out (under 1%)."""
    positions = rows * length
    body = 2 * shape["body_matmul_params"] * positions
    attention = rows * shape["layers"] * 4 * length * length * shape["hidden"]
    head = 2 * shape["head_params"] * (supervised if head_at == "supervised" else positions)
    lora = 2 * trainable * positions
    forward = body + attention + head + lora
    backward = 2 * (body + attention + head) + 2 * lora
    return forward + backward + ((body + attention) if recompute else 0)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def versions() -> dict[str, str]:
    """What every stage records (artifacts.package_versions), the two baselines, the
    machine."""
    from importlib import metadata

    from forgetful.core.artifacts import package_versions

    found = {**package_versions(), "machine": platform.machine(),
             "cpu_count": str(os.cpu_count())}
    for name in BASELINES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def summarise(rounds: list[dict[str, dict]], search: dict[str, dict], best: str,
              a: argparse.Namespace) -> dict[str, Any]:
    shape = model_shape(a.model)
    peak = max(r["matmul"]["gflops"] for r in rounds) * 1e9
    out: dict[str, Any] = {"training": {}, "evaluation": {}}
    for name in TRAINING:
        runs = [r[name] for r in rounds]
        x = runs[0]
        flops = sum(flops_per_batch(shape, *b, x["head_at"], x["recompute"], x["trainable"])
                    for b in x["shapes"])
        out["training"][name] = {
            "label": TRAINING[name][0], "tokens": x["tokens"], "supervised": x["supervised"],
            "seconds": spread([y["seconds"] for y in runs]),
            "tokens_per_s": spread([y["tokens"] / y["seconds"] for y in runs]),
            "peak_memory_mb": max(y["peak_memory_mb"] for y in runs),
            "val_loss": x["val_loss"], "losses": x["losses"],
            "same_losses_every_repeat": all(y["losses"] == x["losses"] for y in runs),
            "flops": flops, "flops_per_token": round(flops / x["tokens"]),
            "fraction_of_peak": spread([flops / y["seconds"] / peak for y in runs])}
    ours = out["training"]["ours"]
    for x in out["training"].values():
        x["max_abs_step_loss_diff_vs_ours"] = round(max(
            abs(u - v) for u, v in zip(x["losses"], ours["losses"], strict=True)), 5)
    eval_jobs = {"eval_ours": f"ours (batch {a.eval_batch})",
                 f"eval_lm_eval_{best}": f"lm-eval hf backend, best batch ({best})",
                 "eval_lm_eval_1": "lm-eval hf backend, batch 1 (its default)"}
    base = rounds[0]["eval_ours"]["per_item"]
    for name, label in eval_jobs.items():
        runs = [r[name] for r in rounds]
        flops = eval_flops(shape, runs[0]["passes"], runs[0]["head_positions"])
        out["evaluation"][name] = {
            "label": label, "items": runs[0]["items"], "acc": runs[0]["acc"],
            "acc_norm": runs[0]["acc_norm"], "seconds": spread([y["seconds"] for y in runs]),
            "flops": flops, "positions": sum(b * n for b, n in runs[0]["passes"]),
            "head_positions": runs[0]["head_positions"],
            "fraction_of_peak": spread([flops / y["seconds"] / peak for y in runs]),
            "peak_memory_mb": max(y["peak_memory_mb"] for y in runs),
            "items_differing_from_ours": sum(u != v for u, v in zip(
                runs[0]["per_item"], base, strict=True))}
    out["lm_eval_batch_search"] = {k: {"seconds": v["seconds"], "items": v["items"]}
                                   for k, v in search.items()}

    def ratio(num: list[float], den: list[float]) -> dict[str, float]:
        return spread([n / d for n, d in zip(num, den, strict=True)])  # per round: side by side

    tps = {n: [r[n]["tokens"] / r[n]["seconds"] for r in rounds] for n in TRAINING}
    # the TRL configuration a user after speed would pick: the faster by median tokens/s
    trl_best = max(TRL_TUNED, key=lambda n: statistics.median(tps[n]))
    secs = {n: [r[n]["seconds"] for r in rounds] for n in eval_jobs}
    out["ratios"] = {
        "train_vs_trl_best": ratio(tps["ours"], tps[trl_best]),
        "train_vs_trl_defaults": ratio(tps["ours"], tps["trl_defaults"]),
        "eval_vs_lm_eval_best": ratio(secs[f"eval_lm_eval_{best}"], secs["eval_ours"]),
        "eval_vs_lm_eval_batch_1": ratio(secs["eval_lm_eval_1"], secs["eval_ours"])}
    # what the evaluation ratio would be were ours at the matmul rate: its ceiling here
    out["ratios"]["eval_ceiling_vs_lm_eval_best"] = round(
        statistics.median(secs[f"eval_lm_eval_{best}"])
        / (out["evaluation"]["eval_ours"]["flops"] / peak), 2)
    out["trl_best"], out["eval_best"] = trl_best, f"eval_lm_eval_{best}"
    out["peak_gflops"] = round(peak / 1e9, 1)
    out["threads"] = rounds[0]["matmul"]["threads"]
    out["model"] = shape
    return out


def fmt(x: dict[str, float], digits: int = 1) -> str:
    return f"{x['median']:.{digits}f} [{x['min']:.{digits}f}–{x['max']:.{digits}f}]"


def markdown(s: dict[str, Any], config: dict[str, Any], vers: dict[str, str]) -> str:
    lines = ["# Speed benchmark", "",
             f"`python benchmarks/speed.py {config['argv']}` on {vers['cpu_count']} CPU cores "
             f"({config['device']}), {config['repeats']} interleaved rounds, each job in its own "
             "process; median [min–max] over the rounds. Timers cover the same work on both "
             "sides (training: `trainer.train()`; evaluation: items in memory to per-item "
             "results, set-up outside).", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in vers.items())}.", "",
             "| training | seconds | tokens/s | peak MB | validation loss | max \\|Δ step "
             "loss\\| vs ours | GFLOP/token | fraction of the matmul rate |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for x in s["training"].values():
        lines.append(f"| {x['label']} | {fmt(x['seconds'])} | {fmt(x['tokens_per_s'])} | "
                     f"{x['peak_memory_mb']:.0f} | {x['val_loss']:.4f} | "
                     f"{x['max_abs_step_loss_diff_vs_ours']:.4f} | "
                     f"{x['flops_per_token'] / 1e9:.2f} | {fmt(x['fraction_of_peak'], 2)} |")
    lines += ["", "| evaluation (PIQA) | items | seconds | items/s (median) | acc | acc_norm | "
              "peak MB | items scored differently from ours | positions computed | output "
              "layer at | GFLOP | fraction of the matmul rate |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in s["evaluation"].values():
        lines.append(f"| {x['label']} | {x['items']} | {fmt(x['seconds'])} | "
                     f"{x['items'] / x['seconds']['median']:.2f} | {x['acc']:.4f} | "
                     f"{x['acc_norm']:.4f} | {x['peak_memory_mb']:.0f} | "
                     f"{x['items_differing_from_ours']} | {x['positions']:,} | "
                     f"{x['head_positions']:,} | {x['flops'] / 1e9:,.0f} | "
                     f"{fmt(x['fraction_of_peak'], 2)} |")
    search = ", ".join(f"{k.removeprefix('eval_lm_eval_')}: {v['seconds']} s"
                       for k, v in s["lm_eval_batch_search"].items())
    r = s["ratios"]
    ours, lme = s["evaluation"]["eval_ours"], s["evaluation"][s["eval_best"]]
    lines += ["", f"lm-eval batch-size search (one run each, {config['eval_items']} items): "
              f"{search}.", "",
              "- Training, ours ÷ best-configured TRL tokens/s "
              f"({s['training'][s.get('trl_best', 'trl')]['label']}): "
              f"**{fmt(r['train_vs_trl_best'], 2)}×**"
              f" (÷ TRL defaults: {fmt(r['train_vs_trl_defaults'], 2)}×); the same batches in "
              "the same order, per-step losses in speed.json.",
              f"- Evaluation, lm-eval at its best batch ÷ ours, seconds: "
              f"**{fmt(r['eval_vs_lm_eval_best'], 2)}×** (at batch 1: "
              f"{fmt(r['eval_vs_lm_eval_batch_1'], 2)}×). Ours computes "
              f"{lme['flops'] / ours['flops']:.2f}× fewer FLOPs (each question's shared "
              "tokens once, little padding, the output layer only where a choice token is "
              "predicted); run at the matmul rate, it would "
              f"take {ours['flops'] / 1e9 / s['peak_gflops']:.1f} s: "
              f"**{r['eval_ceiling_vs_lm_eval_best']:.2f}×** lm-eval's median, this machine's "
              "ceiling for the ratio at these FLOPs.",
              f"- Fraction of the matmul rate: FLOPs each side performs (`flops_per_batch`: "
              "padded positions, the output layer where it is applied, gradient-checkpointing "
              "recompute) per second, over the best fp32 2048×2048 matmul rate measured in "
              f"the same rounds ({s['peak_gflops']} GFLOP/s on {s['threads']} threads): a "
              "measured rate, not the CPU's datasheet peak, so about 1 means the training "
              "runs as fast as one large matmul does here.",
              f"- {config['steps']} steps of batch {config['batch_size']}, LoRA as in params.yaml."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/base")
    parser.add_argument("--data", type=Path, default=ROOT / "data/mixed")
    parser.add_argument("--piqa", type=Path, default=ROOT.parent / "shared/data/piqa")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-items", type=int, default=300)
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/speed-scratch"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports/speed")
    parser.add_argument("--redraw", action="store_true",
                        help="rewrite speed.md (and the README's tables) from speed.json")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.job:  # a child process: one measurement
        a.result.write_text(json.dumps(job(a.job, a)))
        return
    if a.redraw:  # the tables again from speed.json, nothing measured
        saved = json.loads((a.out / "speed.json").read_text())
        config, vers = saved.pop("config"), saved.pop("versions")
        publish(markdown(saved, config, vers), a.out)
        return
    argv = list(sys.argv[1:])
    search = {f"eval_lm_eval_{b}": in_subprocess(f"eval_lm_eval_{b}", argv)
              for b in LM_EVAL_BATCHES}
    best = min(search, key=lambda k: search[k]["seconds"]).removeprefix("eval_lm_eval_")
    jobs = ["matmul", *TRAINING, "eval_ours", f"eval_lm_eval_{best}", "eval_lm_eval_1"]
    rounds = []
    for i in range(a.repeats):  # interleaved: every job once a round
        print(f"round {i + 1} of {a.repeats}", flush=True)
        rounds.append({name: in_subprocess(name, argv) for name in jobs})
    summary = summarise(rounds, search, best, a)
    config = {"argv": " ".join(argv), "steps": a.steps, "repeats": a.repeats,
              "batch_size": train_params(a.steps).batch_size, "eval_items": a.eval_items,
              "eval_batch": a.eval_batch, "device": a.device,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    vers = versions()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "speed.json").write_text(json.dumps(
        {"config": config, "versions": vers, **summary}, indent=2) + "\n")
    publish(markdown(summary, config, vers), a.out)


README_BLOCK = ("<!-- speed: written by benchmarks/speed.py from reports/speed/speed.md -->",
                "<!-- /speed -->")


def publish(text: str, out: Path) -> None:
    """speed.md; and, for reports/speed, the README's speed tables (speed.md without its
    title line, between the README_BLOCK markers)."""
    from forgetful.report.readme import write_between

    (out / "speed.md").write_text(text)
    if out.resolve() == (ROOT / "reports/speed").resolve():
        if not write_between(ROOT / "README.md", *README_BLOCK, text.split("\n", 2)[2]):
            print(f"README.md: no {README_BLOCK[0]} ... {README_BLOCK[1]} block; not updated")
    print(text)


if __name__ == "__main__":
    main()
