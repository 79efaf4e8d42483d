"""Intervals for what the reports compare: per-item scores of S seeds that share N items.

Every seed of a configuration scores the same test items, so the data are *crossed*: an
item that is hard is hard at every seed, and a seed that trained badly is bad on every
item. The mean change θ̂ (over seeds, over items) then varies with both draws, and with
their interaction. Under the random-effects model y_si = θ + b_s + a_i + e_si:

    Var(θ̂) = σ_b²/S + σ_a²/N + σ_e²/(N·S)          (seeds, items, seed × item)

`estimate` computes it from three mean squares, as in the ANOVA of a two-way crossed
design (Searle, Casella & McCulloch, "Variance Components", 1992, ch. 4; in the language
of generalizability theory, Brennan 2001): the variance of the seed means (σ_b²/S plus the
interaction's share), the variance of the item means (σ_a²/N plus the same share) and the
interaction's mean square, which is counted once. The 95% interval is θ̂ ± t·√V with the
degrees of freedom of Satterthwaite (1946) over those terms, the seed term taken at its
60% upper confidence limit s²·(S−1)/χ²₍S−1, 0.4₎ (for 3 seeds, 1.96 × s²): with 3 seeds
the plain estimate is far below the truth half the time, Satterthwaite's df is then too
large and the interval too narrow (Welch-type intervals are liberal when a component has
2 df). That limit is a calibration, chosen by the simulation in
forgetful/report/coverage.py (reports/stats/coverage.md), which measures the coverage it
gives at 3, 5 and 10 seeds, with seed variance nil or dominant. The interval is
computed, not resampled: the same data give the same interval, with no Monte Carlo error.

Designs, each a list of groups (coefficient, seeds × items matrix), items matched by id:
- one configuration, tuned − base: [(1, Y)];
- two configurations on the same seeds (paired): [(1, Y_A − Y_B)], the base cancels;
- a trend over configurations (a slope over log2 rank): [(1, Σ c_r Y_r)];
- two configurations on disjoint seeds (the A/A guard): [(1, Y_A), (−1, Y_B)].
Items may come in strata with weights (a measure averaging benchmarks): a stratum's items
share its weight equally, and each stratum's item variance counts on its own.
One seed: the interval holds item variance only, for that seed's model.

`nested_bootstrap` is the method this module replaced (a percentile bootstrap that drew
seeds, then items afresh inside each seed), kept to print its intervals beside the new
ones; its coverage is measured in the same simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from forgetful.core.config import DataError

LEVEL = 0.95
POWER = 0.80
# The seed term's variance enters the degrees of freedom at its 60% upper confidence limit
# (the 0.4 quantile of its chi-square): calibrated by reports/stats/coverage.md.
SEED_DF_QUANTILE = 0.4


def matched(runs: Sequence[tuple[str, dict[str, float]]], where: str
            ) -> tuple[list[str], np.ndarray]:
    """Scores of several runs (name, item id -> score) as a runs × items matrix, columns in
    one sorted id order. Every run must score the same ids: a missing item would be read as
    another item's score, so it is an error that names the run and the id."""
    if not runs:
        raise DataError(f"{where}: no runs to compare")
    ids = sorted(runs[0][1])
    if not ids:
        raise DataError(f"{where}: run {runs[0][0]} scored no items")
    first = set(ids)
    for name, scores in runs[1:]:
        if set(scores) != first:
            missing = sorted(first - set(scores)) or sorted(set(scores) - first)
            raise DataError(
                f"{where}: run {name} scored {len(scores)} items, run {runs[0][0]} "
                f"{len(first)}; first item not in both: {missing[0]}. Every seed and "
                "configuration must score the same test items (the same test split and "
                "evaluate params) for items to be matched by id")
    return ids, np.array([[scores[i] for i in ids] for _, scores in runs], dtype=float)


def _t(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df)) if math.isfinite(df) else float(_z(q))


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def _upper(s2: float, df: int) -> float:
    from scipy.stats import chi2

    return s2 * df / float(chi2.ppf(SEED_DF_QUANTILE, df))


