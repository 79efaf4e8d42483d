"""Many seeds, one verdict: per benchmark the mean change over seeds, with an interval that
counts both sources of noise.

One run's interval says how much the verdict would move with other test items; it says
nothing about another training seed or another draw of the mixture. The S runs here differ
only in those seeds and score the same test items: a crossed design, whose interval
(forgetful.report.stats.estimate) counts seed, item and seed × item variance, and names
the one that dominates. Beside it, the previous method's interval (a percentile bootstrap
that drew items afresh within each seed) and verdict; for each inconclusive row, the
smallest change the design detects at 80% power and the seeds that would detect
report.min_effect.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from forgetful.core.config import DataError
from forgetful.report import stats
from forgetful.report.forgetting import SUITE, item_scores, pct


def across_seeds(runs: list[tuple[dict[str, float], dict[str, float]]], where: str,
                 min_effect: float = 0.03) -> dict[str, Any]:
    """`runs`: per seed, (base, tuned) item id -> score. The mean over seeds of the mean
    difference, each seed's, their spread, the interval and its verdict, the previous
    method's, and the power of an inconclusive one."""
    diffs = []
    for k, (base, tuned) in enumerate(runs):
        if set(base) != set(tuned):
            raise DataError(f"{where}: seed {k} scored {len(base)} items before and "
                            f"{len(tuned)} after: every item needs both scores")
        if not base:
            raise DataError(f"{where}: seed {k} scored no items")
        diffs.append((f"seed {k}", {i: tuned[i] - base[i] for i in base}))
    _, y = stats.matched(diffs, where)
    base_scores = np.array([v for _, v in sorted(runs[0][0].items())])
    scores_ok = all(0 <= v <= 1 for b, t in runs for v in (*b.values(), *t.values()))
    result = stats.estimate([(1.0, y)], bounds=stats.change_bounds(base_scores)
                            if scores_ok and all(b == runs[0][0] for b, _ in runs) else None)
    means = y.mean(1)
    old = stats.nested_bootstrap([[(row, 1.0)] for row in y])
    out = {"seeds": len(runs), "n": y.shape[1], "difference": result["value"],
           "per_seed": result["per_seed"] if len(runs) > 1 else [result["value"]],
           "seed_sd": round(float(means.std(ddof=1)), 4) if len(runs) > 1 else 0.0,
           "difference_ci": result["ci"], "verdict": stats.direction(result["ci"]),
           "dominant": result["dominant"], "df": result["df"], "se": result["se"],
           "variance": result["variance"],
           "previous": {"ci": old["ci"], "verdict": stats.direction(old["ci"])}}
    if out["verdict"] == "inconclusive":
        out["power"] = stats.power(result, min_effect)
    return out


def aggregate(runs: list[dict[str, Any]], min_effect: float = 0.03) -> list[dict[str, Any]]:
    """`runs`: per seed {"seeds": {...}, "forgetting": forgetting.json, "base": rows,
    "tuned": rows} (rows as in predictions.jsonl). One row per benchmark of the first
    run's report (its kind decides what counts as kept), the pooled general suite, and the
    tasks' second columns, each with base and tuned means over seeds and the interval."""
    items = [(item_scores(r["base"]), item_scores(r["tuned"])) for r in runs]
    first = runs[0]["forgetting"]
    counted = [row["benchmark"] for row in first["rows"] if row["kind"] == "general"]
    for base, tuned in items:
        for scores in (base, tuned):
            scores[SUITE] = {f"{name}\t{i}": v for name in counted
                             for i, v in scores.get(name, {}).items()}
    named = [(row["benchmark"], row["kind"]) for row in first["rows"]] + \
        [(row["benchmark"], row["column"]) for row in first.get("task_details", [])]
    out = []
    for name, kind in named:
        pairs = [(b.get(name, {}), t.get(name, {})) for b, t in items]
        if any(not b or not t for b, t in pairs):
            continue
        result = across_seeds(pairs, name, min_effect)
        out.append({"benchmark": name, "kind": kind, **result,
                    "base": round(float(np.mean([np.mean(list(b.values())) for b, _ in pairs])),
                                  4),
                    "tuned": round(float(np.mean([np.mean(list(t.values()))
                                                  for _, t in pairs])), 4)})
    return out


