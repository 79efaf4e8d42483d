"""Stage measure_drift: how far the tuned model moved where it was not trained.

Drift is the mean negative log-likelihood, under the tuned model, of the base model's own
greedy answers to the general prompts (nats per answer token), set against the same
answers' NLL under the base itself. A model that kept its general behaviour still finds
the base's answers likely; a model that forgot finds them surprising.

Deps:   this module, forgetful.evaluate.scoring, the base model, the tuned model, the base
        evaluation's samples (its answers to the general prompts).
Params: evaluate.batch_size, evaluate.drift (false: no items, a scores file saying so).
Outs:   <items> (per prompt: answer tokens, NLL under base and tuned: JSON lines) and
        metrics <scores> (token-weighted mean NLL under each model, and drift = tuned - base).
Run:    python -m stages.measure_drift --base models/base --tuned models/merged \
            --base-samples reports/eval/base/samples.jsonl \
            --items reports/eval/drift/items.jsonl --scores reports/eval/drift/scores.json
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.artifacts import Timer, read_json, read_jsonl, write_json, write_jsonl
from forgetful.core.cli import run_stage
from forgetful.core.config import DataError, build, load_params, require, section
from forgetful.evaluate.scoring import encode_apart, load_for_eval, token_loglikelihoods


@dataclass(frozen=True)
class DriftParams:
    batch_size: int  # evaluate.batch_size: answers per forward pass
    drift: bool = True  # evaluate.drift: false writes no items and a scores file saying so

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", "must be a positive integer")


def answers_of(predictions: list[dict]) -> list[dict]:
    """The base's non-empty answers to the general prompts."""
    return [r for r in predictions if r["prediction"].strip()]


def encode_answers(tokenizer: Any, answers: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt tokens, answer tokens), each tokenized on its own as generation saw them."""
    return [encode_apart(tokenizer, r["prompt"], r["prediction"]) for r in answers]


def answer_nll(model: Any, tokenizer: Any, encoded: list, batch_size: int) -> list[float]:
    return [-ll for ll in token_loglikelihoods(model, tokenizer, encoded, batch_size)]


def summarize(items: list[dict]) -> dict[str, Any]:
    tokens = sum(r["tokens"] for r in items)
    base = sum(r["base_nll"] for r in items) / tokens
    tuned = sum(r["tuned_nll"] for r in items) / tokens
    return {"prompts": len(items), "answer_tokens": tokens, "base_nll": round(base, 4),
            "tuned_nll": round(tuned, 4), "drift": round(tuned - base, 4)}


def main(base_dir: Path, tuned_dir: Path, base_samples: Path, items_path: Path,
         scores_path: Path, params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    ev = section(params, "evaluate")
    dp = build(DriftParams, {k: ev[k] for k in ("batch_size", "drift") if k in ev}, "evaluate")
    batch_size = dp.batch_size
    tp = tracking.load(params)
    if not dp.drift:  # nothing loaded or scored; the report says drift was not measured
        write_jsonl(items_path, [])
        write_json(scores_path, {"skipped": "evaluate.drift is false"})
        print("measure_drift: skipped (evaluate.drift: false)")
        return
    answers = answers_of(read_jsonl(base_samples))
    if not answers:
        raise DataError(f"{base_samples} has no non-empty answers to the general prompts; "
                        "re-run evaluate@base")
    timer = Timer()
    base, tokenizer = load_for_eval(base_dir)
    encoded = encode_answers(tokenizer, answers)
    counts = [len(answer) for _, answer in encoded]
    base_nll = answer_nll(base, tokenizer, encoded, batch_size)
    del base
    tuned, _ = load_for_eval(tuned_dir)
    tuned_nll = answer_nll(tuned, tokenizer, encoded, batch_size)
    items = [{"id": r["id"], "instruction": r["instruction"], "answer": r["prediction"],
              "tokens": n, "base_nll": round(b, 5), "tuned_nll": round(t, 5)}
             for r, n, b, t in zip(answers, counts, base_nll, tuned_nll, strict=True)]
    scores = {**summarize(items), "seconds": timer.seconds}
    write_jsonl(items_path, items)
    write_json(scores_path, scores)
    run_id = tracking.find_run(tp, read_json(tuned_dir / "run_info.json").get("adapter_sha256"))
    tracking.log_metrics(tp, run_id, {"drift": scores})
    print(f"measure_drift: base answers cost {scores['base_nll']} nats/token under the base, "
          f"{scores['tuned_nll']} under the tuned model (drift {scores['drift']:+})")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for arg in ("--base", "--tuned", "--base-samples", "--items", "--scores"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a.base, a.tuned, a.base_samples, a.items, a.scores, a.params))


if __name__ == "__main__":
    cli()
