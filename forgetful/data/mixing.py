"""Mixing strategies, by name: how many training examples each task gets.

- `proportional`: every trained task's whole training split once (plain concatenation, as
  TRL and torchtune do); weights only select tasks (0 = left out).
- `examples`: total_examples split in proportion to the weights.
- `tokens`: total_tokens split in proportion to the weights, converted to examples with
  each task's mean tokens per example.
- `temperature`: weights multiplied by size^(1/T) (T = 1: proportional to size; large T:
  towards uniform), then total_examples split as in `examples` (Arivazhagan et al. 2019).

Each returns examples per task with weight > 0; caps, the no-upsampling limit and replay
are applied after it, by `plan`. `mix` draws the seeded mixture; `MixParams` is the
`mix_tasks:` section of params.yaml.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forgetful.core.config import require


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
    """n records: shuffled passes over all of them, as many as needed (down- or up-sampling)."""
    out: list[dict] = []
    while len(out) < n:
        batch = records[:]
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


def _trained(p: Any, sizes: dict[str, int]) -> dict[str, float]:
    return {t: w for t, w in p.weights.items() if w > 0 and t in sizes}


def _proportional(p: Any, sizes: dict[str, int], mean_tokens: dict[str, float]) -> dict[str, int]:
    return {t: sizes[t] for t in _trained(p, sizes)}


def _examples(p: Any, sizes: dict[str, int], mean_tokens: dict[str, float]) -> dict[str, int]:
    return allocate(_trained(p, sizes), p.total_examples)


def _tokens(p: Any, sizes: dict[str, int], mean_tokens: dict[str, float]) -> dict[str, int]:
    weights = _trained(p, sizes)
    norm = sum(weights.values())
    return {t: max(1, round(p.total_tokens * w / norm / mean_tokens[t]))
            for t, w in weights.items()}


def _temperature(p: Any, sizes: dict[str, int], mean_tokens: dict[str, float]) -> dict[str, int]:
    weights = {t: w * sizes[t] ** (1 / p.temperature) for t, w in _trained(p, sizes).items()}
    return allocate(weights, p.total_examples)


STRATEGIES: dict[str, Callable[[Any, dict[str, int], dict[str, float]], dict[str, int]]] = {
    "proportional": _proportional,
    "examples": _examples,
    "tokens": _tokens,
    "temperature": _temperature,
}


@dataclass(frozen=True)
class ReplayParams:
    task: str = ""  # a formatted task mixed in as replay data ("" = none)
    ratio: float = 0.0  # its share of the final mixture, in examples; it replaces that share
    # of the other tasks (the total stays), so with and without replay train equally long

    def __post_init__(self) -> None:
        require(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        require(bool(self.task) or self.ratio == 0, "task", "must name a task when ratio > 0")


@dataclass(frozen=True)
class ContaminationParams:
    ngram: int = 13  # word n-gram length (13 as in GPT-3 and lm-evaluation-harness)
    item_threshold: float = 0.8  # share of an item's n-grams seen in training to flag it
    max_share: float = 0.01  # fail when more of any evaluation set than this is flagged
    min_words: int = 4  # an item shorter than ngram is checked whole only from this length

    def __post_init__(self) -> None:
        require(self.ngram > 0, "ngram", "must be a positive integer")
        require(0 < self.item_threshold <= 1, "item_threshold", "must be in (0, 1]")
        require(0 <= self.max_share <= 1, "max_share", "must be in [0, 1]")
        require(self.min_words > 0, "min_words", "must be a positive integer")


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
    if p.replay.task and p.replay.ratio > 0:
        # Replay replaces a share of the same total, so a run with replay trains for the same
        # steps on the same number of examples as one without: only the composition differs.
        total = sum(counts.values())
        replay = round(p.replay.ratio * total)
        counts = allocate({t: float(n) for t, n in counts.items()}, total - replay)
        counts[p.replay.task] = replay
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
               "replay": {"task": p.replay.task, "ratio": p.replay.ratio,
                          "replaces": "a share of the same total (the other tasks scaled down)"},
               "tasks": composition}
    return mixed_train, mixed_val, summary