def _satterthwaite(terms: list[tuple[float, float]]) -> float:
    """(variance, df) pairs -> Satterthwaite's degrees of freedom of their sum."""
    total = sum(v for v, _ in terms)
    den = sum(v * v / df for v, df in terms if v and df > 0)
    return total * total / den if den > 0 else math.inf


def _weights(n_items: int, strata: Sequence[int] | None, weights: Sequence[float] | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.zeros(n_items, dtype=int) if strata is None else np.asarray(strata, dtype=int)
    k = int(labels.max()) + 1
    w_k = np.ones(k) if weights is None else np.asarray(weights, dtype=float)
    counts = np.bincount(labels, minlength=k)
    if len(w_k) != k or (counts == 0).any():
        raise ValueError("every stratum needs a weight and at least one item")
    w_k = w_k / w_k.sum()
    return labels, w_k, w_k[labels] / counts[labels]


def estimate(groups: Sequence[tuple[float, np.ndarray]], strata: Sequence[int] | None = None,
             weights: Sequence[float] | None = None, level: float = LEVEL,
             bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Σ_g coef_g × (mean over g's seeds of the weighted item mean of Y_g), with its
    interval. `groups`: (coefficient, seeds × items matrix), the columns the same items in
    every group; `strata`: each item's stratum (default one), `weights` the strata's;
    `bounds`: the values the quantity can take (a change in accuracy from a base of 0.9
    lies in [−0.9, 0.1]): the interval is cut to them, which changes no coverage."""
    mats = [(float(c), np.atleast_2d(np.asarray(y, dtype=float))) for c, y in groups]
    n = mats[0][1].shape[1]
    if any(y.shape[1] != n for _, y in mats):
        raise ValueError("every group must hold the same items")
    labels, w_k, w = _weights(n, strata, weights)
    value = sum(c * float((y @ w).mean()) for c, y in mats)
    one_seed = min(y.shape[0] for _, y in mats) < 2
    z = sum(c * y.mean(0) for c, y in mats)
    item_terms, resid_terms, seed_terms, seed_df_terms = [], [], [], []
    for k in range(len(w_k)):
        cols = labels == k
        n_k = int(cols.sum())
        if n_k > 1:
            v = w_k[k] ** 2 * float(z[cols].var(ddof=1)) / n_k
            item_terms.append((v, n_k - 1))
        if one_seed:
            continue
        for c, y in mats:
            s = y.shape[0]
            if n_k < 2:
                continue
            block = y[:, cols]
            r = block - block.mean(0) - block.mean(1, keepdims=True) + block.mean()
            ms = float((r ** 2).sum()) / ((s - 1) * (n_k - 1))
            resid_terms.append((c * c * w_k[k] ** 2 * ms / (n_k * s), (s - 1) * (n_k - 1)))
    item = sum(v for v, _ in item_terms)
    if not one_seed:
        for c, y in mats:
            s = y.shape[0]
            s2 = float((y @ w).var(ddof=1))
            seed_terms.append((c * c * s2 / s, s - 1))
            seed_df_terms.append((c * c * _upper(s2, s - 1) / s, s - 1))
    resid = sum(v for v, _ in resid_terms)
    seed = sum(v for v, _ in seed_terms)
    if one_seed:
        variance, df = item, _satterthwaite(item_terms)
    else:
        # seed means hold σ_b²/S and the interaction's share, item means σ_a²/N and the same
        # share: the interaction is counted once (unbiased; not truncated, which would
        # make the interval wider than its 95% where seed variance is nil). Should it
        # come out zero or below, the larger of the two terms stands in.
        unbiased = seed + item - resid
        variance = unbiased if unbiased > 0 else max(seed, item)
        seed_for_df = sum(v for v, _ in seed_df_terms)
        terms = seed_df_terms + item_terms + resid_terms
        total = max(seed_for_df + item - resid, variance)
        den = sum(v * v / d for v, d in terms if v and d > 0)
        df = total * total / den if den > 0 else math.inf
    se = math.sqrt(variance)
    half = _t(0.5 + level / 2, df) * se if se > 0 else 0.0
    low, high = value - half, value + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    seeds = [y.shape[0] for _, y in mats]
    share = ({"seeds": 0.0, "items": item, "seed × item": 0.0} if one_seed else
             {"seeds": max(seed - resid, 0.0), "items": max(item - resid, 0.0),
              "seed × item": resid})
    return {
        "value": round(value, 4), "ci": [round(low, 4), round(high, 4)],
        "se": round(se, 6), "df": round(df, 1) if math.isfinite(df) else None,
        "seeds": seeds[0] if len(seeds) == 1 else seeds, "items": n,
        "per_seed": [round(float(v), 4) for v in (mats[0][1] @ w)] if len(mats) == 1 else
        [[round(float(v), 4) for v in (y @ w)] for _, y in mats],
        "variance": {k: float(v) for k, v in share.items()},
        "dominant": "items (one seed: seed variance not measured)" if one_seed else
        max(share, key=share.get) if variance > 0 else "none",
        "level": level}


def at_level(result: dict[str, Any], level: float) -> list[float]:
    """The same estimate's interval at another confidence level (its se and df)."""
    df = math.inf if result["df"] is None else result["df"]
    half = _t(0.5 + level / 2, df) * result["se"]
    return [round(result["value"] - half, 4), round(result["value"] + half, 4)]


def verdict(ci: Sequence[float] | None, claimed: str) -> str:
    """supported (the interval lies on the claimed side of zero: "above" or "below"),
    contradicted (on the other side), inconclusive (it covers zero)."""
    if ci is None:
        return "not measured"
    if ci[0] <= 0 <= ci[1]:
        return "inconclusive"
    return "supported" if (ci[0] > 0) == (claimed == "above") else "contradicted"


def direction(ci: Sequence[float]) -> str:
    """higher / lower / inconclusive: a change with no claimed side."""
    return "inconclusive" if ci[0] <= 0 <= ci[1] else ("higher" if ci[0] > 0 else "lower")


def equivalent(result: dict[str, Any], margin: float) -> dict[str, Any]:
    """Two one-sided tests at 5% each (Schuirmann 1987): equivalent within ±margin when the
    90% interval lies inside it; different when the 95% interval excludes zero."""
    ci90 = at_level(result, 0.90)
    inside = -margin < ci90[0] and ci90[1] < margin
    return {"margin": margin, "ci90": ci90, "equivalent": inside,
            "verdict": "equivalent" if inside else
            ("different" if verdict(result["ci"], "above") != "inconclusive" else
             "not shown equivalent")}


def _projected(result: dict[str, Any], seeds: float, items: float) -> tuple[float, float]:
    """Variance and df of the same design with `seeds` per configuration and `items`
    times as many items, from the measured components."""
    v = result["variance"]
    s0 = result["seeds"] if isinstance(result["seeds"], int) else min(result["seeds"])
    n0 = result["items"]
    seed = v["seeds"] * s0 / seeds
    item = v["items"] / items
    inter = v["seed × item"] * s0 / (seeds * items)
    n = n0 * items
    df = _satterthwaite([(seed, seeds - 1), (item, n - 1), (inter, (seeds - 1) * (n - 1))])
    return seed + item + inter, df


def detectable(variance: float, df: float, level: float = LEVEL, power: float = POWER
               ) -> float:
    """The smallest true difference a two-sided test at 1 − level finds with `power`:
    (t₁₋α/₂ + t_power)·se (the usual normal-theory approximation, on df)."""
    return (_t(0.5 + level / 2, df) + _t(power, df)) * math.sqrt(variance)


def power(result: dict[str, Any], min_effect: float, max_seeds: int = 1000,
          max_items: float = 100.0) -> dict[str, Any]:
    """For a comparison: the smallest difference this design detects at 80% power, and
    how many seeds (items as now), or how many times the items (seeds as now), would
    detect `min_effect`; None where that is out of reach (the other source alone is too
    noisy) or past the limits."""
    df = math.inf if result["df"] is None else result["df"]
    out: dict[str, Any] = {"min_effect": min_effect,
                           "detectable": round(detectable(result["se"] ** 2, df), 4)}
    s0 = result["seeds"] if isinstance(result["seeds"], int) else min(result["seeds"])
    if result["se"] == 0:  # nothing varied: no variance to project
        out["seeds_needed"] = out["items_factor_needed"] = None
        out["note"] = "no item or seed varied"
        return out
    if s0 < 2:  # seed variance not measured: no projection over seeds
        out["seeds_needed"] = None
        out["items_factor_needed"] = None
        return out
    out["seeds_needed"] = next((s for s in range(2, max_seeds + 1)
                                if detectable(*_projected(result, s, 1.0)) <= min_effect), None)
    factors = [float(f) for f in np.arange(1.0, max_items + 0.01, 0.25)]
    out["items_factor_needed"] = next((f for f in factors
                                       if detectable(*_projected(result, s0, f)) <= min_effect),
                                      None)
    if out["seeds_needed"] is None and out["items_factor_needed"] is None:
        # neither alone: the fewest seeds (training is the cost) that reach it with more items
        both = next(((s, f) for s in range(s0, 101) for f in factors
                     if detectable(*_projected(result, s, f)) <= min_effect), None)
        out["both_needed"] = None if both is None else {"seeds": both[0], "items_factor": both[1]}
    return out


def needs(p: dict[str, Any]) -> str:
    """What `power` says would detect min_effect, in words: "needs 88 seeds", "needs 4.25×
    the items", "needs 22 seeds with 66× the items", or out of reach."""
    seeds, items, both = p.get("seeds_needed"), p.get("items_factor_needed"), p.get("both_needed")
    if seeds or items:
        return "needs " + " or ".join(x for x in (f"{seeds} seeds" if seeds else "",
                                                  f"{items:g}× the items" if items else "")
                                      if x)
    if both:
        return f"needs {both['seeds']} seeds with {both['items_factor']:g}× the items"
    return "is out of reach of 100 seeds with 100× the items"


def nested_bootstrap(per_seed: Sequence[Sequence[tuple[Sequence[float], float]]],
                     resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The previous method, kept for comparison only: a percentile bootstrap that draws
    seeds with replacement, then items afresh within each set of each drawn seed (as if
    every seed had its own items). `per_seed`: per seed, (item values, weight) per set.
    It cannot reach past the lowest and highest seed mean, and it treats shared items as
    independent: reports/stats/coverage.md measures its coverage."""
    if not per_seed or any(not s for s in per_seed):
        return {"value": None, "ci": None}
    arrays = [[(np.asarray(d, dtype=float), w) for d, w in s] for s in per_seed]
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        picks = rng.integers(0, len(arrays), len(arrays))
        stats[r] = np.mean([sum(w * d[rng.integers(0, len(d), len(d))].mean()
                                for d, w in arrays[k]) for k in picks])
    value = float(np.mean([sum(w * d.mean() for d, w in s) for s in arrays]))
    return {"value": round(value, 4),
            "ci": [round(float(v), 4) for v in np.percentile(stats, [2.5, 97.5])]}


def change_bounds(base: np.ndarray) -> tuple[float, float] | None:
    """The range of a mean change from these base scores when scores lie in [0, 1]
    (None when they do not)."""
    base = np.asarray(base, dtype=float)
    if base.size == 0 or base.min() < 0 or base.max() > 1:
        return None
    return -float(base.mean()), 1.0 - float(base.mean())


def paired_items(base: dict[str, float], tuned: dict[str, float], level: float = LEVEL
                 ) -> dict[str, Any]:
    """One model against another on the same items (item id -> score), one seed: the
    means, the difference and its interval over items (seed variance not measured), and
    its direction ("inconclusive" when the interval covers zero). Items are matched by id;
    the two must score the same ids."""
    ids, y = matched([("base", base), ("tuned", tuned)], "paired items")
    ok = y.min() >= 0 and y.max() <= 1
    result = estimate([(1.0, y[1] - y[0])], level=level,
                      bounds=change_bounds(y[0]) if ok else None)
    return {"n": len(ids), "base": round(float(y[0].mean()), 4),
            "tuned": round(float(y[1].mean()), 4), "difference": result["value"],
            "difference_ci": result["ci"], "se": result["se"], "df": result["df"],
            "verdict": direction(result["ci"])}
