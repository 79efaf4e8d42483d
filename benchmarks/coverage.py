"""The coverage of the reports' 95% intervals, measured by simulation: reports/stats/coverage.

Every cell simulates `--runs` crossed data sets (forgetful/report/coverage.py: binary
items, item, seed and seed × item effects) and counts how often each method's interval
covers the true difference: the reports' interval (forgetful.report.stats.estimate) and
the nested percentile bootstrap it replaced. The grid: the single-configuration design
(tuned − base) at S in {3, 5, 10} seeds, N in {40, 200, 816} items, seed spread in
{0, 2, 5} points and a true difference of 0 or about +8 points; then 30 seeds, and the
other designs the reports use (paired comparisons, the A/A guard, a measure over two
weighted item sets) at their extremes.

Run:    python benchmarks/coverage.py --runs 2000 --out reports/stats   (about 6 minutes
        on 2 cores; `make coverage`)
        python benchmarks/coverage.py --redraw --out reports/stats   # the page from the JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import package_versions, write_json, write_text
from forgetful.report.coverage import Cell, coverage, new_method, old_method

BAND = (0.93, 0.97)
NEW, OLD = "crossed variance components (now)", "nested percentile bootstrap (before)"


def grid() -> list[tuple[str, Cell]]:
    cells = [("grid", Cell("tuned − base", s, n, spread, delta))
             for delta, spread, s, n in itertools.product((0.0, 0.1), (0.0, 0.02, 0.05),
                                                          (3, 5, 10), (40, 200, 816))]
    cells += [("30 seeds", Cell("tuned − base", 30, n, spread, delta))
              for delta, spread, n in itertools.product((0.0, 0.1), (0.0, 0.05), (40, 816))]
    for design, deltas in (("A − B, paired", (0.0, 0.1)), ("A/A, disjoint seeds", (0.0,)),
                           ("two strata ½ + ½", (0.0, 0.1))):
        sizes = (200, 816) if design.startswith("two strata") else (40, 816)
        cells += [("designs", Cell(design, s, n, spread, delta))
                  for delta, spread, s, n in itertools.product(deltas, (0.0, 0.05), (3, 10),
                                                               sizes)]
    return cells


def run_cell(args: tuple[int, str, Cell, int]) -> dict[str, Any]:
    index, panel, cell, runs = args
    started = time.perf_counter()
    out = coverage(cell, runs, {"new": new_method, "old": old_method}, seed=1000 + index)
    return {"panel": panel, **out, "seconds": round(time.perf_counter() - started, 1)}


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(rows: list[dict[str, Any]], runs: int, seconds: float) -> str:
    lo, hi = BAND
    grid_rows = [r for r in rows if r["panel"] == "grid"]
    new = [r["coverage"]["new"] for r in grid_rows]
    old = [r["coverage"]["old"] for r in grid_rows]
    outside = [r for r in rows if not lo <= r["coverage"]["new"] <= hi]
    lines = [
        "# Coverage of the 95% intervals", "",
        f"How often a 95% interval covers the true difference, over {runs:,} simulated data "
        "sets per cell (`python benchmarks/coverage.py`, forgetful/report/coverage.py). "
        "Each data set is crossed as ours are: N binary items scored once by the base model "
        "and at each of S seeds by the tuned model, with item effects (the base's item "
        "difficulty, U-shaped; each item's own change, SD 15 points), a seed effect (SD = "
        "the spread) and a seed × item effect (SD 8 points). The true difference is the "
        "mean change over items and seeds under the model. Both methods see the same data "
        "sets. ± is the Monte Carlo standard error of a rate.", "",
        f"**{NEW}**: θ̂ ± t·√V, V from the seed, item and interaction mean squares, t on "
        "Satterthwaite's df (forgetful/report/stats.py). "
        f"**{OLD}**: resample seeds, then items afresh within each seed, 1,000 resamples.",
        "",
        f"Over the {len(grid_rows)} cells of the grid (tuned − base): the new interval "
        f"covers {pct(min(new))}–{pct(max(new))}%, the old one {pct(min(old))}–"
        f"{pct(max(old))}%. Cells of any panel outside {pct(lo)}–{pct(hi)}% for the new "
        f"interval: {len(outside)}"
        + ("" if not outside else " (" + "; ".join(
            f"{r['cell']['design']}, S={r['cell']['seeds']}, N={r['cell']['items']}, spread "
            f"{pct(r['cell']['spread'])}, true difference {100 * r['truth']:+.1f}: "
            f"{pct(r['coverage']['new'])}%" for r in outside)
           + ")") + "."
        + (" Every one is above the band: conservative (the interval is wider than it "
           "needs to be), where 3 seeds cannot show that a seed variance is small and the "
           "seed × item noise is large beside the item variance (paired comparisons on 40 "
           "items)." if outside and all(r["coverage"]["new"] > hi for r in outside) else ""),
        ""]
    for panel, title in (("grid", "The grid: one configuration, tuned − base"),
                         ("30 seeds", "30 seeds"),
                         ("designs", "The other designs the reports use")):
        mine = [r for r in rows if r["panel"] == panel]
        lines += [f"## {title}", "",
                  "| design | seeds | items | seed spread (points) | true difference (points) "
                  "| new: coverage % | old: coverage % |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in mine:
            c, cov, se = r["cell"], r["coverage"], r["mc_se"]
            flag = "" if lo <= cov["new"] <= hi else " **(outside)**"
            lines.append(f"| {c['design']} | {c['seeds']} | {c['items']} | "
                         f"{pct(c['spread'])} | {100 * r['truth']:+.2f} | "
                         f"{pct(cov['new'])} ± {pct(se['new'])}{flag} | "
                         f"{pct(cov['old'])} ± {pct(se['old'])} |")
        lines.append("")
    lines += ["In the two-strata design the item count is the larger set's; the smaller "
              "has 40 items, each set weighing ½ (as the study's \"elsewhere\": the general "
              "suite and the untrained tasks). A − B: two configurations at the same seeds, "
              "B without a mean change. A/A: two runs of one configuration on disjoint seed "
              "sets, each with S seeds: the truth is zero.", "",
              f"Wall time {seconds:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/stats"))
    parser.add_argument("--redraw", action="store_true",
                        help="rewrite coverage.md from coverage.json, simulating nothing")
    a = parser.parse_args()
    if a.redraw:
        saved = json.loads((a.out / "coverage.json").read_text())
        write_text(a.out / "coverage.md", markdown(saved["rows"], saved["runs"],
                                                   saved["seconds"]))
        return
    cells = grid()
    started = time.perf_counter()
    with ProcessPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(run_cell, [(i, p, c, a.runs) for i, (p, c) in enumerate(cells)]))
    seconds = time.perf_counter() - started
    write_json(a.out / "coverage.json", {"runs": a.runs, "band": BAND, "rows": rows,
                                         "seconds": round(seconds, 1),
                                         "versions": package_versions()})
    write_text(a.out / "coverage.md", markdown(rows, a.runs, seconds))
    print(json.dumps({"cells": len(rows), "seconds": round(seconds)}))


if __name__ == "__main__":
    main()
