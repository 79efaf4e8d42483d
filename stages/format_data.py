"""Stage format_data: turn one task into instruction records with train/val/test splits.

Deps:   this module, stages/common (sources, formats, templates, hygiene, builtin tasks),
        the base model's tokenizer (models/base: chat template, token counts), data/raw.
Params: format_data.{seed, template, max_length, overlong, invalid_records,
        max_skipped_share, dedup},
        format_data.tasks.<task>.
Outs:   <out>/train.jsonl, val.jsonl, test.jsonl, run_info.json; metrics <metrics>
        (examples per split, duplicates removed, over-long records dropped or truncated,
        supervised-token share). Each record keeps the rendered `prompt` and the
        `completion` apart; multi-turn chats also keep their `segments` (text, trained).
Run:    python -m stages.format_data --task sentiment --base models/base \
            --out data/formatted/sentiment --metrics reports/metrics/format/sentiment.json

dvc.yaml runs one instance per task (foreach), so adding a task formats only that task.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.common.artifacts import atomic_dir, run_info, write_json, write_jsonl
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section
from stages.common.hygiene import deduplicate
from stages.common.sources import Task, load_conversations, metric_of, parse_task, provenance
from stages.common.templates import TEMPLATES, render, template_hash

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DedupParams:
    ngram: int = 3  # word n-grams compared for near duplicates
    near_threshold: float = 0.9  # Jaccard similarity at or above which a record is dropped

    def __post_init__(self) -> None:
        require(self.ngram > 0, "ngram", "must be a positive integer")
        require(0 < self.near_threshold <= 1, "near_threshold", "must be in (0, 1]")


@dataclass(frozen=True)
class FormatParams:
    seed: int  # shuffles each task before splitting; changing it re-runs format_data onward
    template: str  # prompt template: "chat" (the tokenizer's), chatml, plain, alpaca
    tasks: dict[str, Any]  # task name -> source block (validated by sources.parse_task)
    max_length: int = 256  # tokens per record (prompt + completion + end-of-turn)
    overlong: Literal["drop", "truncate"] = "drop"  # truncate shortens the last user message
    invalid_records: Literal["fail", "skip"] = "fail"  # a malformed record: stop, or skip it
    max_skipped_share: float = 0.1  # fail when more than this share is skipped or dropped
    dedup: DedupParams = field(default_factory=DedupParams)

    def __post_init__(self) -> None:
        require(self.template in TEMPLATES, "template",
                f"must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        require(bool(self.tasks), "tasks", "must name at least one task")
        require(self.max_length > 8, "max_length", "must be > 8 tokens")
        require(0 <= self.max_skipped_share <= 1, "max_skipped_share", "must be in [0, 1]")


def split(conversations: list[Any], spec: Any, seed: int, task: str) -> dict[str, list[Any]]:
    """Shuffle with `seed` and cut test, val, then train: disjoint by construction."""
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    need = spec.n_test + spec.n_val + max(spec.n_train, 1)
    if len(order) < need:
        raise DataError(
            f"task '{task}' has {len(order)} distinct examples but its splits need at least "
            f"{need} (n_test + n_val + n_train); lower the sizes in format_data.tasks.{task}"
        )
    cuts = {"test": order[: spec.n_test],
            "val": order[spec.n_test : spec.n_test + spec.n_val]}
    rest = order[spec.n_test + spec.n_val :]
    cuts["train"] = rest[: spec.n_train] if spec.n_train else rest
    return {name: [conversations[i] for i in idx] for name, idx in cuts.items()}


def count_tokens(segments: list[dict], tokenizer: Any) -> tuple[int, int]:
    """(all tokens, supervised tokens) exactly as training will see them."""
    total = supervised = 0
    for s in segments:
        n = len(tokenizer(s["text"], add_special_tokens=False).input_ids) + s["assistant"]
        total += n
        supervised += n if s["train"] else 0
    return total, supervised


def fit(messages: list[dict], p: FormatParams, tokenizer: Any,
        train_turns: str) -> tuple[list[dict] | None, str]:
    """Segments within max_length: as they are, truncated, or None (dropped)."""
    for attempt in range(4):
        segments = [{"text": t, "assistant": a, "train": tr}
                    for t, a, tr in render(p.template, messages, tokenizer, train_turns)]
        total, _ = count_tokens(segments, tokenizer)
        if total <= p.max_length:
            return segments, "truncated" if attempt else "kept"
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        ids = tokenizer(messages[last_user]["content"], add_special_tokens=False).input_ids
        keep = len(ids) - (total - p.max_length) - 2
        if p.overlong == "drop" or keep < 1:
            return None, "dropped"
        messages = [*messages[:last_user],
                    {"role": "user", "content": tokenizer.decode(ids[:keep])},
                    *messages[last_user + 1 :]]
    return None, "dropped"


def to_records(task: Task, split_name: str, conversations: list[list[dict]], p: FormatParams,
               tokenizer: Any, metric: str) -> tuple[list[dict], dict[str, int]]:
    records, stats = [], {"dropped": 0, "truncated": 0, "tokens": 0, "supervised_tokens": 0}
    for i, messages in enumerate(conversations):
        segments, status = fit(messages, p, tokenizer, task.spec.train_turns)
        if segments is None:
            stats["dropped"] += 1
            continue
        stats["truncated"] += status == "truncated"
        total, supervised = count_tokens(segments, tokenizer)
        stats["tokens"] += total
        stats["supervised_tokens"] += supervised
        last = max(j for j, s in enumerate(segments) if s["assistant"])
        prompt = "".join(s["text"] + (tokenizer.eos_token if s["assistant"] else "")
                         for s in segments[:last])
        record = {"id": f"{task.name}-{split_name}-{i}", "task": task.name,
                  "instruction": [m for m in messages if m["role"] == "user"][-1]["content"],
                  "prompt": prompt, "completion": segments[last]["text"], "metric": metric}
        if sum(s["assistant"] for s in segments) > 1:
            record["segments"] = segments
        records.append(record)
    return records, stats


def main(task_name: str, base: Path, out: Path, metrics_path: Path,
         params_file: Path = Path("params.yaml")) -> None:
    p = build(FormatParams, section(load_params(params_file), "format_data"), "format_data")
    if task_name not in p.tasks:
        raise ConfigError(f"format_data.tasks has no task '{task_name}'; "
                          f"tasks: {', '.join(p.tasks)}")
    task = parse_task(task_name, p.tasks[task_name])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    loaded, invalid = load_conversations(task, p.invalid_records == "skip")
    if len(invalid) > p.max_skipped_share * (len(loaded) + len(invalid)):
        raise DataError(f"task '{task_name}': {len(invalid)} of {len(loaded) + len(invalid)} "
                        f"records are invalid (over format_data.max_skipped_share="
                        f"{p.max_skipped_share}); the first: {invalid[0]}")
    conversations, exact, near = deduplicate(loaded, p.dedup.ngram, p.dedup.near_threshold)
    splits = split(conversations, task.spec, p.seed, task_name)
    metric = metric_of(task)
    records, stats = {}, {}
    for name in SPLITS:
        records[name], stats[name] = to_records(task, name, splits[name], p, tokenizer, metric)
        size = len(splits[name])
        if size and stats[name]["dropped"] > p.max_skipped_share * size:
            raise DataError(
                f"task '{task_name}' {name} split: {stats[name]['dropped']} of {size} records "
                f"are over format_data.max_length={p.max_length} tokens (limit "
                f"max_skipped_share={p.max_skipped_share}); raise max_length or set "
                "overlong: truncate")
        wanted = {"train": task.spec.n_train, "val": task.spec.n_val, "test": task.spec.n_test}
        if wanted[name] and not records[name]:
            raise DataError(f"task '{task_name}' has an empty {name} split")
    train = stats["train"]
    metrics = {
        "examples": {s: len(records[s]) for s in SPLITS},
        "invalid_records": len(invalid), "exact_duplicates": exact, "near_duplicates": near,
        "dropped_overlong": sum(s["dropped"] for s in stats.values()),
        "truncated": sum(s["truncated"] for s in stats.values()),
        "train_tokens": train["tokens"],
        "supervised_token_share": round(train["supervised_tokens"] / max(train["tokens"], 1), 4),
    }
    with atomic_dir(out) as tmp:
        for name in SPLITS:
            write_jsonl(tmp / f"{name}.jsonl", records[name])
        write_json(tmp / "run_info.json", run_info(
            "format_data", {k: v for k, v in asdict(p).items() if k != "tasks"} |
            {"task": p.tasks[task_name]}, task=task_name, source=provenance(task),
            metric=metric, evaluate=task.spec.evaluate, metrics=metrics,
            template={"name": p.template, "sha256_16": template_hash(p.template, tokenizer)},
        ))
    write_json(metrics_path, metrics)
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
    args = parser.parse_args()
    run_stage(lambda: main(args.task, args.base, args.out, args.metrics, args.params))


if __name__ == "__main__":
    cli()
