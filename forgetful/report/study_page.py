"""The study's report page (markdown) and its frontier figure, from summarise and claims."""

from __future__ import annotations

from typing import Any

from forgetful.report import stats
from forgetful.report.study_claims import NO_VERDICT, interval, signed

METHOD = (
    "Each interval is a 95% interval for a crossed design: every seed scores the same test "
    "items, so the variance of a mean change counts the seeds, the items and their "
    "interaction once each (variance components from the seed, item and interaction mean "
    "squares; t on Satterthwaite's degrees of freedom; forgetful/report/stats.py). Its "
    "coverage is measured by simulation in reports/stats/coverage.md. Verdicts: *supported* "
    "when the interval lies on the claimed side of zero, *contradicted* when it lies on the "
    "other side, *inconclusive* when it covers zero. Changes in points (percent of items).")


def power_text(cmp: dict[str, Any]) -> str:
    p = cmp.get("power")
    if not p:
        return ""
    if p.get("note"):
        return p["note"]
    effect = f"{100 * p['min_effect']:.0f}"
    return (f"detects {signed(p['detectable']).lstrip('+')} at 80% power; {effect} points "
            f"{stats.needs(p)}")


def claim_lines(found: list[dict[str, Any]]) -> list[str]:
    lines = []
    for c in found:
        lines.append(f"- **{c['claim']}: {c['verdict']}.** {c['evidence']}.")
        for cmp in c["comparisons"]:
            if cmp.get("power"):
                lines.append(f"  - {cmp['a']} vs {cmp['b']} ({cmp['measure']}), inconclusive: "
                             f"{power_text(cmp)}.")
        if c.get("false_positive"):
            lines.append("\n**The A/A comparison is not inconclusive: the same configuration "
                         "on other seeds came out different. Read every verdict of this "
                         "report as less certain than its interval says.**")
    return lines


def side_by_side(found: list[dict[str, Any]]) -> list[str]:
    rows = [c for c in found if c["previous"].get("verdict") not in (None, "not measured",
                                                                    "not run before")]
    changed = [c for c in rows if c["previous"]["verdict"] != c["verdict"]]
    lines = ["## Before and after: the previous method", "",
             "The previous method was a percentile bootstrap that drew seeds, then items afresh "
             "within each seed, and it decided (c) by the forgetting difference alone and (d) "
             "by rank 2 − rank 32 alone. Here both methods read the same points.", "",
             "| claim | previous: interval | previous: verdict | now: verdict |",
             "|---|---:|---|---|"]
    for c in rows:
        lines.append(f"| {c['claim'].split(' ', 1)[0]} | {c['previous'].get('interval', '–')} "
                     f"| {c['previous']['verdict']} | {c['verdict']} |")
    return lines + ["", f"{len(changed)} of {len(rows)} claim verdicts changed"
                    + (f" ({', '.join(c['claim'].split(' ', 1)[0] for c in changed)})."
                       if changed else "."), ""]


