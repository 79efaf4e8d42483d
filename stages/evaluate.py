"""Stage evaluate: score one model on every task's test split and on the general suite.

Deps:   this module, stages/common (scoring, benchmarks), the model folder, data/formatted.
Params: evaluate.*, format_data.template (renders the sample prompts), format_data.tasks
        (which tasks are evaluated).
Outs:   <predictions> (every prompt, target, prediction, correctness; each text
        document's log-likelihood: JSON lines), <samples> (the model's answers to the
        general prompts: shown in the report, and the base's are what drift measures), and
        metrics <scores> (per task score, per benchmark acc / acc_norm, their means, and
        per text corpus the mean NLL per token, perplexity and bits per byte).
Run:    python -m stages.evaluate --name base --model models/base \
            --formatted data/formatted --scores reports/eval/base/scores.json \
            --predictions reports/eval/base/predictions.jsonl \
            --samples reports/eval/base/samples.jsonl

dvc.yaml runs it once for the base model and once for the tuned (merged) model, as two
instances, so the base's scores stay in DVC's cache across experiments that change only
training. Task test splits are scored by greedy generation and the task's metric; the
general suite by multiple-choice log-likelihood, as lm-evaluation-harness does; plain
text by rolling-window log-likelihood, as its `loglikelihood_rolling` does.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.common import tracking
from stages.common.artifacts import Timer, read_json, read_jsonl, write_json, write_jsonl
from stages.common.benchmarks import (
    BENCHMARKS,
    GENERAL_PROMPTS,
    TEXTS,
    FileBenchmark,
    TextBenchmark,
    suite,
    text_suite,
)
from stages.common.cli import run_stage
from stages.common.config import DataError, build, load_params, require, section
from stages.common.scoring import (
    LIKELIHOOD_METRICS,
    METRICS,
    generate,
    generate_uncached,
    label_choice,
    load_for_eval,
    multiple_choice,
    text_loglikelihoods,
)
from stages.common.sources import parse_task
from stages.common.templates import prompt_of


@dataclass(frozen=True)
class EvalParams:
    batch_size: int  # prompts per forward pass
    max_new_tokens: int  # generation budget per answer
    max_test_examples: int  # cap per task test split; 0 = all
    general_suite: tuple[str, ...]  # built-in benchmark names
    files: dict[str, FileBenchmark] = field(default_factory=dict)  # name -> file benchmark
    text_suite: tuple[str, ...] = ("prose",)  # built-in plain-text corpora (loss on text)
    text_files: dict[str, TextBenchmark] = field(default_factory=dict)  # name -> text file
    text_window: int = 256  # tokens per rolling window when scoring plain text
    sample_tokens: int = 32  # answer length for the general prompts (samples, drift)
    lm_eval_tasks: tuple[str, ...] = ()  # lm-evaluation-harness task names (optional dep)
    lm_eval_include: str = ""  # folder of extra lm-eval task YAMLs (e.g. over local files)
    lm_eval_limit: int = 0  # first N documents per lm-eval task (0 = all)

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", "must be a positive integer")
        require(self.max_new_tokens > 0, "max_new_tokens", "must be a positive integer")
        require(self.max_test_examples >= 0, "max_test_examples", "must be >= 0")
        for name in self.general_suite:
            require(name in BENCHMARKS, "general_suite",
                    f"names unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        for name in self.text_suite:
            require(name in TEXTS, "text_suite",
                    f"names unknown text corpus {name!r}; choose from {', '.join(TEXTS)}")
        require(self.text_window > 1, "text_window", "must be an integer > 1 (tokens)")
        require(self.sample_tokens > 0, "sample_tokens", "must be a positive integer")
        require(self.lm_eval_limit >= 0, "lm_eval_limit", "must be >= 0")


def complete(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int,
             p: EvalParams) -> list[str]:
    """Greedy answers; unmerged adapters are decoded without `generate` (see scoring)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return generate_uncached(model, tokenizer, prompts, max_new_tokens)
    return generate(model, tokenizer, prompts, max_new_tokens, p.batch_size)


def score_tasks(model: Any, tokenizer: Any, tests: dict[str, list[dict]],
                p: EvalParams, labels: dict[str, list[str]] | None = None
                ) -> tuple[dict[str, Any], list[dict]]:
    """Generative tasks by greedy answers and their metric; `label_likelihood` tasks by
    the likeliest of their label words (`labels`: task -> every label word)."""
    labels = labels or {}
    generated = [r for task in tests for r in tests[task] if r["metric"] not in LIKELIHOOD_METRICS]
    ranked = [r for task in tests for r in tests[task] if r["metric"] in LIKELIHOOD_METRICS]
    predictions = complete(model, tokenizer, [r["prompt"] for r in generated],
                           p.max_new_tokens, p)
    outcomes = [(r, pred, METRICS[r["metric"]](pred, r["completion"]))
                for r, pred in zip(generated, predictions, strict=True)]
    items = [{"prompt": r["prompt"], "labels": labels[r["task"]]} for r in ranked]
    for r, it, best in zip(ranked, items, label_choice(model, tokenizer, items, p.batch_size),
                           strict=True):
        outcomes.append((r, it["labels"][best], it["labels"][best] == r["completion"]))
    rows, scores = [], {}
    for r, pred, ok in outcomes:
        rows.append({"kind": "task", "task": r["task"], "id": r["id"],
                     "instruction": r["instruction"], "target": r["completion"],
                     "prediction": pred, "correct": ok})
    for task, items_ in tests.items():
        correct = [row["correct"] for row in rows if row["task"] == task]
        scores[task] = {"metric": items_[0]["metric"], "n": len(correct),
                        "score": round(sum(correct) / len(correct), 4)}
    return scores, rows


