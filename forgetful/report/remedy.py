"""The remedy: of cheaper versions of the tuned model, the one that keeps the most learning
within a forgetting budget (stages/select_model.py builds and scores them).

Candidates:
- strengths: the final adapter merged at each α in `remedy.strengths`, the weight
  interpolation between base and tuned model of WiSE-FT (Wortsman et al. 2022), which Lin
  et al. 2024 found gives the best reward-forgetting front after RLHF; α = 1 (today's
  tuned model) is always a candidate. Methods that add inputs (prompt, prefix, p-tuning,
  LLaMA-Adapter) have no weight change to scale: for them only steps are tried.
- steps: the snapshots train_adapter kept every `keep_every` steps (an earlier stop).
The base (α = 0) is the answer when no candidate is within the budget.

The selection split: the choice is made on items the final verdict never uses, so that
picking the best of K candidates does not flatter its own numbers:
- each evaluated task's validation split (data/formatted/<task>/val.jsonl); the test
  splits are the verdict's;
- half of every general benchmark, chosen by a hash of the item id (`half`); the other
  half is the verdict's.
Both are fixed by the ids alone: the same for every run, seed and candidate.

The rule: learning is the mean over the trained tasks of candidate − base; forgetting is
the change elsewhere (the mean over untrained tasks and counted general benchmarks, each
counting once, as the report's headline) or the pooled general suite (`remedy.measure`).
A candidate is within budget when the lower end of its forgetting interval is at or above
−budget; among those the most learning (point estimate) wins, ties to the one that forgets
less. Intervals are one run's: item variance (forgetful.report.stats.estimate, strata).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from forgetful.core.config import require
from forgetful.report.forgetting import compare, pct
from forgetful.report.stats import estimate, matched

SELECTION, VERDICT = "selection", "verdict"
FINAL = "final"  # the stage's adapter, as opposed to a kept step


@dataclass(frozen=True)
class RemedyParams:
    strengths: tuple[float, ...] = (0.5,)  # α of the final adapter to try beside α = 1
    steps: tuple[int, ...] = ()  # kept steps to try; () = every step train_adapter kept
    budget: float = 0.05  # most forgetting allowed: the interval's lower end >= -budget
    measure: Literal["elsewhere", "general_suite"] = "elsewhere"  # what forgetting is

    def __post_init__(self) -> None:
        for a in self.strengths:
            require(0 <= a < 1, "strengths", f"must each be in [0, 1) (0 = the base; 1, the "
                    f"tuned model, is always tried), got {a}")
        require(len(set(self.strengths)) == len(self.strengths), "strengths",
                "must not repeat a value")
        for s in self.steps:
            require(s > 0, "steps", f"must be positive step numbers, got {s}")
        require(self.budget >= 0, "budget",
                f"must be >= 0 (a fraction: 0.05 = 5 points), got {self.budget}")


@dataclass(frozen=True)
class Candidate:
    name: str  # "α=0.50", "step 20", "α=1.00" (the tuned model)
    source: str  # FINAL or "step-NNNNN" (a folder of the kept snapshots)
    alpha: float
    step: int | None = None  # the kept step, None for the final adapter


def candidates(p: RemedyParams, mergeable: bool, method: str, kept: list[int]
               ) -> tuple[list[Candidate], list[str]]:
    """The candidates to score, α = 1 first, and notes for the report.
    A step asked for that was never kept is an error naming the keys (before any model
    loads); strengths of a method with no weight change are left out with a note."""
    notes = []
    missing = sorted(set(p.steps) - set(kept))
    if missing:
        raise ValueError(
            f"steps names step {missing[0]}, which train_adapter did not keep (kept: "
            f"{kept or 'none'}); set train_adapter.keep_every so that it saves that step, "
            "or leave remedy.steps empty for every kept step")
    found = [Candidate("α=1.00", FINAL, 1.0)]
    if p.strengths and not mergeable:
        notes.append(f"{method} adds trained inputs, not a weight change: there is nothing to "
                     "scale, so remedy.strengths are not tried; only kept steps are")
    elif p.strengths:
        found += [Candidate(f"α={a:.2f}", FINAL, a) for a in sorted(p.strengths, reverse=True)]
    found += [Candidate(f"step {s}", f"step-{s:05d}", 1.0, s)
              for s in (sorted(p.steps) or sorted(kept))]
    return found, notes


def half(item_id: str) -> str:
    """SELECTION or VERDICT for a general-benchmark item, from its id alone."""
    return SELECTION if hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0 else VERDICT


def split_general(suite: dict[str, list[dict]]) -> dict[str, dict[str, list[tuple[str, dict]]]]:
    """{SELECTION: {benchmark: [(id, item)]}, VERDICT: {...}}; ids as evaluate writes them."""
    out: dict[str, dict[str, list[tuple[str, dict]]]] = {SELECTION: {}, VERDICT: {}}
    for name, items in suite.items():
        for i, item in enumerate(items):
            item_id = f"{name}-{i}"
            out[half(item_id)].setdefault(name, []).append((item_id, item))
    return out


def groups(base_scores: dict[str, Any], trained: set[str], min_above_chance: float
           ) -> dict[str, list[str]]:
    """Benchmarks by role, as the report counts them: learned (trained tasks), elsewhere
    (untrained tasks and general benchmarks the base beats chance on), general."""
    rows = compare(base_scores, base_scores, trained, min_above_chance)["rows"]
    return {"learned": [r["benchmark"] for r in rows if r["kind"] == "trained task"],
            "elsewhere": [r["benchmark"] for r in rows
                          if r["kind"] in ("untrained task", "general")],
            "general": [r["benchmark"] for r in rows if r["kind"] == "general"]}


def change(base: dict[str, dict[str, float]], model: dict[str, dict[str, float]],
           names: list[str], pooled: bool = False) -> dict[str, Any] | None:
    """model − base over the benchmarks `names` (item id -> score, matched by id): the
    mean of per-benchmark means (each counting once), or with `pooled` the item-weighted
    mean; with its 95% interval over items. None when no benchmark has items."""
    names = [n for n in names if base.get(n)]
    if not names:
        return None
    diffs, strata = [], []
    for k, name in enumerate(names):
        ids, y = matched([("base", base[name]), ("candidate", model.get(name, {}))], name)
        diffs.append(y[1] - y[0])
        strata += [0 if pooled else k] * len(ids)
    r = estimate([(1.0, np.concatenate(diffs))], strata=strata)
    return {"value": r["value"], "ci": r["ci"], "items": r["items"]}


def measures(base: dict, model: dict, roles: dict[str, list[str]], measure: str
             ) -> dict[str, Any]:
    """Learning and forgetting of one model against the base, on the same items."""
    forgetting = change(base, model, roles["general"], pooled=True) \
        if measure == "general_suite" else change(base, model, roles["elsewhere"])
    return {"learning": change(base, model, roles["learned"]), "forgetting": forgetting}


def choose(rows: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Marks each row's `within_budget`; the chosen row's name and why ("base" if none)."""
    for r in rows:
        f = r["forgetting"]
        r["within_budget"] = f is None or f["ci"][0] >= -budget - 1e-12
    within = [r for r in rows if r["within_budget"]]
    if not within:
        return {"chosen": "base", "why": f"no candidate's forgetting interval stays within "
                f"{pct(budget)} points: the base is the answer"}

    def key(r: dict) -> tuple[float, float]:
        learned = r["learning"]["value"] if r["learning"] else 0.0
        return learned, r["forgetting"]["value"] if r["forgetting"] else 0.0

    best = max(within, key=key)
    return {"chosen": best["name"],
            "why": f"the most learning ({signed(key(best)[0])} points on the selection split) "
                   f"of the {len(within)} of {len(rows)} candidates whose forgetting interval "
                   f"stays within {pct(budget)} points"}


