"""Stage report: what the tuned model learned and what it forgot, base vs tuned.

Deps:   this module, both evaluations (scores and predictions), the mixture's composition
        (which tasks were trained), the training curve, the adapter's run_info (MLflow run).
Params: report.samples.
Outs:   <markdown> (reports/forgetting.md), <figures>/ (PNG plots), metrics <metrics>
        (gain per trained task; difference and retention per untrained benchmark), and the
        DVC plots file <plot> (benchmark, base, tuned).
Run:    python -m stages.report --base-eval reports/eval/base --tuned-eval reports/eval/tuned \
            --mix reports/metrics/mix.json --curve reports/plots/train_curve.csv \
            --adapter models/adapter --markdown reports/forgetting.md \
            --figures reports/figures --metrics reports/metrics/forgetting.json \
            --plot reports/plots/forgetting.csv

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
from stages.common.artifacts import atomic_dir, read_json, read_jsonl, write_json, write_text
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
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    if train:
        lines += ["", "## Training", "",
                  f"{train.get('steps')} steps, final loss {train.get('final_loss')}, eval loss "
                  f"{train.get('eval_loss')}, {train.get('tokens_per_s')} tokens/s, "
                  f"{train.get('trainable_params')} trainable parameters."]
    if samples:
        lines += ["", "## Sample generations on general prompts", "",
                  "| prompt | base | tuned |", "|---|---|---|"]
        for prompt, before, after in samples:
            cells = [c.replace("|", "\\|").replace("\n", " ") for c in (prompt, before, after)]
            lines.append(f"| {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], curve: list[dict], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["base"] for r in rows], 0.4, label="base")
    ax.bar([x + 0.2 for x in xs], [r["tuned"] for r in rows], 0.4, label="tuned")
    ax.set_xticks(list(xs), [f"{r['benchmark']}\n({r['kind']})" for r in rows], fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("score")
    ax.set_title("Base vs tuned: learned (trained tasks) and kept (the rest)")
    ax.legend(loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "forgetting.png", dpi=110)
    plt.close(fig)
    names = ["forgetting.png"]
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (completion tokens)")
        ax.set_title("Training curve")
        fig.tight_layout()
        fig.savefig(folder / "train_loss.png", dpi=110)
        plt.close(fig)
        names.append("train_loss.png")
    return names


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
    before = {r["id"]: r for r in base_rows if r["kind"] == "sample"}
    after = [r for r in tuned_rows if r["kind"] == "sample"]
    samples = [(r["instruction"], before[r["id"]]["prediction"], r["prediction"])
               for r in after[: p.samples]]
    adapter_info = read_json(a.adapter / "run_info.json")
    with atomic_dir(a.figures) as tmp:
        names = plot(result, curve, tmp)
    rel = [str((a.figures / n).relative_to(a.markdown.parent)) for n in names]
    write_text(a.markdown, markdown(result, samples, adapter_info.get("metrics", {}), rel))
    write_json(a.metrics, result)
    write_text(a.plot, "benchmark,base,tuned\n" + "".join(
        f"{r['benchmark']},{r['base']},{r['tuned']}\n" for r in result["rows"]))
    run_id = tracking.reopen(tp, adapter_info.get("mlflow_run_id"))
    tracking.log_metrics(tp, run_id, {
        "eval.base": {k: v for k, v in base.items() if k != "model"},
        "forgetting": {k: v for k, v in result.items() if k not in ("rows", "max_forgetting")},
        "forgetting.difference": {r["benchmark"]: r["difference"] for r in result["rows"]},
    })
    tracking.log_artifacts(tp, run_id, [a.markdown, a.figures, a.metrics], "report")
    print(f"report: mean gain {_pct(result['mean_gain'])} pts, mean retention "
          f"{_pct(result['mean_retention'])}% -> {a.markdown}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for arg in ("--base-eval", "--tuned-eval", "--mix", "--curve", "--adapter", "--markdown",
                "--figures", "--metrics", "--plot"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args))


if __name__ == "__main__":
    cli()
