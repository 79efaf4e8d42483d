"""The learning–forgetting study: many configurations, several seeds, one verdict per claim.

A run (one configuration, one seed) gives, per test item, the base model's score and the
tuned model's. Four measures of a run, each a weighted mean of per-item changes
(tuned − base) over item sets:
- learning: the trained tasks' held-out test splits, each task weighted equally (the
  report's "mean gain");
- general: the pooled general suite (every item equally);
- untrained: the evaluated tasks that were not trained, each equally;
- elsewhere (the forgetting axis): ½ general + ½ untrained — what happened to what was
  not trained, the general suite and the untrained tasks counting alike.

Every seed scores the same items, so a configuration's runs are a seeds × items table
(items matched by id, an error if they differ) and its interval is
forgetful.report.stats.estimate's, which counts seed, item and seed × item variance.
Comparisons use the same tables: `paired` (two configurations at the same seeds: tuned_A −
tuned_B item by item, the base cancels), `trend` (a slope over configurations, e.g. on
log2 rank), `unpaired` (one configuration over two disjoint seed sets: the A/A guard).
`previous` gives the interval of the method this replaced, for the report's side-by-side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgetful.core.config import DataError
from forgetful.report import stats
from forgetful.report.forgetting import item_scores

MEASURES = ("learning", "general", "untrained", "elsewhere")


@dataclass(frozen=True)
class Run:
    """One configuration at one seed, as the study collected it."""

    config: str  # e.g. "method=lora"
    sweep: str  # method, rank, replay or aa
    seed: int  # k: train_adapter.seed + k, mix_tasks.seed + k
    base: dict[str, dict[str, float]]  # benchmark -> item id -> score (item_scores)
    tuned: dict[str, dict[str, float]]
    kinds: dict[str, str]  # benchmark -> trained task / untrained task / general
    info: dict[str, Any]  # trainable params, seconds, learning rate, name, code...


def make_run(config: str, sweep: str, seed: int, base_rows: list[dict], tuned_rows: list[dict],
             forgetting: dict[str, Any], info: dict[str, Any]) -> Run:
    kinds = {r["benchmark"]: r["kind"] for r in forgetting["rows"]}
    return Run(config, sweep, seed, item_scores(base_rows), item_scores(tuned_rows), kinds, info)


def item_sets(run: Run, measure: str) -> list[tuple[list[str], float]]:
    """The measure's item sets (the benchmarks each pools) with their weights."""
    trained = sorted(n for n, k in run.kinds.items() if k == "trained task")
    untrained = sorted(n for n, k in run.kinds.items() if k == "untrained task")
    general = sorted(n for n, k in run.kinds.items() if k == "general")  # above chance
    if measure == "learning":
        parts = [([t], 1 / len(trained)) for t in trained] if trained else []
    elif measure == "general":
        parts = [(general, 1.0)]
    elif measure == "untrained":
        parts = [([t], 1 / len(untrained)) for t in untrained] if untrained else []
    elif measure == "elsewhere":
        parts = [(general, 0.5)] + [([t], 0.5 / len(untrained)) for t in untrained]
    else:
        raise ValueError(f"unknown measure {measure!r}; one of {', '.join(MEASURES)}")
    parts = [(names, w) for names, w in parts if any(run.base.get(n) for n in names)]
    total = sum(w for _, w in parts)  # a part with no items leaves the rest the weight
    return [(names, w / total) for names, w in parts]


def changes(run: Run, measure: str, other: Run | None = None) -> dict[str, float]:
    """Per item of the measure's sets ("<set>\\t<benchmark>\\t<id>"): tuned − base, or
    with `other`, tuned − other's tuned."""
    ref = other.tuned if other is not None else run.base
    out = {}
    for k, (names, _) in enumerate(item_sets(run, measure)):
        for name in names:
            for i, score in run.tuned.get(name, {}).items():
                out[f"{k:03d}\t{name}\t{i}"] = score - ref[name][i] if i in ref.get(name, {}) \
                    else math.nan
    return out


