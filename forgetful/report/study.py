"""The learning–forgetting study: many configurations, several seeds, one verdict per claim.

A run (one configuration, one seed) gives, per test item, the base model's score and the
tuned model's. Three measures of a run, each a mean of per-item differences (tuned − base):
- learning: the trained tasks' held-out test splits, each task weighted equally (the
  report's "mean gain");
- general: the pooled general suite (every item equally);
- untrained: the evaluated tasks that were not trained, each equally;
- elsewhere (the forgetting axis): ½ general + ½ untrained — what happened to what was
  not trained, the general suite and the untrained tasks counting alike.

`measure_bootstrap` resamples seeds, then items within each set of each drawn seed, as
seeds.py does for one benchmark: the interval holds seed and item variance together.
`paired` compares two configurations seed by seed (the same seeds, the same items): the
per-item differences are tuned_A − tuned_B, so the base cancels. A difference is
"inconclusive" when its 95% interval covers zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forgetful.report.forgetting import item_scores

MEASURES = ("learning", "general", "untrained", "elsewhere")


@dataclass(frozen=True)
class Run:
    """One configuration at one seed, as the study collected it."""

    config: str  # e.g. "method=lora"
    sweep: str  # method, rank or replay
    seed: int  # k: train_adapter.seed + k, mix_tasks.seed + k
    base: dict[str, dict[str, float]]  # benchmark -> item id -> score (item_scores)
    tuned: dict[str, dict[str, float]]
    kinds: dict[str, str]  # benchmark -> trained task / untrained task / general
    info: dict[str, Any]  # trainable params, seconds, learning rate...


def make_run(config: str, sweep: str, seed: int, base_rows: list[dict], tuned_rows: list[dict],
             forgetting: dict[str, Any], info: dict[str, Any]) -> Run:
    kinds = {r["benchmark"]: r["kind"] for r in forgetting["rows"]}
    return Run(config, sweep, seed, item_scores(base_rows), item_scores(tuned_rows), kinds, info)


def sets(run: Run, measure: str, other: Run | None = None) -> list[tuple[list[float], float]]:
    """The measure's item sets with their weights: per set, the per-item differences
    tuned − base (or, with `other`, tuned − other's tuned, item by item)."""
    ref = other.tuned if other is not None else run.base

    def diffs(names: list[str]) -> list[float]:
        return [run.tuned[n][i] - ref[n][i] for n in names for i in sorted(run.tuned[n])
                if i in ref.get(n, {})]

    trained = sorted(n for n, k in run.kinds.items() if k == "trained task")
    untrained = sorted(n for n, k in run.kinds.items() if k == "untrained task")
    general = sorted(n for n, k in run.kinds.items() if k == "general")  # above chance
    if measure == "learning":
        parts = [(diffs([t]), 1 / len(trained)) for t in trained]
    elif measure == "general":
        parts = [(diffs(general), 1.0)]
    elif measure == "untrained":
        parts = [(diffs([t]), 1 / len(untrained)) for t in untrained]
    elif measure == "elsewhere":
        parts = [(diffs(general), 0.5)] + [(diffs([t]), 0.5 / len(untrained))
                                           for t in untrained]
    else:
        raise ValueError(f"unknown measure {measure!r}; one of {', '.join(MEASURES)}")
    parts = [(d, w) for d, w in parts if d]  # a part with no items (none above chance)
    total = sum(w for _, w in parts)  # leaves the rest to carry the whole weight
    return [(d, w / total) for d, w in parts]


def measure_bootstrap(per_seed: list[list[tuple[list[float], float]]], resamples: int,
                      seed: int) -> dict[str, Any]:
    """Mean over seeds of Σ weight × mean(set), with its two-level 95% interval (seeds,
    then items within each set)."""
    import numpy as np

    if not per_seed or any(not s for s in per_seed):
        return {"value": None, "ci": None, "per_seed": [], "seeds": len(per_seed)}
    arrays = [[(np.asarray(d, dtype=float), w) for d, w in s] for s in per_seed]
    value_of = [sum(w * d.mean() for d, w in s) for s in arrays]
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        picks = rng.integers(0, len(arrays), len(arrays))
        stats[r] = np.mean([sum(w * d[rng.integers(0, len(d), len(d))].mean()
                                for d, w in arrays[k]) for k in picks])
    ci = [round(float(v), 4) for v in np.percentile(stats, [2.5, 97.5])]
    return {"value": round(float(np.mean(value_of)), 4), "ci": ci,
            "per_seed": [round(float(v), 4) for v in value_of], "seeds": len(arrays)}


def verdict(ci: list[float] | None, claimed: str) -> str:
    """supported (the interval is on the claimed side of zero), not supported (on the
    other side), inconclusive (it covers zero)."""
    if ci is None:
        return "not measured"
    if ci[0] <= 0 <= ci[1]:
        return "inconclusive"
    above = ci[0] > 0
    return "supported" if above == (claimed == "above") else "not supported"


def at_floor(runs: list[Run]) -> list[str]:
    """The untrained tasks on which every run scored no item at all: there the change is
    minus the base score, the most it can fall, so configurations at the floor are not
    told apart by that task (only by the general suite)."""
    tasks = [name for name, kind in runs[0].kinds.items() if kind == "untrained task"]
    return [t for t in tasks if all(not any(r.tuned[t].values()) for r in runs)]


def summarise(runs: list[Run], resamples: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per configuration: each measure with its interval, the untrained tasks it scored
    nothing on (`at_floor`), and the runs' info averaged."""
    out: dict[str, dict[str, Any]] = {}
    for config in dict.fromkeys(r.config for r in runs):
        mine = sorted((r for r in runs if r.config == config), key=lambda r: r.seed)
        row: dict[str, Any] = {"config": config, "sweep": mine[0].sweep, "seeds": len(mine),
                               "runs": [{"seed": r.seed, **{k: v for k, v in r.info.items()
                                                            if isinstance(v, str)}}
                                        for r in mine], "info": {},
                               "floor": at_floor(mine)}
        for key in mine[0].info:  # numbers: the mean over seeds
            values = [r.info.get(key) for r in mine]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                row["info"][key] = round(sum(values) / len(values), 6)
        for measure in MEASURES:
            row[measure] = measure_bootstrap([sets(r, measure) for r in mine], resamples, seed)
        out[config] = row
    return out


def paired(runs: list[Run], a: str, b: str, measure: str, resamples: int, seed: int
           ) -> dict[str, Any]:
    """Configuration a − configuration b on one measure, seed by seed (seeds both have)."""
    by_seed = {(r.config, r.seed): r for r in runs}
    seeds = sorted(s for (c, s) in by_seed if c == a and (b, s) in by_seed)
    result = measure_bootstrap([sets(by_seed[(a, s)], measure, by_seed[(b, s)])
                                for s in seeds], resamples, seed)
    return {"a": a, "b": b, "measure": measure, **result}


def frontier(points: dict[str, dict[str, Any]], configs: list[str]) -> list[str]:
    """The configurations no other one beats on both learning and elsewhere (higher is
    better on both): the Pareto frontier."""
    xy = {c: (points[c]["learning"]["value"], points[c]["elsewhere"]["value"])
          for c in configs if points[c]["learning"]["value"] is not None
          and points[c]["elsewhere"]["value"] is not None}
    return [c for c, (x, y) in xy.items()
            if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in xy.values())]


def signed(x: float | None) -> str:
    """A change in points, with its sign."""
    return "–" if x is None else f"{100 * x:+.1f}"


def interval(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "–"
    return f"{signed(m['value'])} [{signed(m['ci'][0])}, {signed(m['ci'][1])}]"


def claims(runs: list[Run], points: dict[str, dict[str, Any]], ranks: dict[int, str],
           ratios: dict[float, str], resamples: int, seed: int) -> list[dict[str, Any]]:
    """The four claims, each with its evidence, from what the study ran (a claim whose
    configurations were not run says so)."""
    out = []
    narrow = ratios.get(0.0)
    if narrow in points:
        m = points[narrow]["elsewhere"]
        out.append({
            "claim": "(a) narrow single-task tuning lowers abilities it did not train",
            "verdict": verdict(m["ci"], "below"),
            "evidence": f"{narrow}: change elsewhere {interval(m)} points (general suite "
                        f"{interval(points[narrow]['general'])}, untrained tasks "
                        f"{interval(points[narrow]['untrained'])}); learning "
                        f"{interval(points[narrow]['learning'])}",
            "comparisons": []})
    else:
        out.append({"claim": "(a) narrow single-task tuning lowers abilities it did not "
                    "train", "verdict": "not measured", "evidence": "no replay=0 point",
                    "comparisons": []})
    with_replay = [(r, c) for r, c in sorted(ratios.items()) if r > 0 and c in points]
    comps = [paired(runs, c, narrow, "elsewhere", resamples, seed) for _, c in with_replay
             if narrow in points]
    if comps:
        helped = [r for (r, _), cmp in zip(with_replay, comps, strict=True)
                  if verdict(cmp["ci"], "above") == "supported"]
        largest = comps[-1]
        text = "; ".join(f"{cmp['a']}: {interval(cmp)}" for cmp in comps)
        out.append({
            "claim": "(b) replay reduces that forgetting",
            "verdict": verdict(largest["ci"], "above"),
            "evidence": f"change elsewhere vs {narrow}, paired by seed: {text} points; "
                        + (f"the smallest ratio whose interval is above zero: {min(helped)}"
                           if helped else "no ratio's interval is above zero"),
            "comparisons": comps})
    else:
        out.append({"claim": "(b) replay reduces that forgetting", "verdict": "not measured",
                    "evidence": "needs replay=0 and a replay ratio above 0", "comparisons": []})
    if "method=lora" in points and "method=full" in points:
        forget = paired(runs, "method=lora", "method=full", "elsewhere", resamples, seed)
        gain = paired(runs, "method=lora", "method=full", "learning", resamples, seed)
        comparable = verdict(gain["ci"], "above") == "inconclusive"
        out.append({
            "claim": "(c) LoRA forgets less than full fine-tuning at comparable gain",
            "verdict": verdict(forget["ci"], "above"),
            "evidence": f"LoRA − full, paired by seed: change elsewhere {interval(forget)} "
                        f"points; learning {interval(gain)} points ("
                        + ("gains comparable: the interval covers zero" if comparable else
                           "gains differ: read the forgetting difference with that") + ")",
            "comparisons": [forget, gain]})
    else:
        out.append({"claim": "(c) LoRA forgets less than full fine-tuning at comparable gain",
                    "verdict": "not measured", "evidence": "needs method=lora and method=full",
                    "comparisons": []})
    present = [(r, c) for r, c in sorted(ranks.items()) if c in points]
    if len(present) >= 2:
        (r_lo, lo), (r_hi, hi) = present[0], present[-1]
        cmp = paired(runs, lo, hi, "elsewhere", resamples, seed)
        trend = ", ".join(f"r={r}: {signed(points[c]['elsewhere']['value'])}" for r, c in present)
        out.append({
            "claim": "(d) forgetting grows with LoRA rank",
            "verdict": verdict(cmp["ci"], "above"),
            "evidence": f"change elsewhere by rank: {trend} points; rank {r_lo} − rank {r_hi}, "
                        f"paired by seed: {interval(cmp)} points",
            "comparisons": [cmp]})
    else:
        out.append({"claim": "(d) forgetting grows with LoRA rank", "verdict": "not measured",
                    "evidence": "needs two ranks", "comparisons": []})
    return out


def markdown(points: dict[str, dict[str, Any]], found: list[dict[str, Any]],
             fronts: dict[str, list[str]], setup: list[str], resamples: int) -> str:
    lines = ["# The learning–forgetting study", "", *setup, "",
             "## Four claims", "",
             "Verdicts: *supported* / *not supported* when the 95% interval lies on one side "
             "of zero, *inconclusive* when it covers zero. Changes in points (percent of "
             "items).", ""]
    for c in found:
        lines += [f"- **{c['claim']}: {c['verdict']}.** {c['evidence']}."]
    lines += ["", "## Every point", "",
              "Mean over seeds of the change (tuned − base) and its 95% interval (two-level "
              f"bootstrap: seeds, then items; {resamples} resamples). Learning: the trained "
              "tasks' held-out test splits. Elsewhere: ½ general suite + ½ untrained tasks. "
              "Frontier: no other point of its panel has both more learning and less "
              "forgetting. Train s: the training loop; stage s: training, the tuned "
              "model's evaluation and drift (means over seeds).", "",
              "| sweep | configuration | seeds | trainable params | learning rate | train s | "
              "stage s | learning | general suite | untrained tasks | elsewhere | frontier |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    on_front = {c for front in fronts.values() for c in front}
    for name, p in points.items():
        info = p["info"]
        lines.append(
            f"| {p['sweep']} | {name} | {p['seeds']} | {info.get('trainable_params', 0):,.0f} | "
            f"{info.get('learning_rate', 0):.1e} | {info.get('train_seconds', 0):.0f} | "
            f"{info.get('stage_seconds', 0):.0f} | {interval(p['learning'])} | "
            f"{interval(p['general'])} | {interval(p['untrained'])} | "
            f"{interval(p['elsewhere'])} | {'yes' if name in on_front else ''} |")
    floors: dict[str, list[str]] = {}
    for name, p in points.items():
        for task in p.get("floor", []):
            floors.setdefault(task, []).append(name)
    for task, names in floors.items():
        lines += ["", f"At the floor on {task}: {', '.join(names)} answered none of its "
                  f"items right at any seed: the change on {task} is minus the base score, "
                  "the most it can fall (a floor, not a measure of how much more was "
                  "forgotten; the general suite still tells these apart)."]
    comps = [cmp for c in found for cmp in c["comparisons"]]
    if comps:
        lines += ["", "## Paired comparisons", "",
                  "A − B on the same seeds and items (the base cancels).", "",
                  "| A | B | measure | seeds | A − B [95% CI] | verdict (A > B) |",
                  "|---|---|---|---:|---:|---|"]
        for cmp in comps:
            lines.append(f"| {cmp['a']} | {cmp['b']} | {cmp['measure']} | {cmp['seeds']} | "
                         f"{interval(cmp)} | {verdict(cmp['ci'], 'above')} |")
    lines += ["", "![frontier](study/frontier.png)", ""]
    return "\n".join(lines)


def plot(points: dict[str, dict[str, Any]], panels: dict[str, list[str]],
         fronts: dict[str, list[str]], out: Any) -> None:
    """One panel per mixture: learning (x) against change elsewhere (y), error bars the
    95% intervals, the frontier drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (title, configs) in zip(axes[0], panels.items(), strict=True):
        for c in configs:
            p = points.get(c)
            if p is None or p["learning"]["value"] is None or p["elsewhere"]["value"] is None:
                continue
            x, y = 100 * p["learning"]["value"], 100 * p["elsewhere"]["value"]
            xe = [[x - 100 * p["learning"]["ci"][0]], [100 * p["learning"]["ci"][1] - x]]
            ye = [[y - 100 * p["elsewhere"]["ci"][0]], [100 * p["elsewhere"]["ci"][1] - y]]
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3)
            ax.annotate(c, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        front = sorted((100 * points[c]["learning"]["value"],
                        100 * points[c]["elsewhere"]["value"]) for c in fronts.get(title, []))
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), "--", color="grey", label="frontier")
            ax.legend(loc="lower left")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("learning: gain on trained tasks (points)")
        ax.set_ylabel("change elsewhere (points; below 0 = forgetting)")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
