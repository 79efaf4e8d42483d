"""Scoring one model on task test splits, the general suite and plain text.

`EvalParams` is the `evaluate:` section of params.yaml. Task test splits are scored by
greedy generation and the task's metric (forgetful.data.metrics), or by label-word
likelihood (classification, with exact-match generation beside it as "answer format");
the general suite by multiple-choice log-likelihood, as lm-evaluation-harness does;
plain text by rolling-window log-likelihood, as its `loglikelihood_rolling` does.
Each function returns (scores, per-item rows); nothing is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetful.core.config import require
from forgetful.data.metrics import LIKELIHOOD_METRICS, METRICS, exact_match
from forgetful.evaluate.benchmarks import (
    BENCHMARKS,
    TEXTS,
    FileBenchmark,
    TextBenchmark,
    suite,
    text_suite,
)
from forgetful.evaluate.heads import selectable
from forgetful.evaluate.scoring import (
    generate,
    generate_prompt_learning,
    label_logliks,
    load_for_eval,
    multiple_choice,
    text_loglikelihoods,
)


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
    # prompts per greedy-decoding batch: each decoded token reads every weight once, however
    # many prompts share the step, so on a CPU 64 cost little more than 16 (the default
    # evaluation's 280 answers: 35.5 s against 46.6 s, the same answers)
    generate_batch: int = 64
    # what else evaluate and measure_drift score beside the test splits and the general
    # suite; the study turns them off (study.evaluate), as it reads none of them
    in_template: bool = True  # built-in tasks' in-template splits (training frames)
    answer_format: bool = True  # label tasks' greedy answers: exactly the label or not
    drift: bool = True  # measure_drift: the base's answers under the tuned model

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", "must be a positive integer")
        require(self.generate_batch > 0, "generate_batch", "must be a positive integer")
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
    """Greedy answers, batched with the KV cache; unmerged prompt-learning adapters (prompt,
    prefix, p-tuning) by our own decoding loop instead of `generate` (see
    generate_prompt_learning)."""
    if not selectable(model):
        return generate_prompt_learning(model, tokenizer, prompts, max_new_tokens,
                                        p.generate_batch)
    return generate(model, tokenizer, prompts, max_new_tokens, p.generate_batch)


def score_tasks(model: Any, tokenizer: Any, tests: dict[str, list[dict]],
                p: EvalParams, labels: dict[str, list[str]] | None = None,
                in_template: dict[str, list[dict]] | None = None, answer_format: bool = True
                ) -> tuple[dict[str, Any], list[dict]]:
    """Generative tasks by greedy answers and their metric; `label_likelihood` tasks
    (classification) by the likeliest of their label words (`labels`: task -> every label
    word); `preference` tasks by whether the chosen answer is likelier than the rejected
    one as the prompt's continuation (preference accuracy); and label tasks, as a second
    column ("answer format"), by whether the greedy answer is exactly the label (unless
    `answer_format` is False). `in_template` (built-in tasks:
    training frames, unseen fillings) is scored the same way, as rows of kind
    "task_in_template"."""
    labels = labels or {}
    records = [(kind, r) for kind, split in (("task", tests), ("task_in_template",
                                                               in_template or {}))
               for task in split for r in split[task]]
    generated = [(k, r) for k, r in records if r["metric"] not in LIKELIHOOD_METRICS]
    ranked = [(k, r) for k, r in records if r["metric"] in LIKELIHOOD_METRICS]
    formatted = [r for k, r in ranked if k == "task" and answer_format
                 and r["metric"] == "label_likelihood"]
    answers = complete(model, tokenizer, [r["prompt"] for _, r in generated] +
                       [r["prompt"] for r in formatted], p.max_new_tokens, p)
    format_answers = dict(zip([r["id"] for r in formatted], answers[len(generated):],
                              strict=True))

    def row(kind: str, r: dict, prediction: str, correct: bool) -> dict:
        return {"kind": kind, "task": r["task"], "id": r["id"], "instruction": r["instruction"],
                "target": r["completion"], "prediction": prediction, "correct": correct}

    rows = [row(k, r, pred, METRICS[r["metric"]](pred, r["completion"]))
            for (k, r), pred in zip(generated, answers[: len(generated)], strict=True)]
    items = [{"prompt": r["prompt"], "labels": [r["completion"], r["rejected"]]}
             if r["metric"] == "preference" else
             {"prompt": r["prompt"], "labels": labels[r["task"]]} for _, r in ranked]
    for (k, r), it, lls in zip(ranked, items, label_logliks(model, tokenizer, items,
                                                             p.batch_size), strict=True):
        best = max(range(len(lls)), key=lls.__getitem__)
        rows.append(row(k, r, it["labels"][best], it["labels"][best] == r["completion"]
                        if r["metric"] != "preference" else best == 0))
        if r["metric"] == "preference":  # the summed log-likelihoods of both answers
            rows[-1] |= {"loglik_chosen": round(lls[0], 5), "loglik_rejected": round(lls[1], 5)}
        if r["id"] in format_answers and k == "task":
            answer = format_answers[r["id"]]
            rows[-1] |= {"answer": answer, "answer_format": exact_match(answer, r["completion"])}

    def mean(values: list) -> float:
        return round(sum(values) / len(values), 4)

    scores = {}
    for task, items_ in tests.items():
        mine = [x for x in rows if x["task"] == task and x["kind"] == "task"]
        scores[task] = {"metric": items_[0]["metric"], "n": len(mine),
                        "score": mean([x["correct"] for x in mine])}
        if "answer_format" in mine[0]:
            scores[task]["answer_format"] = mean([x["answer_format"] for x in mine])
        if "loglik_chosen" in mine[0]:  # preference: the mean log-likelihood gap, in nats
            scores[task]["likelihood_gap"] = mean([x["loglik_chosen"] - x["loglik_rejected"]
                                                   for x in mine])
        seen = [x["correct"] for x in rows if x["task"] == task and x["kind"] ==
                "task_in_template"]
        if seen:
            scores[task]["in_template"] = {"n": len(seen), "score": mean(seen)}
    return scores, rows


def score_general(model: Any, tokenizer: Any, p: EvalParams) -> tuple[dict[str, Any], list[dict]]:
    scores, rows = {}, []
    for name, items in suite(p.general_suite, p.files).items():
        results = multiple_choice(model, tokenizer, items, p.batch_size)
        scores[name] = {
            "acc": round(sum(r["acc"] for r in results) / len(results), 4),
            "acc_norm": round(sum(r["acc_norm"] for r in results) / len(results), 4),
            "n": len(results),
            # what guessing scores: a skill near it tells nothing about forgetting
            "chance": round(sum(1 / len(it["choices"]) for it in items) / len(items), 4),
        }
        rows += [{"kind": "general", "task": name, "id": f"{name}-{i}",
                  "instruction": it["context"], "target": it["choices"][it["answer"]], **res}
                 for i, (it, res) in enumerate(zip(items, results, strict=True))]
    return scores, rows


def score_items(model: Any, tokenizer: Any, tasks: dict[str, list[dict]],
                labels: dict[str, list[str]], general: dict[str, list[tuple[str, dict]]],
                p: EvalParams) -> dict[str, dict[str, float]]:
    """benchmark -> item id -> 1/0 on exactly the items given: tasks' records scored as
    score_tasks does (answer format and in-template off), general benchmarks' (id, item)
    pairs by multiple-choice acc. What the remedy's candidates are scored with, on the
    selection split and, for the chosen one, on the test items."""
    out: dict[str, dict[str, float]] = {}
    if tasks:
        _, rows = score_tasks(model, tokenizer, tasks, p, labels, None, answer_format=False)
        for r in rows:
            out.setdefault(r["task"], {})[r["id"]] = float(r["correct"])
    for name, pairs in general.items():
        results = multiple_choice(model, tokenizer, [it for _, it in pairs], p.batch_size)
        out[name] = {i: float(res["acc"]) for (i, _), res in zip(pairs, results, strict=True)}
    return out


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


def score_file(model_dir: str | Path, path: str | Path, format: str = "mc_jsonl",
               labels: str = "", batch_size: int = 16) -> dict[str, Any]:
    """A model folder (merged model, or an unmerged adapter whose run_info.json names its
    base) scored on a multiple-choice file, as the pipeline scores evaluate.files: acc,
    acc_norm, the item count, and per item its id and 1/0 for both (for
    forgetful.report.stats.paired_items)."""
    from forgetful.core.config import build
    from forgetful.evaluate.benchmarks import load_file_benchmark

    spec = build(FileBenchmark, {"format": format, "path": str(path), "labels": labels},
                 "score_file")
    items = load_file_benchmark(spec)
    model, tokenizer = load_for_eval(model_dir)
    results = multiple_choice(model, tokenizer, items, batch_size)
    return {"acc": round(sum(r["acc"] for r in results) / len(results), 4),
            "acc_norm": round(sum(r["acc_norm"] for r in results) / len(results), 4),
            "n": len(results), "items": [{"id": i, **r} for i, r in enumerate(results)]}
