"""Stage evaluate: score one model on every task's test split and on the general suite.

Deps:   this module, forgetful.evaluate (evaluator, scoring, benchmarks), the model folder,
        data/eval (gather_eval: the evaluated tasks' test splits, nothing else), <inputs>
        (index_inputs' fingerprints of the files in evaluate.files / text_files /
        lm_eval_include, not all of data/raw).
Params: evaluate.*, format_data.template (renders the sample prompts).
Outs:   <predictions> (every prompt, target, prediction, correctness; each text
        document's log-likelihood: JSON lines), <samples> (the model's answers to the
        general prompts: shown in the report, and the base's are what drift measures), and
        metrics <scores> (per task score, per benchmark acc / acc_norm, their means, and
        per text corpus the mean NLL per token, perplexity and bits per byte).
Run:    python -m stages.evaluate --name base --model models/base \
            --eval-sets data/eval --scores reports/eval/base/scores.json \
            --predictions reports/eval/base/predictions.jsonl \
            --samples reports/eval/base/samples.jsonl

dvc.yaml runs it once for the base model and once for the tuned (merged) model, as two
instances, so the base's scores stay in DVC's cache across experiments that change only
training. Task test splits (and built-in tasks' in-template splits) are scored by greedy
generation and the task's metric, classification by label likelihood; the
general suite by multiple-choice log-likelihood, as lm-evaluation-harness does; plain
text by rolling-window log-likelihood, as its `loglikelihood_rolling` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from forgetful.core import tracking
from forgetful.core.artifacts import Timer, dvc_md5, read_json, write_json, write_jsonl
from forgetful.core.cli import run_stage
from forgetful.core.config import NonFinite, build, load_params, section
from forgetful.data.eval_sets import EvalSets, read_eval_sets
from forgetful.data.inputs import verify
from forgetful.data.templates import prompt_of
from forgetful.evaluate.benchmarks import GENERAL_PROMPTS, suite
from forgetful.evaluate.evaluator import (
    EvalParams,
    complete,
    score_general,
    score_tasks,
    score_texts,
)
from forgetful.evaluate.scoring import load_for_eval


def evaluation_datasets(eval_sets: Path, sets: EvalSets, p: EvalParams) -> list[dict]:
    """What was scored, as MLflow dataset inputs: the evaluated tasks' test splits (DVC's
    md5 of data/eval) and each benchmark file."""
    found = [{"name": "task test splits", "digest": dvc_md5(eval_sets), "source": str(eval_sets),
              "context": "evaluation",
              "profile": {t: len(r) for t, r in sets.tests.items()}}]
    for bench, spec in p.files.items():
        found.append({"name": bench, "digest": dvc_md5(spec.path), "source": spec.path,
                      "context": "evaluation", "profile": {"limit": spec.limit}})
    return found


def main(name: str, model_dir: Path, eval_sets: Path, scores_path: Path, predictions_path: Path,
         samples_path: Path, params_file: Path = Path("params.yaml"),
         inputs: Path | None = None) -> None:
    try:
        score(name, model_dir, eval_sets, scores_path, predictions_path, samples_path,
              params_file, inputs)
    except NonFinite as err:  # which model: the base, or the merged one
        raise NonFinite(f"{model_dir}: {err}; nothing was written") from err


def score(name: str, model_dir: Path, eval_sets: Path, scores_path: Path,
          predictions_path: Path, samples_path: Path, params_file: Path,
          inputs: Path | None) -> None:
    """Score the model and write the three outs (main, with the model named on failure)."""
    params = load_params(params_file)
    p = build(EvalParams, section(params, "evaluate"), "evaluate")
    template = section(params, "format_data")["template"]
    tp = tracking.load(params)
    if inputs is not None:
        verify(inputs, Path.cwd())  # the benchmark files are those DVC fingerprinted
    suite(p.general_suite, p.files)  # a malformed benchmark file fails now, before any model
    sets = read_eval_sets(eval_sets, p.max_test_examples)
    timer = Timer()
    model_info = read_json(model_dir / "run_info.json")
    model, tokenizer = load_for_eval(model_dir)
    task_scores, task_rows = score_tasks(model, tokenizer, sets.tests, p, sets.labels,
                                         sets.in_template if p.in_template else None,
                                         answer_format=p.answer_format)
    general_scores, general_rows = score_general(model, tokenizer, p)
    if p.lm_eval_tasks:
        from forgetful.evaluate.harness import run_tasks

        harness_scores, harness_rows = run_tasks(model, tokenizer, p.lm_eval_tasks,
                                                 p.lm_eval_include, p.lm_eval_limit,
                                                 p.batch_size)
        general_scores.update(harness_scores)
        general_rows += harness_rows
    text_scores, text_rows = score_texts(model, tokenizer, p)
    prompts = [prompt_of(template, q, tokenizer) for q in GENERAL_PROMPTS]
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
    run_id = tracking.find_run(tp, model_info.get("adapter_sha256"))  # None for the base
    # the scores belong to the model scored: the merged one where it was logged
    # (tracking.log_merged), else the adapter it came from
    model_id = (tracking.find_model(tp, run_id, "merged")
                or tracking.find_model(tp, run_id, "adapter"))
    tracking.log_metrics(tp, run_id, {f"eval.{name}": {k: v for k, v in scores.items()
                                                       if k != "model"}}, model_id=model_id)
    if run_id:  # the digests hash data/eval and the benchmark files: only when logged
        tracking.log_datasets(tp, run_id, evaluation_datasets(eval_sets, sets, p))
    summary = ", ".join(f"{t} {s['score']:.2f}" for t, s in task_scores.items())
    print(f"evaluate {name}: {summary}; general acc {scores['general_mean_acc']:.2f} "
          f"({timer.seconds:.0f}s)")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="label of the model: base or tuned")
    for arg in ("--model", "--eval-sets", "--scores", "--predictions", "--samples"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--inputs", type=Path, help="index_inputs' JSON of the benchmark files")
    a = parser.parse_args()
    run_stage(lambda: main(a.name, a.model, a.eval_sets, a.scores, a.predictions, a.samples,
                           a.params, a.inputs))


if __name__ == "__main__":
    cli()
