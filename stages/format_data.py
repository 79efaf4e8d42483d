"""Stage format_data: turn one task into instruction records with train/val/test splits.

Deps:   this module, forgetful.data (formatting, sources, formats, templates, hygiene),
        the base model (models/base: its tokenizer's chat template and token counts; for
        a `self_distill` task, its greedy answers), <inputs> (index_inputs' fingerprints of
        this task's files: it re-runs when they change, not when another task's do).
Params: format_data.{seed, template, max_length, overlong, invalid_records,
        max_skipped_share, dedup},
        format_data.tasks.<task>.
Outs:   <out>/train.jsonl, val.jsonl, test.jsonl (a built-in task's from its held-out
        frames and fillings), test_in_template.jsonl (built-in tasks: training frames,
        unseen fillings), run_info.json; metrics <metrics>
        (examples per split, duplicates removed, over-long records dropped or truncated,
        supervised-token share). Each record keeps the rendered `prompt` and the
        `completion` apart; multi-turn chats also keep their `segments` (text, trained).
Run:    python -m stages.format_data --task sentiment --base models/base \
            --out data/formatted/sentiment --metrics reports/metrics/format/sentiment.json

dvc.yaml runs one instance per task (foreach), so adding a task formats only that task.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import atomic_dir, run_info, write_json, write_jsonl
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, DataError, build, load_params, section
from forgetful.data.formatting import IN_TEMPLATE, FormatParams, split, to_records
from forgetful.data.hygiene import deduplicate
from forgetful.data.inputs import verify
from forgetful.data.sources import (
    Answerer,
    heldout_conversations,
    load_conversations,
    metric_of,
    parse_task,
    provenance,
)
from forgetful.data.templates import prompt_of, template_hash


def base_answerer(base: Path, template: str, tokenizer: Any) -> Answerer:
    """Greedy answers of the base model to instructions (source: self_distill), rendered
    with the task template; the model loads only when a task asks."""

    def answer(instructions: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
        from forgetful.evaluate.scoring import generate, load_for_eval

        model, tok = load_for_eval(base)
        prompts = [prompt_of(template, q, tokenizer) for q in instructions]
        return generate(model, tok, prompts, max_new_tokens, batch_size)

    return answer


def main(task_name: str, base: Path, out: Path, metrics_path: Path,
         params_file: Path = Path("params.yaml"), inputs: Path | None = None) -> None:
    p = build(FormatParams, section(load_params(params_file), "format_data"), "format_data")
    if task_name not in p.tasks:
        raise ConfigError(f"format_data.tasks has no task '{task_name}'; "
                          f"tasks: {', '.join(p.tasks)}")
    task = parse_task(task_name, p.tasks[task_name])
    if inputs is not None:
        verify(inputs, Path.cwd())  # the files are those DVC fingerprinted
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    skip = (task.spec.invalid_records or p.invalid_records) == "skip"  # the task's, or all's
    answer = base_answerer(base, p.template, tokenizer)
    loaded, invalid = load_conversations(task, skip, answer=answer)
    if len(invalid) > p.max_skipped_share * (len(loaded) + len(invalid)):
        raise DataError(f"task '{task_name}': {len(invalid)} of {len(loaded) + len(invalid)} "
                        f"records are invalid (over format_data.max_skipped_share="
                        f"{p.max_skipped_share}); the first: {invalid[0]}")
    conversations, exact, near = deduplicate(loaded, p.dedup.ngram, p.dedup.near_threshold)
    heldout = heldout_conversations(task, answer)
    if heldout is not None:
        heldout, exact_h, near_h = deduplicate(heldout, p.dedup.ngram, p.dedup.near_threshold)
        exact, near = exact + exact_h, near + near_h
    splits = split(conversations, task.spec, p.seed, task_name, heldout)
    metric = metric_of(task)
    records, stats = {}, {}
    for name in splits:
        records[name], stats[name] = to_records(task, name, splits[name], p, tokenizer, metric)
        size = len(splits[name])
        if size and stats[name]["dropped"] > p.max_skipped_share * size:
            raise DataError(
                f"task '{task_name}' {name} split: {stats[name]['dropped']} of {size} records "
                f"are over format_data.max_length={p.max_length} tokens (limit "
                f"max_skipped_share={p.max_skipped_share}); raise max_length or set "
                "overlong: truncate")
        wanted = {"train": task.spec.n_train, "val": task.spec.n_val, "test": task.spec.n_test,
                  IN_TEMPLATE: getattr(task.spec, "n_in_template", 0)}
        if wanted[name] and not records[name]:
            raise DataError(f"task '{task_name}' has an empty {name} split")
    train = stats["train"]
    metrics = {
        "examples": {s: len(records[s]) for s in records},
        "invalid_records": len(invalid), "exact_duplicates": exact, "near_duplicates": near,
        "dropped_overlong": sum(s["dropped"] for s in stats.values()),
        "truncated": sum(s["truncated"] for s in stats.values()),
        "train_tokens": train["tokens"],
        "supervised_token_share": round(train["supervised_tokens"] / max(train["tokens"], 1), 4),
    }
    with atomic_dir(out) as tmp:
        for name in records:
            write_jsonl(tmp / f"{name}.jsonl", records[name])
        write_json(tmp / "run_info.json", run_info(
            "format_data", {k: v for k, v in asdict(p).items() if k != "tasks"} |
            {"task": p.tasks[task_name]}, task=task_name, source=provenance(task),
            metric=metric, evaluate=task.spec.evaluate, metrics=metrics,
            template={"name": p.template, "sha256_16": template_hash(p.template, tokenizer)},
        ))
    write_json(metrics_path, metrics)
    dropped = metrics["dropped_overlong"]
    if dropped:
        longest = max(s["longest_dropped"] for s in stats.values())
        print(f"format_data: {task_name}: dropped {dropped} records longer than "
              f"format_data.max_length={p.max_length} tokens (the longest: {longest} tokens); "
              "raise max_length, or set overlong: truncate to keep them shortened")
    counts = ", ".join(f"{s} {len(v)}" for s, v in records.items())
    print(f"format_data: {task_name}: {counts}; duplicates {exact}+{near}, "
          f"supervised share {metrics['supervised_token_share']} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--base", type=Path, required=True, help="base model folder (tokenizer)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--inputs", type=Path, help="index_inputs' JSON of this task's files")
    args = parser.parse_args()
    run_stage(lambda: main(args.task, args.base, args.out, args.metrics, args.params,
                           args.inputs))


if __name__ == "__main__":
    cli()
