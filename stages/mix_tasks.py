"""Stage mix_tasks: a seeded, weighted mixture of the formatted training splits.

Deps:   this module, data/formatted (every task's splits), the base tokenizer (token counts).
Params: mix_tasks.* (seed, weights, total_examples, val_per_task).
Outs:   <out>/train.jsonl, val.jsonl, run_info.json; metrics <metrics> (the composition:
        examples, tokens, share and effective epochs per task).
Run:    python -m stages.mix_tasks --formatted data/formatted --base models/base \
            --out data/mixed --metrics reports/metrics/mix.json

Each task with weight w gets round(total_examples * w / sum(w)) training examples, drawn
without replacement while the task has enough and repeated (up-sampled) past that. A task
with weight 0 is left out of training but still evaluated (that is how forgetting shows).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.artifacts import Timer, atomic_dir, read_jsonl, run_info, write_json, write_jsonl
from stages.common.cli import run_stage
from stages.common.config import ConfigError, DataError, build, load_params, require, section


@dataclass(frozen=True)
class MixParams:
    seed: int  # sampling seed; changing it re-runs mix_tasks onward
    weights: dict[str, float]  # task -> relative weight in examples (0 = not trained)
    total_examples: int  # training examples in the mixture
    val_per_task: int  # validation examples kept per trained task

    def __post_init__(self) -> None:
        require(bool(self.weights), "weights", "must give at least one task a weight")
        for task, w in self.weights.items():
            require(w >= 0, f"weights.{task}", f"must be >= 0, got {w}")
        require(sum(self.weights.values()) > 0, "weights", "must give some task a weight > 0")
        require(self.total_examples > 0, "total_examples", "must be a positive integer")
        require(self.val_per_task >= 0, "val_per_task", "must be >= 0")


def allocate(weights: dict[str, float], total: int) -> dict[str, int]:
    """Examples per task, proportional to weight, summing exactly to `total`."""
    active = {t: w for t, w in weights.items() if w > 0}
    norm = sum(active.values())
    exact = {t: total * w / norm for t, w in active.items()}
    counts = {t: int(v) for t, v in exact.items()}
    # Largest remainders get the leftover examples, ties broken by name for determinism.
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[: total - sum(counts.values())]:
        counts[t] += 1
    return counts


def sample(records: list[dict], n: int, rng: random.Random) -> list[dict]:
    """n records: a shuffled pass over all of them, repeated as often as needed."""
    out: list[dict] = []
    while len(out) < n:
        batch = records[:]
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


def mix(
    train: dict[str, list[dict]], val: dict[str, list[dict]], p: MixParams, count_tokens: Any
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    rng = random.Random(p.seed)
    counts = allocate(p.weights, p.total_examples)
    mixed_train: list[dict] = []
    mixed_val: list[dict] = []
    composition: dict[str, Any] = {}
    for task, n in sorted(counts.items()):
        chosen = sample(train[task], n, rng)
        mixed_train.extend(chosen)
        mixed_val.extend(val[task][: p.val_per_task])
        tokens = sum(count_tokens(r) for r in chosen)
        composition[task] = {
            "weight": p.weights[task],
            "examples": n,
            "share": round(n / p.total_examples, 4),
            "tokens": tokens,
            "available": len(train[task]),
            "effective_epochs": round(n / len(train[task]), 3),
        }
    rng.shuffle(mixed_train)
    total_tokens = sum(c["tokens"] for c in composition.values())
    for c in composition.values():
        c["token_share"] = round(c["tokens"] / total_tokens, 4)
    summary = {"examples": len(mixed_train), "tokens": total_tokens, "tasks": composition}
    return mixed_train, mixed_val, summary


def main(formatted: Path, base: Path, out: Path, metrics: Path,
         params_file: Path = Path("params.yaml")) -> None:
    p = build(MixParams, section(load_params(params_file), "mix_tasks"), "mix_tasks")
    available = sorted(d.name for d in formatted.iterdir() if (d / "train.jsonl").exists())
    for task in p.weights:
        if task not in available:
            raise ConfigError(f"mix_tasks.weights.{task} names a task that format_data did not "
                              f"produce; formatted tasks: {', '.join(available)}")
    timer = Timer()
    active = [t for t, w in p.weights.items() if w > 0]
    train = {t: read_jsonl(formatted / t / "train.jsonl") for t in active}
    val = {t: read_jsonl(formatted / t / "val.jsonl") for t in active}
    for task, records in train.items():
        if not records:
            raise DataError(f"{formatted / task / 'train.jsonl'} is empty; task '{task}' has "
                            "weight > 0 but no training examples")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)

    def count_tokens(r: dict) -> int:
        # Same count as training: prompt, completion, and the end-of-sequence token.
        return len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False).input_ids) + 1

    mixed_train, mixed_val, summary = mix(train, val, p, count_tokens)
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", mixed_train)
        write_jsonl(tmp / "val.jsonl", mixed_val)
        write_json(tmp / "run_info.json", run_info("mix_tasks", p, timer, composition=summary))
    write_json(metrics, summary)
    print(f"mix_tasks: {summary['examples']} examples, {summary['tokens']} tokens -> {out}")


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
