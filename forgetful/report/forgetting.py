"""The forgetting report: base vs tuned, with paired 95% intervals.

`compare` puts the base's and the tuned model's scores side by side (gains on trained
tasks, change and retention everywhere else); `intervals` gives each benchmark's interval
over its items (forgetful.report.stats: one run, so item variance only), `ratio_bootstrap`
the percentile intervals of token-weighted losses; `markdown` renders the report and
`plot` its figures. `ReportParams` is the `report:` section of params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forgetful.core import tracking
from forgetful.core.config import DataError, require
from forgetful.report.stats import paired_items


@dataclass(frozen=True)
class ReportParams:
    samples: int  # general prompts shown side by side, before and after
    bootstrap: int = 1000  # resamples for the text-loss and drift intervals (0 = none)
    seed: int = 0  # bootstrap seed
    min_effect: float = 0.03  # the difference (fraction) power is reported for
    max_forgetting: float = 0.10  # mean drop elsewhere (fraction) that marks a run
    on_forgetting: Literal["warn", "fail"] = "warn"  # past max_forgetting: warn, or fail
    # a general benchmark counts in "kept" only when the base beats chance by this much
    min_above_chance: float = 0.10

    def __post_init__(self) -> None:
        require(self.samples >= 0, "samples", "must be >= 0")
        require(self.bootstrap >= 0, "bootstrap", "must be >= 0")
        require(0 <= self.max_forgetting <= 1, "max_forgetting", "must be in [0, 1]")
        require(0 <= self.min_above_chance < 1, "min_above_chance", "must be in [0, 1)")
        require(0 < self.min_effect < 1, "min_effect", "must be a fraction in (0, 1), e.g. "
                "0.03 for 3 points")


class ForgettingTooMuch(DataError):
    """The tuned model lost more than report.max_forgetting elsewhere (on_forgetting: fail)."""


IN_TEMPLATE = "in-template"
ANSWER_FORMAT = "answer format"
GAP = "likelihood gap"  # preference tasks: log-likelihood of chosen − rejected, in nats


def detail(task: str, column: str) -> str:
    """The name of a task's second column: 'sentiment · answer format'."""
    return f"{task} · {column}"


def item_scores(predictions: list[dict]) -> dict[str, dict[str, float]]:
    """benchmark -> item id -> 1/0: task rows by their metric, general rows by acc; a
    task's in-template items and its answer-format judgements under their own names."""
    out: dict[str, dict[str, float]] = {}
    for r in predictions:
        if r["kind"] in ("task", "general"):
            value = r["correct"] if r["kind"] == "task" else r["acc"]
            out.setdefault(r["task"], {})[r["id"]] = float(value)
        if r["kind"] == "task" and "answer_format" in r:
            out.setdefault(detail(r["task"], ANSWER_FORMAT), {})[r["id"]] = \
                float(r["answer_format"])
        if r["kind"] == "task" and "loglik_chosen" in r:
            out.setdefault(detail(r["task"], GAP), {})[r["id"]] = \
                r["loglik_chosen"] - r["loglik_rejected"]
        if r["kind"] == "task_in_template":
            out.setdefault(detail(r["task"], IN_TEMPLATE), {})[r["id"]] = float(r["correct"])
    return out


def intervals(base: dict[str, dict], tuned: dict[str, dict]) -> dict[str, dict[str, list]]:
    """Per benchmark, the 95% interval of tuned − base over its items (one run: item
    variance; forgetful.report.stats.paired_items). A benchmark that both scored must be
    scored on the same items; one that only one side scored (a column such as in-template
    turned off for one evaluation) has no difference and gets no interval."""
    return {name: {"difference_ci": paired_items(items, tuned[name])["difference_ci"]}
            for name, items in base.items() if items and tuned.get(name)}


NEAR_CHANCE = "general (near chance)"
SUITE = "general suite"


