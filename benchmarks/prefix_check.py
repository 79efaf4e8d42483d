"""Is prefix tuning's forgetting real? The same adapter scored by three tools, and where
the loss happens.

1. Trains a prefix-tuning adapter exactly as `make compare` did (the mixture in
   data/mixed, 20 steps, learning rate 1e-2; stages/compare_methods.py) with the
   training probe on, then once more at 1e-3, so the probe shows the general-suite
   subsample at step 0 (the adapter as PEFT initialises it, before any update) and
   every 5 steps.
2. Scores the 1e-2 adapter on the whole built-in general suite with
   - our evaluator (forgetful.evaluate.scoring.multiple_choice on the PeftModel),
   - plain PEFT: PeftModel.from_pretrained, one unpadded forward pass per choice, summed
     log-probabilities of the choice's tokens, written here without our code,
   - lm-evaluation-harness: HFLM(pretrained=<base>, peft=<adapter>) on the same items,
   and reports acc from each and how many items they score differently.
3. Scores the base model and the untrained (initialised) prefix the same way (ours).

Needs `make run` first (models/base, data/mixed, data/formatted) and lm-eval
(pip install -e .[eval]). Writes reports/prefix_check.md and reports/prefix_check.json.

Run:    python benchmarks/prefix_check.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.lm_eval_agreement import TASK
from forgetful.evaluate.general import SKILLS
from forgetful.evaluate.scoring import encode_pair, multiple_choice, prefix_token


def train(lr: float, root: Path, out: Path) -> dict:
    from stages import train_adapter

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["train_adapter"].update(method="prefix_tuning", learning_rate=lr, max_steps=20,
                                   evaluate_every=5, checkpoint_every=0)
    params["train_adapter"]["probe"].update(task_items=0)
    params["tracking"]["enabled"] = False
    pfile = root / f"params-{lr}.yaml"
    pfile.write_text(yaml.safe_dump(params))
    train_adapter.main(Path("models/base"), Path("data/mixed"), out, root / f"train-{lr}.json",
                       root / f"curve-{lr}.csv", pfile, formatted=Path("data/formatted"),
                       probe_path=root / f"probe-{lr}.csv")
    lines = (root / f"probe-{lr}.csv").read_text().splitlines()
    return {int(row.split(",")[0]): float(row.split(",")[1]) for row in lines[1:]}


def plain_peft(model, tokenizer, items: list[dict]) -> list[int]:
    """acc per item: one forward pass per choice, no batching, no padding."""
    import torch

    prefix = prefix_token(tokenizer)
    out = []
    for it in items:
        scores = []
        for choice in it["choices"]:
            ctx, cont = encode_pair(tokenizer, it["context"], " " + choice)
            ids = torch.tensor([(ctx or [prefix]) + cont])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -ids.shape[1]:]
            logprobs = torch.log_softmax(logits.float(), -1)
            start = ids.shape[1] - len(cont)
            scores.append(sum(float(logprobs[start - 1 + j, t]) for j, t in enumerate(cont)))
        out.append(int(max(range(len(scores)), key=scores.__getitem__) == it["answer"]))
    return out


def lm_eval_acc(base: Path, adapter: Path, items: list[dict], batch_size: int) -> list[int]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "items.jsonl"
        data.write_text("".join(json.dumps(it) + "\n" for it in items))
        (Path(tmp) / "agreement_mc.yaml").write_text(TASK.format(data=data))
        result = lm_eval.simple_evaluate(
            model=HFLM(pretrained=str(base), peft=str(adapter), batch_size=batch_size,
                       device="cpu", dtype="float32"),
            tasks=["agreement_mc"], task_manager=TaskManager(include_path=tmp),
            log_samples=True)
    return [int(s["acc"]) for s in sorted(result["samples"]["agreement_mc"],
                                          key=lambda s: s["doc_id"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("reports/prefix_check"))
    a = parser.parse_args()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.train.trainer import peft_model

    items = [it for make in SKILLS.values() for it in make()]
    base_dir = Path("models/base")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    result: dict = {"items": len(items), "skills": list(SKILLS)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result["probe"] = {}
        for lr in (1e-2, 1e-3):
            started = time.perf_counter()
            result["probe"][f"{lr:.0e}"] = train(lr, root, root / f"adapter-{lr}")
            print(f"prefix_check: trained lr {lr:.0e} in {time.perf_counter() - started:.0f}s",
                  flush=True)
        adapter = root / f"adapter-{1e-2}"
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        tools = {}
        started = time.perf_counter()
        tools["ours (base model)"] = [r["acc"] for r in multiple_choice(base, tokenizer, items,
                                                                         a.batch_size)]
        torch.manual_seed(0)
        untrained = peft_model(base_dir, "prefix_tuning", {}).eval()
        tools["ours (prefix as initialised, step 0)"] = [
            r["acc"] for r in multiple_choice(untrained, tokenizer, items, a.batch_size)]
        del untrained
        tuned = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter).eval()
        timings = {}
        for name, fn in (
            ("ours (trained prefix)",
             lambda: [r["acc"] for r in multiple_choice(tuned, tokenizer, items, a.batch_size)]),
            ("plain PEFT (trained prefix)", lambda: plain_peft(tuned, tokenizer, items)),
            ("lm-eval HFLM+peft (trained prefix)",
             lambda: lm_eval_acc(base_dir, adapter, items, a.batch_size)),
        ):
            started = time.perf_counter()
            tools[name] = fn()
            timings[name] = round(time.perf_counter() - started, 1)
            print(f"prefix_check: {name}: acc {sum(tools[name]) / len(items):.4f} "
                  f"({timings[name]} s)", flush=True)
    ours = tools["ours (trained prefix)"]
    result["acc"] = {k: round(sum(v) / len(v), 4) for k, v in tools.items()}
    result["disagreements_with_ours"] = {k: sum(x != y for x, y in zip(v, ours, strict=True))
                                         for k, v in tools.items() if "trained prefix" in k}
    result["seconds"] = timings
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Prefix tuning's forgetting, checked", "",
             f"The general suite's {len(items)} items ({', '.join(SKILLS)}), acc in percent. "
             "The trained prefix: 20 steps at learning rate 1e-2 on data/mixed, as "
             "`make compare` trains it (benchmarks/prefix_check.py).", "",
             "| model, scored by | acc | items scored differently from ours |",
             "|---|---:|---:|"]
    for name, acc in result["acc"].items():
        diff = result["disagreements_with_ours"].get(name, "")
        lines.append(f"| {name} | {100 * acc:.1f} | {diff} |")
    lines += ["", "Probe during training (general-suite subsample, acc in percent, by step):", "",
              "| learning rate | " + " | ".join(f"step {s}" for s in
                                                  result["probe"]["1e-02"]) + " |",
              "|---|" + "---:|" * len(result["probe"]["1e-02"])]
    for lr, points in result["probe"].items():
        lines.append(f"| {lr} | " + " | ".join(f"{100 * v:.1f}" for v in points.values())
                     + " |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"prefix_check -> {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
