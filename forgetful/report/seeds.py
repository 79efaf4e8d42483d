"""Many seeds, one verdict: per benchmark the mean change over seeds, with an interval that
counts both sources of noise.

One run's paired bootstrap says how much the verdict would move with other test items;
it says nothing about another training seed or another draw of the mixture. With the
per-item scores of S runs that differ only in those seeds, `hierarchical_bootstrap`
resamples seeds (with replacement), then items within each drawn seed, and takes the mean
over the drawn seeds of the mean tuned − base difference: its percentile interval holds
seed variance and item variance together (the two-level bootstrap of Davison & Hinkley,
1997, §3.8). With 3 seeds the seed level is coarse: the interval is honest about it by
being wide. The verdict is "inconclusive" when the interval covers zero.
"""

from __future__ import annotations

from typing import Any

from forgetful.report.forgetting import SUITE, item_scores, pct
from forgetful.report.study import measure_bootstrap


def hierarchical_bootstrap(runs: list[tuple[dict[str, float], dict[str, float]]],
                           resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """`runs`: per seed, (base, tuned) item id -> score. The mean over seeds of the mean
    difference, each seed's mean, their standard deviation, and the 95% interval (the
    study's two-level bootstrap with one set of items per seed)."""
    import numpy as np

    diffs = []
    for base, tuned in runs:
        ids = sorted(set(base) & set(tuned))
        diffs.append([tuned[i] - base[i] for i in ids])
    if not diffs or any(len(d) == 0 for d in diffs):
        raise ValueError("every run needs items scored both before and after")
    result = measure_bootstrap([[(d, 1.0)] for d in diffs], resamples, seed)
    means = np.array([np.mean(d) for d in diffs])
    ci = result["ci"]
    return {"seeds": len(diffs), "n": int(np.mean([len(d) for d in diffs])),
            "difference": result["value"], "per_seed": result["per_seed"],
            "seed_sd": round(float(means.std(ddof=1)), 4) if len(means) > 1 else 0.0,
            "difference_ci": ci,
            "verdict": "inconclusive" if ci[0] <= 0 <= ci[1] else
            ("higher" if ci[0] > 0 else "lower")}


def aggregate(runs: list[dict[str, Any]], resamples: int = 1000, seed: int = 0
              ) -> list[dict[str, Any]]:
    """`runs`: per seed {"seeds": {...}, "forgetting": forgetting.json, "base": rows,
    "tuned": rows} (rows as in predictions.jsonl). One row per benchmark of the first
    run's report (its kind decides what counts as kept), the pooled general suite, and the
    tasks' second columns, each with base and tuned means over seeds and the interval."""
    items = [(item_scores(r["base"]), item_scores(r["tuned"])) for r in runs]
    first = runs[0]["forgetting"]
    counted = [row["benchmark"] for row in first["rows"] if row["kind"] == "general"]
    for base, tuned in items:
        for scores in (base, tuned):
            scores[SUITE] = {i: v for name in counted for i, v in scores.get(name, {}).items()}
    named = [(row["benchmark"], row["kind"]) for row in first["rows"]] + \
        [(row["benchmark"], row["column"]) for row in first.get("task_details", [])]
    out = []
    for name, kind in named:
        pairs = [(b.get(name, {}), t.get(name, {})) for b, t in items]
        if any(not b or not t for b, t in pairs):
            continue
        result = hierarchical_bootstrap(pairs, resamples, seed)
        out.append({"benchmark": name, "kind": kind, **result,
                    "base": round(sum(sum(b.values()) / len(b) for b, _ in pairs) / len(pairs), 4),
                    "tuned": round(sum(sum(t.values()) / len(t) for _, t in pairs) / len(pairs),
                                   4)})
    return out


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], resamples: int) -> str:
    seeds = ", ".join(f"train {r['seeds']['train']} / mixture {r['seeds']['mix']}" for r in runs)
    suite = next((r for r in rows if r["benchmark"] == SUITE), None)
    lines = ["# Forgetting over seeds", "",
             f"{len(runs)} runs of the default pipeline that differ only in the training seed "
             f"and the mixture seed ({seeds}); the base model, the test items and every other "
             "param are the same. Per benchmark: the base score, the tuned score and the change "
             "averaged over the runs, the change in each run, the standard deviation of the "
             "change across runs, and a 95% interval from a two-level bootstrap (seeds, then "
             f"items within each seed; {resamples} resamples) that holds both seed and item "
             "variance. Inconclusive: the interval covers zero.", ""]
    if suite:
        ci = suite["difference_ci"]
        lines += [f"General suite ({suite['n']} items): change **{100 * suite['difference']:+.1f}"
                  f" points** [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] over {suite['seeds']} "
                  f"seeds — {suite['verdict']}.", ""]
    lines += ["| benchmark | kind | items | base | tuned (mean) | change (mean) [95% CI] | "
              "per seed | seed SD | verdict |", "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        ci = r["difference_ci"]
        lines.append(
            f"| {r['benchmark']} | {r['kind']} | {r['n']} | {pct(r['base'])} | "
            f"{pct(r['tuned'])} | {100 * r['difference']:+.1f} [{100 * ci[0]:+.1f}, "
            f"{100 * ci[1]:+.1f}] | {', '.join(f'{100 * d:+.1f}' for d in r['per_seed'])} | "
            f"{100 * r['seed_sd']:.1f} | {r['verdict']} |")
    lines += ["", "Scores in percent, changes in points. The single-run report of the last "
              "run is reports/forgetting.md; each run's per-item scores are in "
              "reports/seeds/.", ""]
    return "\n".join(lines)