def compare(base: dict[str, Any], tuned: dict[str, Any], trained: set[str],
            min_above_chance: float = 0.0) -> dict[str, Any]:
    """Rows of base vs tuned: gains on trained tasks, retention everywhere else. A general
    benchmark on which the base scores less than `min_above_chance` above chance is shown
    (kind "general (near chance)") but not counted in what was kept: a model that only
    guesses there has nothing to forget. The "general suite" row pools the items of every
    counted general benchmark (item-weighted)."""
    rows = []
    for task, s in base["tasks"].items():
        rows.append({"benchmark": task, "kind": "trained task" if task in trained else
                     "untrained task", "measure": s["metric"], "base": s["score"],
                     "tuned": tuned["tasks"][task]["score"], "n": s.get("n")})
    for name, s in base["general"].items():
        near = s["acc"] < s.get("chance", 0.0) + min_above_chance
        rows.append({"benchmark": name, "kind": NEAR_CHANCE if near else "general",
                     "measure": "acc", "base": s["acc"], "tuned": tuned["general"][name]["acc"],
                     "acc_norm_base": s.get("acc_norm"),
                     "acc_norm_tuned": tuned["general"][name].get("acc_norm"), "n": s["n"]})
    counted = [r for r in rows if r["kind"] == "general"]
    details = task_details(base, tuned)
    if len(counted) > 1:
        n = sum(r["n"] for r in counted)
        rows.append({"benchmark": SUITE, "kind": SUITE, "measure": "acc", "n": n,
                     **{k: round(sum(r[k] * r["n"] for r in counted) / n, 4)
                        for k in ("base", "tuned")}})
    for row in rows + details:
        row["difference"] = round(row["tuned"] - row["base"], 4)
    for row in rows:
        row["retention"] = round(row["tuned"] / row["base"], 4) if row["base"] > 0 else None
    learned = [r for r in rows if r["kind"] == "trained task"]
    kept = [r for r in rows if r["kind"] in ("untrained task", "general")]
    retentions = [r["retention"] for r in kept if r["retention"] is not None]
    return {
        "rows": rows,
        "task_details": details,
        "mean_gain": round(sum(r["difference"] for r in learned) / len(learned), 4)
        if learned else None,
        "mean_retained_difference": round(sum(r["difference"] for r in kept) / len(kept), 4)
        if kept else None,
        "mean_retention": round(sum(retentions) / len(retentions), 4) if retentions else None,
    }


def task_details(base: dict[str, Any], tuned: dict[str, Any]) -> list[dict[str, Any]]:
    """Second columns of the task rows: built-in tasks' in-template score (training frames,
    unseen fillings: what template recall alone can reach) and classification tasks'
    answer format (the greedy answer is exactly the label)."""
    rows = []
    for task, s in base["tasks"].items():
        after = tuned["tasks"].get(task, {})
        if "in_template" in s and "in_template" in after:
            rows.append({"benchmark": detail(task, IN_TEMPLATE), "task": task,
                         "column": IN_TEMPLATE, "measure": s["metric"],
                         "n": s["in_template"]["n"], "base": s["in_template"]["score"],
                         "tuned": after["in_template"]["score"]})
        if "answer_format" in s and "answer_format" in after:
            rows.append({"benchmark": detail(task, ANSWER_FORMAT), "task": task,
                         "column": ANSWER_FORMAT, "measure": "exact_match", "n": s["n"],
                         "base": s["answer_format"], "tuned": after["answer_format"]})
        if "likelihood_gap" in s and "likelihood_gap" in after:
            rows.append({"benchmark": detail(task, GAP), "task": task, "column": GAP,
                         "measure": "nats", "n": s["n"], "base": s["likelihood_gap"],
                         "tuned": after["likelihood_gap"]})
    return rows


