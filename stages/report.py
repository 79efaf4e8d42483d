"""Stage report: what the tuned model learned and what it forgot, base vs tuned.

Deps:   this module, both evaluations (scores, predictions, samples), the drift measurement, the
        mixture's composition (which tasks were trained), the training curve, the adapter's
        run_info (MLflow run), select_model's selection.json (the Remedy section). Also
        reads, not as a dep, the other runs in the MLflow experiment, for the
        learning-vs-forgetting scatter across experiments.
Params: report.samples.
Outs:   <markdown> (reports/forgetting.md), <figures>/ (PNG plots), metrics <metrics>
        (gain per trained task; difference and retention per untrained benchmark), and the
        DVC plots file <plot> (benchmark, base, tuned). To the run in MLflow: the metrics,
        these outs and both evaluations' predictions.jsonl (per-item scores), as artifacts.
Run:    python -m stages.report --base-eval reports/eval/base --tuned-eval reports/eval/tuned \
            --mix reports/metrics/mix.json --curve reports/plots/train_curve.csv \
            --adapter models/adapter --markdown reports/forgetting.md \
            --figures reports/figures --metrics reports/metrics/forgetting.json \
            --plot reports/plots/forgetting.csv --drift reports/eval/drift \
            --probe reports/plots/probe_curve.csv --remedy reports/remedy/selection.json

Trained tasks (weight > 0 in the mixture) are what the model should learn; every other
task and every general benchmark is what it should keep. Retention is tuned / base.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from forgetful.core import tracking
from forgetful.core.artifacts import (
    atomic_dir,
    read_json,
    read_jsonl,
    weights_sha256,
    write_json,
    write_text,
)
from forgetful.core.cli import run_stage
from forgetful.core.config import build, load_params, section
from forgetful.report.forgetting import (
    SUITE,
    ForgettingTooMuch,
    ReportParams,
    compare,
    headline,
    intervals,
    item_scores,
    markdown,
    other_runs,
    pct,
    plot,
    pooled_items,
    ratio_bootstrap,
    text_intervals,
    text_rows,
)
from forgetful.report.remedy import markdown as remedy_markdown


def main(a: argparse.Namespace) -> None:
    params = load_params(a.params)
    p = build(ReportParams, section(params, "report"), "report")
    tp = tracking.load(params)
    base, tuned = read_json(a.base_eval / "scores.json"), read_json(a.tuned_eval / "scores.json")
    mix = read_json(a.mix)
    trained = set(mix["tasks"])
    result = compare(base, tuned, trained, p.min_above_chance)
    base_rows = read_jsonl(a.base_eval / "predictions.jsonl")
    tuned_rows = read_jsonl(a.tuned_eval / "predictions.jsonl")
    base_items, tuned_items = item_scores(base_rows), item_scores(tuned_rows)
    base_items[SUITE] = pooled_items(base_items, result["rows"])
    tuned_items[SUITE] = pooled_items(tuned_items, result["rows"])
    found = intervals(base_items, tuned_items)
    for row in result["rows"] + result["task_details"]:
        row.update(found.get(row["benchmark"], {}))
    result["text"] = text_rows(base, tuned)
    text_ci = text_intervals(base_rows, tuned_rows, p)
    for row in result["text"]:
        row["rise_ci"] = text_ci.get(row["corpus"])
    if a.drift and "skipped" not in read_json(a.drift / "scores.json"):
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
        message = (f"the tuned model lost {pct(-dropped)} points on average where it was not "
                   f"trained, more than report.max_forgetting={p.max_forgetting}")
        if p.on_forgetting == "fail":
            raise ForgettingTooMuch(message + "; nothing was written (on_forgetting: fail)")
        print(f"warning: {message}")
    with open(a.curve) as fh:
        curve = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    adapter_info = read_json(a.adapter / "run_info.json")
    if a.probe and a.probe.exists():
        with open(a.probe) as fh:
            points = [{k: int(v) if k == "step" else float(v) for k, v in row.items() if v}
                      for row in csv.DictReader(fh)]
        result["probe"] = {"points": points, "trained": sorted(trained),
                           "every": adapter_info["params"].get("evaluate_every"),
                           "items": adapter_info.get("metrics", {}).get("probe_items", {})}
    before = {r["id"]: r for r in read_jsonl(a.base_eval / "samples.jsonl")}
    after = read_jsonl(a.tuned_eval / "samples.jsonl")
    samples = [(r["instruction"], before[r["id"]]["prediction"], r["prediction"])
               for r in after[: p.samples]]
    run_id = tracking.find_run(tp, weights_sha256(a.adapter))
    others = other_runs(tp, run_id) if run_id else []
    current = {"name": "this run", "gain": result["mean_gain"],
               "change": result["mean_retained_difference"]}
    with atomic_dir(a.figures) as tmp:
        names = plot(result, curve, (others, current), tmp)
    rel = [str((a.figures / n).relative_to(a.markdown.parent)) for n in names]
    remedy = read_json(a.remedy) if a.remedy and a.remedy.exists() else {"skipped": "none"}
    remedy_lines = None
    if "skipped" not in remedy:
        figure = a.remedy.parent / "remedy.png"
        remedy_lines = remedy_markdown(remedy) + (
            [f"![remedy]({figure.relative_to(a.markdown.parent)})", ""]
            if figure.exists() else [])
        result["remedy"] = {"chosen": remedy["chosen"], "budget": remedy["budget"],
                            "test": {k: remedy["test"][k] for k in ("tuned", "chosen")}}
    write_text(a.markdown, markdown(result, samples, adapter_info.get("metrics", {}), rel,
                                    remedy_lines))
    write_json(a.metrics, result)
    write_text(a.plot, "benchmark,base,tuned\n" + "".join(
        f"{r['benchmark']},{r['base']},{r['tuned']}\n" for r in result["rows"]))
    tracking.log_metrics(tp, run_id, {
        "eval.base": {k: v for k, v in base.items() if k != "model"},
        "mix.contamination": {name: {k: c[k] for k in ("contaminated", "share")}
                              for name, c in mix.get("contamination", {}).items()},
        "forgetting": {k: v for k, v in result.items()
                       if k not in ("rows", "text", "max_forgetting", "task_details",
                                    "probe", "remedy")},
        "forgetting.difference": {r["benchmark"]: r["difference"] for r in result["rows"]},
        "forgetting.text_rise": {r["corpus"]: r["rise"] for r in result["text"]},
    })
    tracking.log_artifacts(tp, run_id, [a.markdown, a.figures, a.metrics, a.plot], "report")
    for name, folder in (("base", a.base_eval), ("tuned", a.tuned_eval)):  # per-item scores:
        # the study redraws from MLflow alone with them (stages/run_study.py --from-mlflow)
        tracking.log_artifacts(tp, run_id, [folder / "predictions.jsonl"], f"eval/{name}")
    tracking.describe(tp, run_id, headline(result))
    # with the remedy on, the champion is select_model's chosen model, not the adapter
    passed = not result["forgetting_too_much"] and "skipped" in remedy
    version = tracking.register(tp, run_id, tracking.find_model(tp, run_id, "adapter"),
                                passed=passed)
    if version:
        print(f"report: registered {tp.register} version {version} (candidate"
              f"{', champion' if passed else ''})")
    print(f"report: mean gain {pct(result['mean_gain'])} pts, mean retention "
          f"{pct(result['mean_retention'])}% -> {a.markdown}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for arg in ("--base-eval", "--tuned-eval", "--mix", "--curve", "--adapter", "--markdown",
                "--figures", "--metrics", "--plot"):
        parser.add_argument(arg, type=Path, required=True)
    parser.add_argument("--drift", type=Path, default=None,
                        help="measure_drift's folder (items.jsonl, scores.json)")
    parser.add_argument("--probe", type=Path, default=None,
                        help="train_adapter's probe CSV (forgetting during training)")
    parser.add_argument("--remedy", type=Path, default=None,
                        help="select_model's selection.json (the Remedy section)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args))


if __name__ == "__main__":
    cli()
