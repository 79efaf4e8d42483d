"""Mixing strategies, by name: how many training examples each task gets.

- `proportional`: every trained task's whole training split once (plain concatenation, as
  TRL and torchtune do); weights only select tasks (0 = left out).
- `examples`: total_examples split in proportion to the weights.
- `tokens`: total_tokens split in proportion to the weights, converted to examples with
  each task's mean tokens per example.
- `temperature`: weights multiplied by size^(1/T) (T = 1: proportional to size; large T:
  towards uniform), then total_examples split as in `examples` (Arivazhagan et al. 2019).

Each returns examples per task with weight > 0; caps, the no-upsampling limit and replay
are applied after it, by mix_tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any


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