def pooled_items(items: dict[str, dict[str, float]], rows: list[dict]) -> dict[str, float]:
    """The per-item scores of every counted general benchmark, in one dict (the suite row's
    bootstrap)."""
    return {i: v for r in rows if r["kind"] == "general" for i, v in items.get(r["benchmark"],
                                                                             {}).items()}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown(result: dict[str, Any], samples: list[tuple[str, str, str]],
             train: dict[str, Any], figures: list[str], remedy: list[str] | None = None
             ) -> str:
    """The report; `remedy`: the Remedy section's lines (forgetful.report.remedy), if any."""
    learned = [r["benchmark"] for r in result["rows"] if r["kind"] == "trained task"]
    kept = [r["benchmark"] for r in result["rows"] if r["kind"] in ("untrained task", "general")]
    lines = ["# Forgetting report", "",
             f"Mean gain on trained tasks: **{pct(result['mean_gain'])} points**. "
             f"Mean change elsewhere: **{pct(result['mean_retained_difference'])} points** "
             f"(mean retention {pct(result['mean_retention'])}%).", "",
             f"The gain is the mean over the trained tasks ({', '.join(learned) or 'none'}); "
             f"the change elsewhere the mean over {len(kept)} rows, each counting once "
             f"whatever its size ({', '.join(kept) or 'none'}); the general suite's pooled, "
             "item-weighted change follows.", "",
             *suite_line(result["rows"]),
             "| benchmark | kind | measure | items | base | tuned | difference (95% CI) | "
             "retention | acc_norm base → tuned |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        retention = ("n/a" if r["retention"] is None else f"{100 * r['retention']:.0f}%") \
            if r["kind"] != "trained task" else "—"
        ci = r.get("difference_ci")
        interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
        norm = (f"{pct(r['acc_norm_base'])} → {pct(r['acc_norm_tuned'])}"
                if r.get("acc_norm_base") is not None else "—")
        lines.append(f"| {r['benchmark']} | {r['kind']} | {r['measure']} | {r.get('n', '')} | "
                     f"{pct(r['base'])} | "
                     f"{pct(r['tuned'])} | {100 * r['difference']:+.1f}{interval} | "
                     f"{retention} | {norm} |")
    lines += ["", "Scores in percent; difference in points, with its paired 95% interval over "
              "items (one run: it counts item variance, not another training seed's; "
              "`make seeds` measures both). acc_norm: lm-evaluation-harness's length-normalised "
              "accuracy (its usual figure for ARC-Challenge and OpenBookQA), base → tuned. "
              "Retention = tuned / base, shown for what the model should "
              "keep (n/a when the base scores 0). A general benchmark on which the base scores "
              "less than report.min_above_chance above chance is shown as near chance and not "
              "counted in the mean change elsewhere. A built-in task's row scores its held-out "
              "test split: sentence frames, names and nouns that training never showed.", ""]
    lines += details_markdown(result.get("task_details", []))
    if result.get("forgetting_too_much"):
        lines += [f"**Forgetting too much:** the mean change elsewhere is below "
                  f"-{pct(result['max_forgetting'])} points (report.max_forgetting).", ""]
    lines += text_markdown(result.get("text", []), result.get("drift"))
    lines += probe_markdown(result.get("probe"))
    lines += remedy or []
    if any(f.endswith("experiments.png") for f in figures):
        lines += ["`experiments.png`: learning vs forgetting, this run against every other run "
                  "of the MLflow experiment (the one figure read from MLflow).", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    if train:
        lines += ["", "## Training", "",
                  f"{train.get('steps')} steps, final loss {train.get('final_loss')}, eval loss "
                  f"{train.get('eval_loss')}, "
                  f"{train.get('trainable_params')} trainable parameters."]
    if samples:
        lines += ["", "## Sample generations on general prompts", "",
                  "| prompt | base | tuned |", "|---|---|---|"]
        for prompt, before, after in samples:
            cells = [c.replace("|", "\\|").replace("\n", " ") for c in (prompt, before, after)]
            lines.append(f"| {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines) + "\n"


def details_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Tasks, second columns", "",
             "| task | column | measure | items | base | tuned | difference (95% CI) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        ci = r.get("difference_ci")
        if r["measure"] == "nats":  # not a share of items: the values as they are
            interval = f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""
            lines.append(f"| {r['task']} | {r['column']} | {r['measure']} | {r['n']} | "
                         f"{r['base']:+.2f} | {r['tuned']:+.2f} | "
                         f"{r['difference']:+.2f}{interval} |")
            continue
        interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
        lines.append(f"| {r['task']} | {r['column']} | {r['measure']} | {r['n']} | "
                     f"{pct(r['base'])} | {pct(r['tuned'])} | "
                     f"{100 * r['difference']:+.1f}{interval} |")
    notes = ["In-template: test prompts built from the training sentence frames with "
             "unseen fillings; the gap to the held-out row is template recall. Answer "
             "format: the greedy answer is exactly the label word (a base model that "
             "answers in sentences fails it while knowing the label)."]
    if any(r["column"] == GAP for r in rows):
        notes.append("Likelihood gap (preference tasks): the mean log-likelihood of the "
                     "chosen answer minus the rejected one, in nats; tuned − base is the "
                     "mean implicit DPO reward margin divided by β (the base is the "
                     "reference), with its 95% interval over the held-out pairs.")
    return lines + ["", " ".join(notes), ""]


def headline(result: dict[str, Any]) -> str:
    """The report's first lines, for the MLflow run's description."""
    gate = ("over report.max_forgetting" if result.get("forgetting_too_much") else
            "within report.max_forgetting")
    return "\n\n".join([
        f"Mean gain on trained tasks: **{pct(result['mean_gain'])} points**. Mean change "
        f"elsewhere: **{pct(result['mean_retained_difference'])} points** ({gate}).",
        *[line for line in suite_line(result["rows"]) if line]])


def suite_line(rows: list[dict]) -> list[str]:
    """The general suite's headline: pooled items, change, interval, verdict."""
    suite = next((r for r in rows if r["kind"] == SUITE), None)
    if suite is None:
        return []
    counted = [r["benchmark"] for r in rows if r["kind"] == "general"]
    ci = suite.get("difference_ci")
    verdict = "" if not ci else (" — inconclusive (the interval covers zero)"
                                 if ci[0] <= 0 <= ci[1] else " — a real change")
    interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
    return [f"General suite: {suite['n']} items over {len(counted)} skills "
            f"({', '.join(counted)}): base {pct(suite['base'])}%, tuned {pct(suite['tuned'])}%, "
            f"change **{100 * suite['difference']:+.1f} points**{interval}{verdict}.", ""]


def text_rows(base: dict[str, Any], tuned: dict[str, Any]) -> list[dict[str, Any]]:
    """Loss on plain text, base vs tuned: the rise in NLL per token is forgetting."""
    return [{"corpus": name, "base_nll": s["nll"], "tuned_nll": tuned["text"][name]["nll"],
             "rise": round(tuned["text"][name]["nll"] - s["nll"], 4),
             "base_perplexity": s["perplexity"],
             "tuned_perplexity": tuned["text"][name]["perplexity"]}
            for name, s in base.get("text", {}).items() if name in tuned.get("text", {})]


def ratio_bootstrap(base: Any, tuned: Any, weights: Any, p: ReportParams) -> list[float] | None:
    """95% interval of sum(tuned - base) / sum(weights) over resampled items (documents or
    prompts), for token-weighted means such as NLL per token."""
    import numpy as np

    if not p.bootstrap or not len(weights):
        return None
    rng = np.random.default_rng(p.seed)
    b, t, w = (np.asarray(x, dtype=float) for x in (base, tuned, weights))
    idx = rng.integers(0, len(w), size=(p.bootstrap, len(w)))
    rises = (t[idx] - b[idx]).sum(1) / w[idx].sum(1)
    return [round(float(v), 4) for v in np.percentile(rises, [2.5, 97.5])]


def text_intervals(base_rows: list[dict], tuned_rows: list[dict], p: ReportParams
                   ) -> dict[str, list[float] | None]:
    out = {}
    tuned = {r["id"]: r for r in tuned_rows if r["kind"] == "text"}
    for name in sorted({r["task"] for r in base_rows if r["kind"] == "text"}):
        docs = [r for r in base_rows if r["kind"] == "text" and r["task"] == name
                and r["id"] in tuned]
        out[name] = ratio_bootstrap([-r["loglikelihood"] for r in docs],
                                    [-tuned[r["id"]]["loglikelihood"] for r in docs],
                                    [r["tokens"] for r in docs], p)
    return out


def text_markdown(rows: list[dict], drift: dict[str, Any] | None) -> list[str]:
    def ci(interval: list[float] | None) -> str:
        return f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""

    lines = []
    if rows:
        lines += ["## Loss on general text", "",
                  "| corpus | base NLL | tuned NLL | rise (95% CI) | base ppl | tuned ppl |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['corpus']} | {r['base_nll']:.4f} | {r['tuned_nll']:.4f} | "
                  f"{r['rise']:+.4f}{ci(r.get('rise_ci'))} | {r['base_perplexity']} | "
                  f"{r['tuned_perplexity']} |" for r in rows]
        lines += ["", "NLL in nats per token (rolling windows); a rise is forgetting.", ""]
    if drift:
        lines += ["## Drift", "",
                  f"The base model's own answers to {drift['prompts']} general prompts "
                  f"({drift['answer_tokens']} tokens) cost {drift['base_nll']:.4f} nats per "
                  f"token under the base and {drift['tuned_nll']:.4f} under the tuned model: "
                  f"drift **{drift['drift']:+.4f}**{ci(drift.get('drift_ci'))} nats per token "
                  "(how far the model moved where it was not trained).", ""]
    return lines


def plot(result: dict[str, Any], curve: list[dict], scatter: tuple[list[dict], dict],
         folder: Path) -> list[str]:
    from forgetful.report import figures

    figures.scores(result["rows"], folder / "forgetting.png")
    names = ["forgetting.png"]
    if curve:
        figures.curve(curve, folder / "train_loss.png")
        names.append("train_loss.png")
    probe = result.get("probe")
    if probe and probe["points"]:
        figures.probe(probe["points"], probe["items"], set(probe["trained"]),
                      folder / "probe.png")
        names.append("probe.png")
    if scatter[1]["gain"] is not None and scatter[1]["change"] is not None:
        figures.experiments(*scatter, folder / "experiments.png")
        names.append("experiments.png")
    return names


def probe_markdown(probe: dict[str, Any] | None) -> list[str]:
    """The probe's points as a table: learning and forgetting against step."""
    if not probe or not probe["points"]:
        return []
    names = [k for k in probe["points"][0] if k != "step"]
    head = ["general suite subsample" if n == "general" else n for n in names]
    lines = ["## Forgetting during training", "",
             f"Every {probe['every']} optimizer steps the training callback scored a fixed "
             f"probe set: {probe['items'].get('general', 0)} general-suite items (acc) and "
             "each evaluated task's held-out items (its metric); forgetful/train/probes.py. "
             "Scores in percent; `probe.png` draws them.", "",
             "| step | " + " | ".join(f"{h} ({probe['items'].get(n, '?')})"
                                      for h, n in zip(head, names, strict=True)) + " |",
             "|---:|" + "---:|" * len(names)]
    for x in probe["points"]:
        lines.append(f"| {x['step']} | " + " | ".join(pct(x[n]) for n in names) + " |")
    return lines + [""]


def other_runs(tp: tracking.TrackingParams, run_id: str | None) -> list[dict]:
    """Learning and forgetting of every other run in the MLflow experiment."""
    keys = ("forgetting.mean_gain", "forgetting.mean_retained_difference")
    return [{"name": r["run_name"], "gain": r[keys[0]], "change": r[keys[1]]}
            for r in tracking.runs_with(tp, keys) or [] if r["run_id"] != run_id]
