"""Stage format_data: turn one task into instruction records with train/val/test splits.

Deps:   this module, stages/common (sources, templates, builtin tasks), the base model's
        tokenizer (models/base: the chat template), the task's data file if it has one.
Params: format_data.seed, format_data.template, format_data.tasks.<task>.
Outs:   <out>/train.jsonl, val.jsonl, test.jsonl, run_info.json. Each record keeps the
        rendered `prompt` and the `completion` apart, plus the raw `instruction` and the
        evaluation `metric`.
Run:    python -m stages.format_data --task sentiment --base models/base \
            --out data/formatted/sentiment

dvc.yaml runs one instance per task (foreach), so adding a task formats only that task.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.artifacts import Timer, atomic_dir, run_info, write_json, write_jsonl
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section
from stages.common.sources import load_pairs, metric_of, parse_task, provenance
from stages.common.templates import TEMPLATES, render, template_hash

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class FormatParams:
    seed: int  # shuffles each task before splitting; changing it re-runs format_data onward
    template: str  # prompt template: "chat" (the tokenizer's) or a named one
    tasks: dict[str, Any]  # task name -> source block (validated by sources.parse_task)

    def __post_init__(self) -> None:
        require(self.template in TEMPLATES, "template",
                f"must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        require(bool(self.tasks), "tasks", "must name at least one task")


def split_pairs(
    pairs: list[tuple[str, str]], sizes: Any, seed: int, task: str
) -> dict[str, list[tuple[str, str]]]:
    """Deduplicate by prompt, shuffle with `seed`, cut test, val, then train (disjoint)."""
    unique = list(dict.fromkeys(pairs))
    seen: set[str] = set()
    unique = [p for p in unique if not (p[0] in seen or seen.add(p[0]))]
    random.Random(seed).shuffle(unique)
    need = sizes.n_test + sizes.n_val + max(sizes.n_train, 1)
    if len(unique) < need:
        raise DataError(
            f"task '{task}' has {len(unique)} distinct examples but its splits need at least "
            f"{need} (n_test + n_val + n_train); lower the sizes in format_data.tasks.{task}"
        )
    test = unique[: sizes.n_test]
    val = unique[sizes.n_test : sizes.n_test + sizes.n_val]
    rest = unique[sizes.n_test + sizes.n_val :]
    train = rest[: sizes.n_train] if sizes.n_train else rest
    return {"train": train, "val": val, "test": test}


def to_records(
    task: str, split: str, pairs: list[tuple[str, str]], template: str, tokenizer: Any, metric: str
) -> list[dict]:
    return [
        {
            "id": f"{task}-{split}-{i}",
            "task": task,
            "instruction": instruction,
            "prompt": render(template, instruction, tokenizer),
            "completion": answer,
            "metric": metric,
        }
        for i, (instruction, answer) in enumerate(pairs)
    ]


def main(task: str, base: Path, out: Path, params_file: Path = Path("params.yaml")) -> None:
    p = build(FormatParams, section(load_params(params_file), "format_data"), "format_data")
    if task not in p.tasks:
        raise ConfigError(f"format_data.tasks has no task '{task}'; tasks: {', '.join(p.tasks)}")
    spec = parse_task(task, p.tasks[task])
    timer = Timer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    splits = split_pairs(load_pairs(spec), spec, p.seed, task)
    metric = metric_of(spec)
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl",
                        to_records(task, split, splits[split], p.template, tokenizer, metric))
        write_json(tmp / "run_info.json", run_info(
            "format_data", {"seed": p.seed, "template": p.template, "task": p.tasks[task]}, timer,
            task=task, source=provenance(spec), metric=metric,
            counts={s: len(v) for s, v in splits.items()},
            template={"name": p.template, "sha256_16": template_hash(p.template, tokenizer)},
        ))
    counts = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    print(f"format_data: {task}: {counts} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--base", type=Path, required=True, help="base model folder (tokenizer)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args.task, args.base, args.out, args.params))


if __name__ == "__main__":
    cli()
