"""Stage report: what the tuned model learned and what it forgot, base vs tuned.

Deps:   this module, both evaluations (scores, predictions, samples), the drift measurement, the
        mixture's composition (which tasks were trained), the training curve, the adapter's
        run_info (MLflow run). Also reads, not as a dep, the other runs in the MLflow
        experiment, for the learning-vs-forgetting scatter across experiments.
Params: report.samples.
Outs:   <markdown> (reports/forgetting.md), <figures>/ (PNG plots), metrics <metrics>
        (gain per trained task; difference and retention per untrained benchmark), and the
        DVC plots file <plot> (benchmark, base, tuned).
Run:    python -m stages.report --base-eval reports/eval/base --tuned-eval reports/eval/tuned \
            --mix reports/metrics/mix.json --curve reports/plots/train_curve.csv \
            --adapter models/adapter --markdown reports/forgetting.md \
            --figures reports/figures --metrics reports/metrics/forgetting.json \
            --plot reports/plots/forgetting.csv --drift reports/eval/drift

Trained tasks (weight > 0 in the mixture) are what the model should learn; every other
task and every general benchmark is what it should keep. Retention is tuned / base.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stages.common import tracking
from stages.common.artifacts import (
    atomic_dir,
    read_json,
    read_jsonl,
    weights_sha256,
    write_json,
    write_text,
)
from stages.common.cli import run_stage
from stages.common.config import DataError, build, load_params, require, section


@dataclass(frozen=True)
class ReportParams:
    samples: int  # general prompts shown side by side, before and after
    bootstrap: int = 1000  # paired bootstrap resamples for the 95% intervals (0 = none)
    seed: int = 0  # bootstrap seed
    max_forgetting: float = 0.10  # mean drop elsewhere (fraction) that marks a run
    on_forgetting: Literal["warn", "fail"] = "warn"  # past max_forgetting: warn, or fail

    def __post_init__(self) -> None:
        require(self.samples >= 0, "samples", "must be >= 0")
        require(self.bootstrap >= 0, "bootstrap", "must be >= 0")
        require(0 <= self.max_forgetting <= 1, "max_forgetting", "must be in [0, 1]")


class ForgettingTooMuch(DataError):
    """The tuned model lost more than report.max_forgetting elsewhere (on_forgetting: fail)."""


def item_scores(predictions: list[dict]) -> dict[str, dict[str, float]]:
    """benchmark -> item id -> 1/0: task rows by their metric, general rows by acc."""
    out: dict[str, dict[str, float]] = {}
    for r in predictions:
        if r["kind"] in ("task", "general"):
            value = r["correct"] if r["kind"] == "task" else r["acc"]
            out.setdefault(r["task"], {})[r["id"]] = float(value)
    return out


def bootstrap(base: dict[str, dict], tuned: dict[str, dict], p: ReportParams
              ) -> dict[str, dict[str, list[float]]]:
    """Paired percentile bootstrap over items: 95% intervals of base, tuned, difference."""
    import numpy as np

    rng = np.random.default_rng(p.seed)
    intervals = {}
    for name, items in base.items():
        ids = sorted(set(items) & set(tuned.get(name, {})))
        if not ids or not p.bootstrap:
            continue
        b = np.array([items[i] for i in ids])
        t = np.array([tuned[name][i] for i in ids])
        idx = rng.integers(0, len(ids), size=(p.bootstrap, len(ids)))
        def ci(x: Any) -> list[float]:
            return [round(float(v), 4) for v in np.percentile(x, [2.5, 97.5])]
        intervals[name] = {"base_ci": ci(b[idx].mean(1)), "tuned_ci": ci(t[idx].mean(1)),
                           "difference_ci": ci((t[idx] - b[idx]).mean(1))}
    return intervals


def compare(base: dict[str, Any], tuned: dict[str, Any], trained: set[str]) -> dict[str, Any]:
    """Rows of base vs tuned: gains on trained tasks, retention everywhere else."""
    rows = []
    for task, s in base["tasks"].items():
        rows.append({"benchmark": task, "kind": "trained task" if task in trained else
                     "untrained task", "measure": s["metric"], "base": s["score"],
                     "tuned": tuned["tasks"][task]["score"]})
    for name, s in base["general"].items():
        rows.append({"benchmark": name, "kind": "general", "measure": "acc",
                     "base": s["acc"], "tuned": tuned["general"][name]["acc"]})
    for row in rows:
        row["difference"] = round(row["tuned"] - row["base"], 4)
        row["retention"] = round(row["tuned"] / row["base"], 4) if row["base"] > 0 else None
    learned = [r for r in rows if r["kind"] == "trained task"]
    kept = [r for r in rows if r["kind"] != "trained task"]
    retentions = [r["retention"] for r in kept if r["retention"] is not None]
    return {
        "rows": rows,
        "mean_gain": round(sum(r["difference"] for r in learned) / len(learned), 4)
        if learned else None,
        "mean_retained_difference": round(sum(r["difference"] for r in kept) / len(kept), 4)
        if kept else None,
        "mean_retention": round(sum(retentions) / len(retentions), 4) if retentions else None,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown(result: dict[str, Any], samples: list[tuple[str, str, str]],
             train: dict[str, Any], figures: list[str]) -> str:
    lines = ["# Forgetting report", "",
             f"Mean gain on trained tasks: **{_pct(result['mean_gain'])} points**. "
             f"Mean change elsewhere: **{_pct(result['mean_retained_difference'])} points** "
             f"(mean retention {_pct(result['mean_retention'])}%).", "",
             "| benchmark | kind | measure | base | tuned | difference (95% CI) | retention |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        retention = ("n/a" if r["retention"] is None else f"{100 * r['retention']:.0f}%") \
            if r["kind"] != "trained task" else "—"
        ci = r.get("difference_ci")
        interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
        lines.append(f"| {r['benchmark']} | {r['kind']} | {r['measure']} | {_pct(r['base'])} | "
                     f"{_pct(r['tuned'])} | {100 * r['difference']:+.1f}{interval} | "
                     f"{retention} |")
    lines += ["", "Scores in percent; difference in points, with its paired bootstrap 95% "
              "interval over items. Retention = tuned / base, shown for what the model should "
              "keep (n/a when the base scores 0).", ""]
    if result.get("forgetting_too_much"):
        lines += [f"**Forgetting too much:** the mean change elsewhere is below "
                  f"-{_pct(result['max_forgetting'])} points (report.max_forgetting).", ""]
    lines += text_markdown(result.get("text", []), result.get("drift"))
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
    from stages.common import figures

    figures.scores(result["rows"], folder / "forgetting.png")
    names = ["forgetting.png"]
    if curve:
        figures.curve(curve, folder / "train_loss.png")
        names.append("train_loss.png")
    if scatter[1]["gain"] is not None and scatter[1]["change"] is not None:
        figures.experiments(*scatter, folder / "experiments.png")
        names.append("experiments.png")
    return names


def other_runs(tp: tracking.TrackingParams, run_id: str | None) -> list[dict]:
    """Learning and forgetting of every other run in the MLflow experiment."""
    keys = ("forgetting.mean_gain", "forgetting.mean_retained_difference")
    return [{"name": r["run_name"], "gain": r[keys[0]], "change": r[keys[1]]}
            for r in tracking.runs_with(tp, keys) or [] if r["run_id"] != run_id]


def main(a: argparse.Namespace) -> None:
    params = load_params(a.params)
    p = build(ReportParams, section(params, "report"), "report")
    tp = tracking.load(params)
    base, tuned = read_json(a.base_eval / "scores.json"), read_json(a.tuned_eval / "scores.json")
    trained = set(read_json(a.mix)["tasks"])
    result = compare(base, tuned, trained)
    base_rows = read_jsonl(a.base_eval / "predictions.jsonl")
    tuned_rows = read_jsonl(a.tuned_eval / "predictions.jsonl")
    intervals = bootstrap(item_scores(base_rows), item_scores(tuned_rows), p)
    for row in result["rows"]:
        row.update(intervals.get(row["benchmark"], {}))
    result["text"] = text_rows(base, tuned)
    text_ci = text_intervals(base_rows, tuned_rows, p)
    for row in result["text"]:
        row["rise_ci"] = text_ci.get(row["corpus"])
    if a.drift:
        drift_items = read_jsonl(a.drift / "items.jsonl")
        result["drift"] = {k: v for k, v in read_json(a.drift / "scores.json").items()
                           if k != "seconds"}
        result["drift"]["drift_ci"] = ratio_bootstrap(
            [r["base_nll"] for r in drift_items], [r["tuned_nll"] for r in drift_items],
            [r["tokens"] for r in drift_items], p)
    dropped = result["mean_retained_difference"]
    result["max_forgetting"] = p.max_forgetting
    result["forgetting_too_much"] = dropped is not None and dropped < -p.max_forgetting
    if result["forgetting_too_much"]:
        message = (f"the tuned model lost {_pct(-dropped)} points on average where it was not "
                   f"trained, more than report.max_forgetting={p.max_forgetting}")
        if p.on_forgetting == "fail":
            raise ForgettingTooMuch(message + "; nothing was written (on_forgetting: fail)")
        print(f"warning: {message}")
    with open(a.curve) as fh:
        curve = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    before = {r["id"]: r for r in read_jsonl(a.base_eval / "samples.jsonl")}
    after = read_jsonl(a.tuned_eval / "samples.jsonl")
    samples = [(r["instruction"], before[r["id"]]["prediction"], r["prediction"])
               for r in after[: p.samples]]
    adapter_info = read_json(a.adapter / "run_info.json")
    run_id = tracking.find_run(tp, weights_sha256(a.adapter))
    others = other_runs(tp, run_id) if run_id else []
    current = {"name": "this run", "gain": result["mean_gain"],
               "change": result["mean_retained_difference"]}
    with atomic_dir(a.figures) as tmp:
        names = plot(result, curve, (others, current), tmp)
    rel = [str((a.figures / n).relative_to(a.markdown.parent)) for n in names]
    write_text(a.markdown, markdown(result, samples, adapter_info.get("metrics", {}), rel))
    write_json(a.metrics, result)
    write_text(a.plot, "benchmark,base,tuned\n" + "".join(
        f"{r['benchmark']},{r['base']},{r['tuned']}\n" for r in result["rows"]))
    tracking.log_metrics(tp, run_id, {
        "eval.base": {k: v for k, v in base.items() if k != "model"},
        "forgetting": {k: v for k, v in result.items()
                       if k not in ("rows", "text", "max_forgetting")},
        "forgetting.difference": {r["benchmark"]: r["difference"] for r in result["rows"]},
        "forgetting.text_rise": {r["corpus"]: r["rise"] for r in result["text"]},
    })
    tracking.log_artifacts(tp, run_id, [a.markdown, a.figures, a.metrics, a.plot], "report")
    print(f"report: mean gain {_pct(result['mean_gain'])} pts, mean retention "
          f"{_pct(result['mean_retention'])}% -> {a.markdown}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for arg in ("--base-eval", "--tuned-eval", "--mix", "--curve", "--adapter", "--markdown",
                "--figures", "--metrics", "--plot"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--drift", type=Path, default=None,
                        help="measure_drift's folder (items.jsonl, scores.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args))


if __name__ == "__main__":
    cli()