def signed(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "—"
    return f"{signed(m['value'])} [{signed(m['ci'][0])}, {signed(m['ci'][1])}]"


def markdown(result: dict[str, Any]) -> list[str]:
    """The report's "Remedy" section from select_model's selection.json."""
    what = {"elsewhere": "change elsewhere", "general_suite": "general suite change"}[
        result["measure"]]
    lines = ["## Remedy: the most learning within a forgetting budget", "",
             f"Candidates: {', '.join(r['name'] for r in result['candidates'])}. Budget: the "
             f"{what}'s 95% interval must stay above −{pct(result['budget'])} points "
             "(`remedy.budget`). Chosen on the selection split "
             f"({result['selection_items']} items: the tasks' validation splits and half of "
             "the general suite), which the verdict below never reads.", ""]
    lines += [f"- {n}" for n in result["notes"]] + ([""] if result["notes"] else [])
    lines += ["| candidate | learning (selection, 95% CI) | "
              f"{what} (selection, 95% CI) | within budget |", "|---|---:|---:|---|"]
    for r in result["candidates"]:
        lines.append(f"| {r['name']} | {cell(r['learning'])} | {cell(r['forgetting'])} | "
                     f"{'yes' if r['within_budget'] else 'no'} |")
    lines += ["", f"Chosen: **{result['chosen']}**, {result['why']}.", ""]
    test = result["test"]
    lines += [f"On the test items ({test['items']} items: the tasks' test splits and the other "
              "half of the general suite), against the base; one training run, so the "
              "intervals count item variance, not another seed's (`make seeds`):", "",
              f"| model | learning (95% CI) | {what} (95% CI) |", "|---|---:|---:|"]
    for name in ("tuned", "chosen"):
        label = "α=1.00 (the tuned model)" if name == "tuned" else f"chosen: {result['chosen']}"
        lines.append(f"| {label} | {cell(test[name]['learning'])} | "
                     f"{cell(test[name]['forgetting'])} |")
    lines.append(f"| chosen − tuned | {cell(test['chosen_vs_tuned']['learning'])} | "
                 f"{cell(test['chosen_vs_tuned']['forgetting'])} |")
    lines += ["", test["summary"], ""]
    return lines


def test_summary(test: dict[str, Any]) -> str:
    """One sentence: how much forgetting the choice removed, how much gain it kept."""
    d, t, c = test["chosen_vs_tuned"], test["tuned"], test["chosen"]
    if test["same"]:
        return "The chosen model is the tuned model itself (α = 1): nothing to remove."
    if d["forgetting"] is None or d["learning"] is None:
        return "Nothing to compare: no benchmark is both learned and kept."
    kept = (f"; it keeps {100 * c['learning']['value'] / t['learning']['value']:.0f}% of the "
            "tuned model's gain" if t["learning"]["value"] > 0 else "")
    return (f"Chosen minus tuned: the change elsewhere {cell(d['forgetting'])} points "
            f"(positive: less forgetting), learning {cell(d['learning'])} points{kept}. "
            "An interval that covers zero is inconclusive.")
