"""The study's report from its runs: reports/study.{md,json}, the frontier figure, the
README's block, and the per-item file beside them.

`draw` is the one place the study writes its report: summarise and claims
(forgetful.report.study, forgetful.report.study_claims) with the page and figure
(forgetful.report.study_page). Whatever source the runs came from (DVC experiments, MLflow,
the per-item file), the same runs give the same report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import package_versions, write_json, write_text
from forgetful.report.readme import section_body, write_between
from forgetful.report.study import Run, frontier, summarise
from forgetful.report.study_claims import claims
from forgetful.report.study_page import markdown, plot
from forgetful.study.collect import write_items
from forgetful.study.plan import AA, Plan, StudyParams

README_BLOCK = ("<!-- study: written by stages/run_study.py from reports/study.md -->",
                "<!-- /study -->")


def readme_block(preset: str) -> tuple[str, str]:
    """The README's marker lines for a preset's report: the default's whole page, another
    preset's setup, claims and figure (its own block, where the README has one)."""
    if preset == "default":
        return README_BLOCK
    return (f"<!-- study-{preset}: written by stages/run_study.py from "
            f"reports/study-{preset}.md -->", f"<!-- /study-{preset} -->")


def readme_body(text: str, preset: str) -> str:
    body = section_body(text)
    if preset == "default":
        return body
    head = body.split("\n#### Before and after", 1)[0].split("\n#### Every point", 1)[0]
    figure = [line for line in body.splitlines() if line.startswith("![frontier](")]
    return head.rstrip() + "\n\n" + "\n".join(figure) + "\n"


@dataclass(frozen=True)
class Where:
    """Where the report goes: <out>.md and <out>.json, <out>/items.json.gz, the figure;
    `readme` the README whose study block it fills (None: no README)."""

    out: Path
    figure: Path
    readme: Path | None = None

    @property
    def items(self) -> Path:
        return self.out / "items.json.gz"


def wall_line(log: list[dict], preset: str) -> str:
    """The wall time of the last invocation that ran points of this preset, and of the
    latest one if it only redrew."""
    ran = [e for e in log if e["preset"] == preset and e["ran"]]
    text = (f"Wall time: {ran[-1]['seconds']:.0f} s for the invocation that ran "
            f"{ran[-1]['ran']} of its {ran[-1]['points']} points ({ran[-1]['date']}, "
            "install and `dvc repro` done before)" if ran else
            "Wall time: no invocation in the invocation log ran points of this preset")
    last = log[-1] if log else None
    if last and not last["ran"]:
        text += (f"; the latest invocation ({last['date']}) found every point done and only "
                 f"redrew, in {last['seconds']:.0f} s")
    return text + "."


def setup_lines(p: StudyParams, runs: list[Run], configs: int, preset: str, log: list[dict],
                code: str, stale: list[str]) -> list[str]:
    first = runs[0]
    items = {kind: sum(len(first.base[n]) for n, k in first.kinds.items() if k == kind)
             for kind in ("trained task", "untrained task", "general")}
    made = sorted({r.info.get("code", "") for r in runs})
    return [
        f"Preset `{preset}`: {configs} configurations, {len(runs)} points (a configuration at "
        f"one seed), {p.seeds} seed{'s' if p.seeds > 1 else ''} each"
        + (f" and {p.aa_seeds} more of the default LoRA for the A/A guard" if p.aa_seeds
           else "")
        + f"; every point {p.max_steps} optimizer steps, the training probe off. Items per "
        f"run: general suite {items['general']}, untrained tasks {items['untrained task']}, "
        f"trained tasks {items['trained task']} (default mixture; the replay sweep trains "
        f"one task). Learning rates: {p.learning_rates} (a short sweep, lowest validation "
        "loss).",
        *(["**One seed per configuration: the intervals hold item variance only, not seed "
           "variance**, so read these verdicts as a first look; the default preset runs 3 "
           "seeds."] if p.seeds == 1 else []),
        "Every point ran the pipeline " + ", ".join(f"`{m[:12]}`" for m in made)
        + " (a fingerprint of the code, data and params behind its scores, "
        "forgetful/study/fingerprint.py)"
        + ("" if made == [code] else f"; the pipeline here is now `{code[:12]}`: "
           "these points were made by other code")
        + (f"; {len(stale)} finished points of these configurations made by other code were "
           "left out" if stale else "") + ".",
        wall_line(log, preset),
        "Made by `python -m stages.run_study" + ("" if preset == "default" else
                                                 f" --preset {preset}") + "`; "
        "`--collect-only` redraws it from the DVC experiments, `--collect-only "
        "--from-mlflow` from the MLflow runs, `--from-items` from the per-item scores "
        "committed beside it (no DVC cache, no training).",
    ]


def draw(p: StudyParams, plan: Plan, runs: list[Run], preset: str, log: list[dict],
         where: Where, code: str, stale: list[str], min_effect: float) -> list[dict[str, Any]]:
    """Write the report, the figure, the JSON, the per-item file and, for the default
    preset, the README block; return the claims."""
    summary = summarise(runs)
    found = claims(runs, summary, plan.ranks, plan.ratios, p.equivalence_margin, min_effect,
                   AA, plan.strengths)
    of_base = {c: base for base, curve in plan.strengths.items() for c in curve.values()}
    narrow = plan.ratios.get(0.0)
    panels = {"method and rank (default mixture)": [
                  c for c in summary if summary[c]["sweep"] in ("method", "rank")
                  or (summary[c]["sweep"] == "strength" and of_base.get(c) != narrow)],
              f"replay and strength (narrow: {next(iter(p.narrow))})": [
                  c for c in summary if summary[c]["sweep"] == "replay"
                  or (summary[c]["sweep"] == "strength" and of_base.get(c) == narrow)]}
    panels = {k: v for k, v in panels.items() if v}
    fronts = {title: frontier(summary, configs) for title, configs in panels.items()}
    curves = {f"α (strength) of {base}": [curve[a] for a in sorted(curve)]
              for base, curve in plan.strengths.items()}
    if len(plan.ratios) > 1:
        curves["replay ratio"] = [plan.ratios[r] for r in sorted(plan.ratios)]
    plot(summary, panels, fronts, where.figure, curves)
    setup = setup_lines(p, runs, len(summary), preset, log, code, stale)
    merged = [base for base, curve in plan.strengths.items()
              if any(c in summary for a, c in curve.items() if a != 1)]
    if merged:
        setup.insert(1, f"Strength points: {' and '.join(merged)} merged at α = "
                        f"{', '.join(f'{a:g}' for a in sorted(p.strengths))} "
                        "(merge_adapter.strength; the same trained adapter, from DVC's run "
                        "cache).")
    try:  # the figure's link from the page
        link = where.figure.relative_to(where.out.parent).as_posix()
    except ValueError:
        link = where.figure.as_posix()
    text = markdown(summary, found, fronts, setup, link)
    write_text(where.out.with_suffix(".md"), text)
    write_items(where.items, runs)
    if where.readme is not None:
        block = readme_block(preset)
        if not write_between(where.readme, *block, readme_body(text, preset)):
            print(f"run_study: {where.readme} has no {block[0]} ... {block[1]} "
                  "block; not updated")
    write_json(where.out.with_suffix(".json"), {
        "preset": preset, "code": code, "stale": stale, "invocations": log,
        "points": summary, "claims": found, "frontiers": fronts,
        "versions": package_versions()})
    return found