def point_table(points: dict[str, dict[str, Any]], fronts: dict[str, list[str]]) -> list[str]:
    lines = ["## Every point", "",
             "Mean over seeds of the change (tuned − base) and its 95% interval. Learning: the "
             "trained tasks' held-out test splits. Elsewhere: ½ general suite + ½ untrained "
             "tasks; beside it the previous method's interval, and which source of variance "
             "dominates this row's (seeds, items, or seed × item). Frontier: no other point of "
             "its panel has both more learning and less forgetting. Train s: the training "
             "loop; stage s: training, the tuned model's evaluation and drift (means over "
             "seeds).", "",
             "| sweep | configuration | seeds | trainable params | learning rate | train s | "
             "stage s | learning | general suite | untrained tasks | elsewhere | elsewhere, "
             "previous method | variance mostly | frontier |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    on_front = {c for front in fronts.values() for c in front}
    for name, p in points.items():
        info = p["info"]
        lines.append(
            f"| {p['sweep']} | {name} | {p['seeds']} | {info.get('trainable_params', 0):,.0f} | "
            f"{info.get('learning_rate', 0):.1e} | {info.get('train_seconds', 0):.0f} | "
            f"{info.get('stage_seconds', 0):.0f} | {interval(p['learning'])} | "
            f"{interval(p['general'])} | {interval(p['untrained'])} | "
            f"{interval(p['elsewhere'])} | {interval(p['elsewhere'].get('previous'))} | "
            f"{p['elsewhere'].get('dominant', '–')} | {'yes' if name in on_front else ''} |")
    floors: dict[str, list[str]] = {}
    for name, p in points.items():
        for task in p.get("floor", []):
            floors.setdefault(task, []).append(name)
    for task, names in floors.items():
        lines += ["", f"At the floor on {task}: {', '.join(names)} answered none of its "
                  f"items right at any seed: the change on {task} is minus the base score, "
                  "the most it can fall (a floor, not a measure of how much more was "
                  "forgotten; the general suite still tells these apart)."]
    return lines


def comparison_table(found: list[dict[str, Any]]) -> list[str]:
    comps = [cmp for c in found for cmp in c["comparisons"]]
    if not comps:
        return []
    lines = ["", "## Comparisons", "",
             "A − B on the same items: paired by seed where both ran the same seeds (the base "
             "cancels), on disjoint seeds for the A/A guard; the slope is per doubling of the "
             "rank. Power: the smallest difference this design detects at 80% power (two-"
             "sided 5%), and what would detect report.min_effect.", "",
             "| A | B | measure | seeds | A − B [95% CI] | previous method | claimed | verdict "
             "| variance mostly | power |",
             "|---|---|---|---:|---:|---:|---|---|---|---|"]
    for cmp in comps:
        seeds = cmp["seeds"] if isinstance(cmp["seeds"], int) else \
            " + ".join(str(s) for s in cmp["seeds"])
        lines.append(f"| {cmp['a']} | {cmp['b']} | {cmp['measure']} | {seeds} | "
                     f"{interval(cmp)} | {interval(cmp.get('previous'))} | "
                     f"{cmp.get('claimed', '')} | {cmp.get('verdict', '')} | "
                     f"{cmp.get('dominant', '–')} | {power_text(cmp) or '–'} |")
    return lines


def markdown(points: dict[str, dict[str, Any]], found: list[dict[str, Any]],
             fronts: dict[str, list[str]], setup: list[str], figure: str = "study/frontier.png"
             ) -> str:
    lines = ["# The learning–forgetting study", "", *setup, "", "## Claims", "", METHOD, "",
             *claim_lines(found), ""]
    if any(c["verdict"] == NO_VERDICT for c in found):
        lines += ["(c) and (e) need the two gains shown equal within the margin before a "
                  "forgetting difference can say anything about forgetting *at comparable "
                  "(matched) gain*.", ""]
    lines += side_by_side(found)
    lines += point_table(points, fronts)
    lines += comparison_table(found)
    lines += ["", f"![frontier]({figure})", ""]
    return "\n".join(lines)


def plot(points: dict[str, dict[str, Any]], panels: dict[str, list[str]],
         fronts: dict[str, list[str]], out: Any,
         curves: dict[str, list[str]] | None = None) -> None:
    """One panel per mixture: learning (x) against change elsewhere (y), error bars the
    95% intervals, the frontier drawn, and each curve (a sweep along one knob: the strength
    α, the replay ratio) joined in its order where its points are in the panel."""
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
        for label, chain in (curves or {}).items():
            xy = [(100 * points[c]["learning"]["value"], 100 * points[c]["elsewhere"]["value"])
                  for c in chain if c in configs and c in points
                  and points[c]["learning"]["value"] is not None
                  and points[c]["elsewhere"]["value"] is not None]
            if len(xy) > 1:
                ax.plot(*zip(*xy, strict=True), "-", alpha=0.6, label=label)
        front = sorted((100 * points[c]["learning"]["value"],
                        100 * points[c]["elsewhere"]["value"]) for c in fronts.get(title, []))
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), "--", color="grey", label="frontier")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower left", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlabel("learning: gain on trained tasks (points)")
        ax.set_ylabel("change elsewhere (points; below 0 = forgetting)")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