def table(rows: list[tuple[str, dict[str, float]]], weights: list[float], where: str
          ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Rows (name, changes) as a seeds × items matrix, items matched by id, with each
    item's set and the sets' weights."""
    ids, y = stats.matched(rows, where)
    if np.isnan(y).any():
        row, col = map(int, np.argwhere(np.isnan(y))[0])
        raise DataError(f"{where}: {rows[row][0]} has no base (or other) score for "
                              f"{ids[col].split(chr(9), 1)[1]}")
    return y, np.array([int(i.split("\t", 1)[0]) for i in ids]), weights


def _weights(run: Run, measure: str) -> list[float]:
    return [w for _, w in item_sets(run, measure)]


def measure(runs: list[Run], name: str) -> dict[str, Any]:
    """A configuration's runs on one measure: the mean change and its interval."""
    if not runs or not item_sets(runs[0], name):
        return {"value": None, "ci": None, "seeds": len(runs)}
    y, strata, w = table([(f"{r.config} seed {r.seed}", changes(r, name)) for r in runs],
                         _weights(runs[0], name), f"{runs[0].config}, {name}")
    return stats.estimate([(1.0, y)], strata, w)


def _by_seed(runs: list[Run], config: str) -> dict[int, Run]:
    return {r.seed: r for r in runs if r.config == config}


def paired(runs: list[Run], a: str, b: str, name: str) -> dict[str, Any]:
    """Configuration a − configuration b on one measure, at the seeds both have."""
    ra, rb = _by_seed(runs, a), _by_seed(runs, b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        return {"a": a, "b": b, "measure": name, "value": None, "ci": None, "seeds": 0}
    y, strata, w = table([(f"{a} − {b} seed {s}", changes(ra[s], name, rb[s])) for s in seeds],
                         _weights(ra[seeds[0]], name), f"{a} − {b}, {name}")
    result = stats.estimate([(1.0, y)], strata, w)
    old = stats.nested_bootstrap([_sets(ra[s], name, rb[s]) for s in seeds])
    return {"a": a, "b": b, "measure": name, **result, "previous": old}


def trend(runs: list[Run], xs: dict[float, str], name: str) -> dict[str, Any]:
    """The least-squares slope of the measure's change on x (e.g. log2 rank) over the
    configurations `xs` (x -> configuration), per seed and item: Σ c_x·change_x with
    c_x = (x − x̄)/Σ(x − x̄)², at the seeds every configuration has."""
    by = {x: _by_seed(runs, c) for x, c in xs.items()}
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    mean = sum(xs) / len(xs)
    coef = {x: (x - mean) / sum((v - mean) ** 2 for v in xs) for x in xs}
    rows = []
    for s in seeds:
        per = {x: changes(by[x][s], name) for x in xs}
        keys = set.intersection(*(set(p) for p in per.values()))
        rows.append((f"seed {s}", {k: sum(coef[x] * per[x][k] for x in xs) for k in keys}))
    if not rows:
        return {"value": None, "ci": None, "seeds": 0, "measure": name}
    first = by[next(iter(xs))][seeds[0]]
    y, strata, w = table(rows, _weights(first, name), f"slope of {name}")
    return {"measure": name, "x": {str(x): c for x, c in xs.items()},
            **stats.estimate([(1.0, y)], strata, w)}


def unpaired(runs: list[Run], a: str, b: str, name: str) -> dict[str, Any]:
    """Configuration a − configuration b on one measure when they ran at different seeds
    (the same items): a two-group crossed design."""
    ra, rb = sorted(_by_seed(runs, a).values(), key=lambda r: r.seed), \
        sorted(_by_seed(runs, b).values(), key=lambda r: r.seed)
    if not ra or not rb:
        return {"a": a, "b": b, "measure": name, "value": None, "ci": None, "seeds": 0}
    y, strata, w = table([(f"{r.config} seed {r.seed}", changes(r, name)) for r in ra + rb],
                         _weights(ra[0], name), f"{a} vs {b}, {name}")
    return {"a": a, "b": b, "measure": name,
            **stats.estimate([(1.0, y[:len(ra)]), (-1.0, y[len(ra):])], strata, w)}


def _sets(run: Run, name: str, other: Run | None = None) -> list[tuple[list[float], float]]:
    """The previous method's input: per set, the item changes and the set's weight."""
    ch = changes(run, name, other)
    return [([v for key, v in sorted(ch.items()) if int(key.split("\t", 1)[0]) == k], w)
            for k, (_, w) in enumerate(item_sets(run, name))]


def previous(runs: list[Run], name: str) -> dict[str, Any]:
    """The previous method's interval for a configuration's measure (reports only)."""
    return stats.nested_bootstrap([_sets(r, name) for r in runs])


def at_floor(runs: list[Run]) -> list[str]:
    """The untrained tasks on which every run scored no item at all: there the change is
    minus the base score, the most it can fall, so configurations at the floor are not
    told apart by that task (only by the general suite)."""
    tasks = [name for name, kind in runs[0].kinds.items() if kind == "untrained task"]
    return [t for t in tasks if all(not any(r.tuned[t].values()) for r in runs)]


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per configuration: each measure with its interval (and the previous method's for
    elsewhere), the untrained tasks it scored nothing on, and the runs' info averaged."""
    out: dict[str, dict[str, Any]] = {}
    for config in dict.fromkeys(r.config for r in runs):
        mine = sorted((r for r in runs if r.config == config), key=lambda r: r.seed)
        row: dict[str, Any] = {"config": config, "sweep": mine[0].sweep, "seeds": len(mine),
                               "runs": [{"seed": r.seed, **{k: v for k, v in r.info.items()
                                                            if isinstance(v, str)}}
                                        for r in mine], "info": {}, "floor": at_floor(mine)}
        for key in mine[0].info:  # numbers: the mean over seeds
            values = [r.info.get(key) for r in mine]
            if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                row["info"][key] = round(sum(values) / len(values), 6)
        for name in MEASURES:
            row[name] = measure(mine, name)
        row["elsewhere"]["previous"] = previous(mine, "elsewhere")
        out[config] = row
    return out


def frontier(points: dict[str, dict[str, Any]], configs: list[str]) -> list[str]:
    """The configurations no other one beats on both learning and elsewhere (higher is
    better on both): the Pareto frontier."""
    xy = {c: (points[c]["learning"]["value"], points[c]["elsewhere"]["value"])
          for c in configs if points[c]["learning"]["value"] is not None
          and points[c]["elsewhere"]["value"] is not None}
    return [c for c, (x, y) in xy.items()
            if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in xy.values())]