def score_general(model: Any, tokenizer: Any, p: EvalParams) -> tuple[dict[str, Any], list[dict]]:
    scores, rows = {}, []
    for name, items in suite(p.general_suite, p.files).items():
        results = multiple_choice(model, tokenizer, items, p.batch_size)
        scores[name] = {
            "acc": round(sum(r["acc"] for r in results) / len(results), 4),
            "acc_norm": round(sum(r["acc_norm"] for r in results) / len(results), 4),
            "n": len(results),
        }
        rows += [{"kind": "general", "task": name, "id": f"{name}-{i}",
                  "instruction": it["context"], "target": it["choices"][it["answer"]], **res}
                 for i, (it, res) in enumerate(zip(items, results, strict=True))]
    return scores, rows


def score_texts(model: Any, tokenizer: Any, p: EvalParams
                ) -> tuple[dict[str, Any], list[dict]]:
    """Loss on plain text: per corpus the token-weighted mean NLL (nats per token), its
    perplexity, and bits per byte (lm-eval's definition, comparable across tokenizers)."""
    import math

    scores, rows = {}, []
    for name, docs in text_suite(p.text_suite, p.text_files).items():
        results = text_loglikelihoods(model, tokenizer, docs, p.text_window, p.batch_size)
        nll = -sum(ll for ll, _ in results)
        tokens = sum(n for _, n in results)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        scores[name] = {"nll": round(nll / tokens, 4),
                        "perplexity": round(math.exp(nll / tokens), 3),
                        "bits_per_byte": round(nll / nbytes / math.log(2), 4),
                        "tokens": tokens, "documents": len(docs)}
        rows += [{"kind": "text", "task": name, "id": f"{name}-{i}", "loglikelihood": ll,
                  "tokens": n, "bytes": len(d.encode("utf-8"))}
                 for i, ((ll, n), d) in enumerate(zip(results, docs, strict=True))]
    return scores, rows


def main(name: str, model_dir: Path, formatted: Path, scores_path: Path, predictions_path: Path,
         samples_path: Path, params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = build(EvalParams, section(params, "evaluate"), "evaluate")
    fmt = section(params, "format_data")
    tp = tracking.load(params)
    tests, labels = {}, {}
    for task, block in (fmt.get("tasks") or {}).items():
        if not parse_task(task, block).spec.evaluate:
            continue
        records = read_jsonl(formatted / task / "test.jsonl")
        if not records:
            raise DataError(f"{formatted / task / 'test.jsonl'} is empty; evaluate needs test "
                            f"examples (format_data.tasks.{task}.n_test)")
        tests[task] = records[: p.max_test_examples] if p.max_test_examples else records
        if records[0]["metric"] in LIKELIHOOD_METRICS:  # every label word the task uses
            seen = read_jsonl(formatted / task / "train.jsonl") + records
            labels[task] = sorted({r["completion"] for r in seen})
    timer = Timer()
    model_info = read_json(model_dir / "run_info.json")
    model, tokenizer = load_for_eval(model_dir)
    task_scores, task_rows = score_tasks(model, tokenizer, tests, p, labels)
    general_scores, general_rows = score_general(model, tokenizer, p)
    if p.lm_eval_tasks:
        from stages.common.harness import run_tasks

        harness_scores, harness_rows = run_tasks(model, tokenizer, p.lm_eval_tasks,
                                                 p.lm_eval_include, p.lm_eval_limit,
                                                 p.batch_size)
        general_scores.update(harness_scores)
        general_rows += harness_rows
    text_scores, text_rows = score_texts(model, tokenizer, p)
    prompts = [prompt_of(fmt["template"], q, tokenizer) for q in GENERAL_PROMPTS]
    samples = complete(model, tokenizer, prompts, p.sample_tokens, p)
    sample_rows = [{"kind": "sample", "id": f"sample-{i}", "instruction": q, "prompt": prompt,
                    "prediction": s}
                   for i, (q, prompt, s) in enumerate(zip(GENERAL_PROMPTS, prompts, samples,
                                                          strict=True))]
    scores = {
        "model": name,
        "tasks": task_scores,
        "general": general_scores,
        "general_mean_acc": round(
            sum(s["acc"] for s in general_scores.values()) / max(len(general_scores), 1), 4),
        "text": text_scores,
        "seconds": timer.seconds,
    }
    write_jsonl(predictions_path, task_rows + general_rows + text_rows)
    write_jsonl(samples_path, sample_rows)
    write_json(scores_path, scores)
    run_id = tracking.find_run(tp, model_info.get("adapter_sha256"))
    tracking.log_metrics(tp, run_id, {f"eval.{name}": {k: v for k, v in scores.items()
                                                       if k != "model"}})
    summary = ", ".join(f"{t} {s['score']:.2f}" for t, s in task_scores.items())
    print(f"evaluate {name}: {summary}; general acc {scores['general_mean_acc']:.2f} "
          f"({timer.seconds:.0f}s)")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="label of the model: base or tuned")
    for arg in ("--model", "--formatted", "--scores", "--predictions", "--samples"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.name, a.model, a.formatted, a.scores, a.predictions, a.samples,
                           a.params))


if __name__ == "__main__":
    cli()
