"""How often a 95% interval covers the truth, measured on simulated data shaped like ours.

Each simulated run is a crossed design: N binary test items scored by the base model once
and by the tuned model at S seeds. Item i has a base probability q_i ~ Beta(0.7, 0.7)
(U-shaped: most items easy or hard, as in our suites) and is scored right by the base with
probability q_i; at seed s the tuned model scores it right with probability
clip(q_i + δ_i + b_s + g_si, 0, 1), where δ_i ~ N(δ, 0.15²) is the item's own change
(items gain and lose), b_s ~ N(0, spread²) the seed's effect and g_si ~ N(0, 0.08²) the
seed × item interaction. The true difference is E[tuned − base] over items and seeds,
computed from 4 million draws of the same model (exactly 0 when δ = 0, by symmetry).

Designs (`DESIGNS`): "tuned − base" (one configuration against its base, the grid the
reports' single-configuration rows use); "A − B, paired" (two configurations at the same
seeds, as the study's comparisons); "A/A, disjoint seeds" (one configuration over two
disjoint seed sets, the false-positive guard); "two strata ½ + ½" (a measure averaging an
816-item and a 40-item set with equal weight, as "elsewhere" does). `coverage` runs a cell
`runs` times and counts how often each method's interval holds the truth: the new one
(forgetful.report.stats.estimate) and the one it replaced (the nested percentile
bootstrap, vectorised here with the same draws: a resampled seed's item mean is a
multinomial draw over its values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetful.report.stats import estimate

ITEM_SD = 0.15  # δ_i: the items' own changes
INTERACTION_SD = 0.08  # g_si: seed × item
BETA = 0.7  # q_i ~ Beta(BETA, BETA)


@dataclass(frozen=True)
class Cell:
    design: str
    seeds: int
    items: int
    spread: float  # SD of the seed effect, a fraction (0.05 = 5 points)
    delta: float  # the mean item change, a fraction


def _tuned(q: np.ndarray, delta: float, spread: float, seeds: int, rng: Any) -> np.ndarray:
    n = len(q)
    p = (q[None] + rng.normal(delta, ITEM_SD, n)[None] + rng.normal(0, spread, seeds)[:, None]
         + rng.normal(0, INTERACTION_SD, (seeds, n)))
    return (rng.random((seeds, n)) < np.clip(p, 0, 1)).astype(float)


def truth(delta: float, spread: float, draws: int = 4_000_000, seed: int = 12345) -> float:
    """E[tuned − base] of one configuration under the model (0 when delta is 0)."""
    if delta == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    q = rng.beta(BETA, BETA, draws)
    p = np.clip(q + rng.normal(delta, ITEM_SD, draws) + rng.normal(0, spread, draws)
                + rng.normal(0, INTERACTION_SD, draws), 0, 1)
    return float(p.mean() - q.mean())


def simulate(cell: Cell, rng: Any) -> tuple[list[tuple[float, np.ndarray]], np.ndarray,
                                            list[float]]:
    """One simulated data set of the cell's design: (groups, strata, weights) as
    stats.estimate takes them. In the A − B designs B has no mean change (δ = 0)."""
    if cell.design == "two strata ½ + ½":
        sizes = [cell.items, 40]
        q = rng.beta(BETA, BETA, sum(sizes))
        base = (rng.random(len(q)) < q).astype(float)
        y = _tuned(q, cell.delta, cell.spread, cell.seeds, rng) - base[None]
        return [(1.0, y)], np.repeat([0, 1], sizes), [0.5, 0.5]
    q = rng.beta(BETA, BETA, cell.items)
    one = np.zeros(cell.items, dtype=int)
    if cell.design == "tuned − base":
        base = (rng.random(cell.items) < q).astype(float)
        return [(1.0, _tuned(q, cell.delta, cell.spread, cell.seeds, rng) - base[None])], \
            one, [1.0]
    a = _tuned(q, cell.delta, cell.spread, cell.seeds, rng)
    b = _tuned(q, 0.0, cell.spread, cell.seeds, rng)
    if cell.design == "A − B, paired":
        return [(1.0, a - b)], one, [1.0]
    if cell.design == "A/A, disjoint seeds":
        return [(1.0, a), (-1.0, b)], one, [1.0]
    raise ValueError(f"unknown design {cell.design!r}; one of {', '.join(DESIGNS)}")


DESIGNS = ("tuned − base", "A − B, paired", "A/A, disjoint seeds", "two strata ½ + ½")


def nested_interval(groups: list[tuple[float, np.ndarray]], strata: np.ndarray,
                    weights: list[float], resamples: int, rng: Any) -> list[float]:
    """stats.nested_bootstrap's interval, vectorised: seeds drawn with replacement, then
    each drawn seed's items afresh (a multinomial draw over that seed's item values)."""
    total = np.zeros(resamples)
    for coef, y in groups:
        s = y.shape[0]
        picks = rng.integers(0, s, (resamples, s))
        stat = np.zeros((resamples, s))
        for k, w in enumerate(weights):
            block = y[:, strata == k]
            values = np.unique(block)
            probs = np.stack([(block == v).mean(1) for v in values], axis=1)  # seeds × values
            counts = rng.multinomial(block.shape[1], probs[picks])
            stat += w * (counts @ values) / block.shape[1]
        total += coef * stat.mean(1)
    return [float(v) for v in np.percentile(total, [2.5, 97.5])]


Method = Callable[[list[tuple[float, np.ndarray]], np.ndarray, list[float], Any], list[float]]


def new_method(groups: list, strata: np.ndarray, weights: list[float], rng: Any) -> list[float]:
    return estimate(groups, strata, weights)["ci"]


def old_method(groups: list, strata: np.ndarray, weights: list[float], rng: Any) -> list[float]:
    return nested_interval(groups, strata, weights, 1000, rng)


def coverage(cell: Cell, runs: int, methods: dict[str, Method], seed: int = 0,
             truths: dict[tuple[float, float], float] | None = None) -> dict[str, Any]:
    """How often each method's interval covers the truth over `runs` simulated data sets
    (the same data for every method), with the Monte Carlo standard error of a rate."""
    rng = np.random.default_rng(seed)
    truths = {} if truths is None else truths
    key = (cell.delta, cell.spread)
    if key not in truths:
        truths[key] = truth(cell.delta, cell.spread)
    target = 0.0 if cell.design in ("A − B, paired", "A/A, disjoint seeds") and \
        cell.delta == 0 else truths[key]
    if cell.design in ("A − B, paired", "A/A, disjoint seeds") and cell.delta != 0:
        target = truths[key] - truth(0.0, cell.spread)  # B's mean change is 0
    hits = dict.fromkeys(methods, 0)
    for _ in range(runs):
        groups, strata, weights = simulate(cell, rng)
        for name, method in methods.items():
            low, high = method(groups, strata, weights, rng)
            hits[name] += low <= target <= high
    rates = {name: h / runs for name, h in hits.items()}
    return {"cell": cell.__dict__, "truth": round(target, 4), "runs": runs,
            "coverage": rates,
            "mc_se": {name: round(float(np.sqrt(r * (1 - r) / runs)), 4)
                      for name, r in rates.items()}}
