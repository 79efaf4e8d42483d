"""Stage mix_tasks: a seeded mixture of the formatted training splits, checked for contamination.

Deps:   this module, stages/common (mixing, hygiene, benchmarks), data/formatted, the base
        tokenizer (token counts).
Params: mix_tasks.* (seed, strategy, weights, totals, temperature, caps, upsample, replay,
        val_per_task, contamination), evaluate.general_suite (checked for contamination).
Outs:   <out>/train.jsonl, val.jsonl, run_info.json; metrics <metrics>: the composition
        (examples, tokens, shares and effective epochs per task) and the contamination of
        every evaluation set by the training mixture.
Run:    python -m stages.mix_tasks --formatted data/formatted --base models/base \
            --out data/mixed --metrics reports/metrics/mix.json

A task with weight 0 (or absent from `weights`) is not trained but is still evaluated:
that is how forgetting shows. The replay task, if any, is added on top at `replay.ratio`
of the final mixture. The stage fails, writing nothing, when any evaluation set (every
evaluated task's test split, every general benchmark) is contaminated above the limit.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stages.common.artifacts import (
    atomic_dir,
    read_json,
    read_jsonl,
    run_info,
    write_json,
    write_jsonl,
)
from stages.common.batches import encode
from stages.common.benchmarks import BENCHMARKS, FileBenchmark, question_of, suite
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section
from stages.common.hygiene import contamination
from stages.common.mixing import STRATEGIES, sample


@dataclass(frozen=True)
class ReplayParams:
    task: str = ""  # a formatted task mixed in as replay data ("" = none)
    ratio: float = 0.0  # its share of the final mixture, in examples

    def __post_init__(self) -> None:
        require(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        require(bool(self.task) or self.ratio == 0, "task", "must name a task when ratio > 0")


@dataclass(frozen=True)
class ContaminationParams:
    ngram: int = 13  # word n-gram length (13 as in GPT-3 and lm-evaluation-harness)
    item_threshold: float = 0.8  # share of an item's n-grams seen in training to flag it
    max_share: float = 0.01  # fail when more of any evaluation set than this is flagged

    def __post_init__(self) -> None:
        require(self.ngram > 0, "ngram", "must be a positive integer")
        require(0 < self.item_threshold <= 1, "item_threshold", "must be in (0, 1]")
        require(0 <= self.max_share <= 1, "max_share", "must be in [0, 1]")


@dataclass(frozen=True)
class MixParams:
    seed: int  # sampling seed; changing it re-runs mix_tasks onward
    weights: dict[str, float]  # task -> relative weight (0 = evaluated, not trained)
    strategy: str = "examples"  # proportional, examples, tokens, temperature
    total_examples: int = 0  # examples in the mixture (strategies examples, temperature)
    total_tokens: int = 0  # tokens in the mixture (strategy tokens)
    temperature: float = 1.0  # strategy temperature: weight x size^(1/T)
    caps: dict[str, int] = field(default_factory=dict)  # task -> most examples it may get
    upsample: bool = True  # repeat a task's examples when it is asked for more than it has
    replay: ReplayParams = field(default_factory=ReplayParams)
    val_per_task: int = 16  # validation examples kept per trained task
    contamination: ContaminationParams = field(default_factory=ContaminationParams)

    def __post_init__(self) -> None:
        require(self.strategy in STRATEGIES, "strategy",
                f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for task, w in self.weights.items():
            require(w >= 0, f"weights.{task}", f"must be >= 0, got {w}")
        require(sum(self.weights.values()) > 0, "weights", "must give some task a weight > 0")
        if self.strategy in ("examples", "temperature"):
            require(self.total_examples > 0, "total_examples",
                    f"must be a positive integer for strategy {self.strategy}")
        if self.strategy == "tokens":
            require(self.total_tokens > 0, "total_tokens",
                    "must be a positive integer for strategy tokens")
        require(self.temperature > 0, "temperature", "must be > 0")
        for task, cap in self.caps.items():
            require(cap > 0, f"caps.{task}", f"must be a positive integer, got {cap}")
        require(self.val_per_task >= 0, "val_per_task", "must be >= 0")


def plan(p: MixParams, sizes: dict[str, int], mean_tokens: dict[str, float]) -> dict[str, int]:
    """Examples per trained task: the strategy, then caps, then the no-upsampling limit."""
    counts = STRATEGIES[p.strategy](p, sizes, mean_tokens)
    for task, n in counts.items():
        n = min(n, p.caps.get(task, n))
        counts[task] = n if p.upsample else min(n, sizes[task])
    if p.replay.task:
        counts[p.replay.task] = round(p.replay.ratio / (1 - p.replay.ratio) * sum(counts.values()))
    return {t: n for t, n in counts.items() if n > 0}


def mix(train: dict[str, list[dict]], val: dict[str, list[dict]], p: MixParams,
        n_tokens: Any) -> tuple[list[dict], list[dict], dict[str, Any]]:
    rng = random.Random(p.seed)
    sizes = {t: len(r) for t, r in train.items()}
    mean = {t: sum(map(n_tokens, r)) / len(r) for t, r in train.items()}
    counts = plan(p, {t: s for t, s in sizes.items() if t != p.replay.task}, mean)
    mixed_train: list[dict] = []
    mixed_val: list[dict] = []
    composition: dict[str, Any] = {}
    for task, n in sorted(counts.items()):
        chosen = sample(train[task], n, rng)
        mixed_train.extend(chosen)
        mixed_val.extend(val[task][: p.val_per_task])
        composition[task] = {
            "weight": p.weights.get(task, 0.0), "replay": task == p.replay.task,
            "examples": n, "tokens": sum(map(n_tokens, chosen)), "available": sizes[task],
            "effective_epochs": round(n / sizes[task], 3),
        }
    rng.shuffle(mixed_train)
    total_tokens = sum(c["tokens"] for c in composition.values())
    for c in composition.values():
        c["share"] = round(c["examples"] / len(mixed_train), 4)
        c["token_share"] = round(c["tokens"] / total_tokens, 4)
    summary = {"strategy": p.strategy, "examples": len(mixed_train), "tokens": total_tokens,
               "tasks": composition}
    return mixed_train, mixed_val, summary


def evaluation_sets(formatted: Path, tasks: dict[str, dict], names: list[str],
                    files: dict[str, FileBenchmark]) -> dict[str, list[str]]:
    """Every text the pipeline evaluates on: task test questions and benchmark questions."""
    sets = {f"task:{t}": [r["instruction"] for r in read_jsonl(formatted / t / "test.jsonl")]
            for t, info in tasks.items() if info.get("evaluate", True)}
    for name in names:
        if name not in BENCHMARKS:
            raise ConfigError(f"evaluate.general_suite names unknown benchmark {name!r}; "
                              f"choose from {', '.join(BENCHMARKS)}")
    for name, items in suite(names, files).items():
        sets[f"general:{name}"] = [question_of(item) for item in items]
    return sets


def main(formatted: Path, base: Path, out: Path, metrics: Path,
         params_file: Path = Path("params.yaml")) -> None:
    params = load_params(params_file)
    p = build(MixParams, section(params, "mix_tasks"), "mix_tasks")
    evaluation = section(params, "evaluate")
    names = list(evaluation.get("general_suite") or [])
    files = {name: build(FileBenchmark, spec, f"evaluate.files.{name}")
             for name, spec in (evaluation.get("files") or {}).items()}
    infos = {d.name: read_json(d / "run_info.json") for d in sorted(formatted.iterdir())
             if (d / "run_info.json").exists()}
    for task in [*p.weights, *p.caps, *([p.replay.task] if p.replay.task else [])]:
        if task not in infos:
            raise ConfigError(f"mix_tasks names task '{task}', which format_data did not "
                              f"produce; formatted tasks: {', '.join(infos)}")
    active = [t for t, w in p.weights.items() if w > 0] + ([p.replay.task] if p.replay.task else [])
    train = {t: read_jsonl(formatted / t / "train.jsonl") for t in active}
    val = {t: read_jsonl(formatted / t / "val.jsonl") for t in active}
    for task, records in train.items():
        if not records:
            raise DataError(f"{formatted / task / 'train.jsonl'} is empty; task '{task}' is "
                            "in the mixture but has no training examples")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    mixed_train, mixed_val, summary = mix(train, val, p,
                                          lambda r: len(encode(r, tokenizer)["input_ids"]))
    checked = contamination(
        [f"{r['instruction']} {r['completion']}" for r in mixed_train],
        evaluation_sets(formatted, infos, names, files),
        p.contamination.ngram, p.contamination.item_threshold)
    summary["contamination"] = checked
    worst = max(checked.items(), key=lambda kv: kv[1]["share"])
    if worst[1]["share"] > p.contamination.max_share:
        raise DataError(
            f"evaluation set {worst[0]}: {worst[1]['contaminated']} of {worst[1]['items']} items "
            f"overlap the training mixture (share {worst[1]['share']} > mix_tasks.contamination."
            f"max_share={p.contamination.max_share}), e.g. {worst[1]['examples'][:1]}; remove "
            "them from the training data or raise the limit")
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", mixed_train)
        write_jsonl(tmp / "val.jsonl", mixed_val)
        write_json(tmp / "run_info.json", run_info("mix_tasks", asdict(p),
                                                   composition=summary))
    write_json(metrics, summary)
    shares = ", ".join(f"{t} {c['share']:.2f}" for t, c in summary["tasks"].items())
    print(f"mix_tasks: {summary['examples']} examples ({shares}), {summary['tokens']} tokens; "
          f"worst contamination {worst[0]} {worst[1]['share']} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatted", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args.formatted, args.base, args.out, args.metrics, args.params))


if __name__ == "__main__":
    cli()