def signed(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def ci(pair: list[float] | None) -> str:
    return "–" if pair is None else f"[{signed(pair[0])}, {signed(pair[1])}]"


def power_cell(r: dict[str, Any]) -> str:
    p = r.get("power")
    if not p:
        return ""
    if p.get("note"):
        return p["note"]
    return (f"detects {100 * p['detectable']:.1f}; {100 * p['min_effect']:.0f} points "
            + stats.needs(p))


def markdown(rows: list[dict[str, Any]], runs: list[dict[str, Any]], min_effect: float) -> str:
    seeds = ", ".join(f"train {r['seeds']['train']} / mixture {r['seeds']['mix']}" for r in runs)
    codes = sorted({str(r["seeds"].get("code") or "") for r in runs})
    made = ("Made by the pipeline " + ", ".join(f"`{c[:12]}`" for c in codes) +
            " (forgetful/study/fingerprint.py)." if all(codes) else
            "Made before runs recorded the pipeline that made them (no fingerprint).")
    suite = next((r for r in rows if r["benchmark"] == SUITE), None)
    changed = [r for r in rows if r["verdict"] != r["previous"]["verdict"]]
    lines = ["# Forgetting over seeds", "",
             f"{len(runs)} runs of the default pipeline that differ only in the training seed "
             f"and the mixture seed ({seeds}); the base model, the test items and every other "
             "param are the same. Per benchmark: the base score, the tuned score and the change "
             "averaged over the runs, its 95% interval and verdict, the previous method's "
             "interval and verdict, the change in each run, the standard deviation of the "
             f"change across runs, and the source of variance that dominates the interval. {made}",
             "",
             "The interval treats the runs as what they are, a crossed design (every seed "
             "scores the same items): its variance counts seeds, items and their interaction "
             "once each, with t on Satterthwaite's degrees of freedom "
             "(forgetful/report/stats.py; its coverage, measured by simulation, is in "
             "reports/stats/coverage.md). The previous method, a percentile bootstrap that drew "
             "seeds and then items afresh within each seed (1,000 resamples), treated shared "
             "items as independent and could not reach past the lowest and highest seed. "
             "Verdicts: higher or lower when the interval excludes zero, inconclusive when it "
             "covers zero. Power (inconclusive rows): the smallest change this design detects "
             f"at 80% power, and the seeds that would detect {100 * min_effect:.0f} points "
             "(report.min_effect).", ""]
    if suite:
        lines += [f"General suite ({suite['n']} items): change **{signed(suite['difference'])}"
                  f" points** {ci(suite['difference_ci'])} over {suite['seeds']} seeds — "
                  f"{suite['verdict']}.", ""]
    lines += [f"Verdicts changed from the previous method: {len(changed)} of {len(rows)} rows"
              + (" (" + ", ".join(f"{r['benchmark']}: {r['previous']['verdict']} → "
                                   f"{r['verdict']}" for r in changed) + ")." if changed
                 else "."), "",
              "| benchmark | kind | items | base | tuned (mean) | change (mean) [95% CI] | "
              "verdict | previous [95% CI] | previous verdict | per seed | seed SD | "
              "variance mostly | power |",
              "|---|---|---:|---:|---:|---:|---|---:|---|---|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['benchmark']} | {r['kind']} | {r['n']} | {pct(r['base'])} | "
            f"{pct(r['tuned'])} | {signed(r['difference'])} {ci(r['difference_ci'])} | "
            f"{r['verdict']} | {ci(r['previous']['ci'])} | {r['previous']['verdict']} | "
            f"{', '.join(signed(d) for d in r['per_seed'])} | {100 * r['seed_sd']:.1f} | "
            f"{r['dominant']} | {power_cell(r)} |")
    lines += ["", "Scores in percent, changes in points. The single-run report of the last "
              "run is reports/forgetting.md; each run's per-item scores are in "
              "reports/seeds/.", ""]
    return "\n".join(lines)
