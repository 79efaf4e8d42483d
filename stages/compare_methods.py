"""Method comparison: one `dvc exp run` per PEFT method on the same mixture, then a table.

Not a DVC stage: a driver over the pipeline. For each method it runs
`dvc exp run -S train_adapter.method=<m> -S tracking.experiment=<experiment> …`, so every
method is one DVC experiment (see `dvc exp show`) and one MLflow run in one experiment.
The base model's evaluation is computed once and reused from DVC's cache. Then it reads
the runs back from MLflow and writes `reports/methods.md` and two plots: the table
(trainable parameters, adapter size, training time, peak memory, tokens/s, task score,
general score, forgetting) and a learning-vs-forgetting scatter.

Run:    python -m stages.compare_methods --set train_adapter.max_steps=20
        python -m stages.compare_methods --collect-only     # tables from runs already made

Like `dvc exp run`, it leaves the last experiment applied to the workspace; run it in a
clean clone, or return with `git checkout params.yaml dvc.lock reports && dvc checkout`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.artifacts import write_text
from forgetful.core.config import load_params
from forgetful.train.methods import METHODS

# Learning rates that suit each family (PEFT's examples and the methods' papers): soft
# prompts need far larger steps than weight updates; full fine-tuning far smaller.
LEARNING_RATES = {
    "lora": 1e-3, "dora": 1e-3, "rslora": 1e-3, "qlora": 1e-3, "adalora": 2e-3, "ia3": 5e-3,
    "prompt_tuning": 3e-2, "p_tuning": 1e-2, "prefix_tuning": 1e-2, "llama_adapter": 1e-2,
    "full": 5e-5,
}
COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [  # header, MLflow metric, format
    ("trainable params", "train.trainable_params", "{:,.0f}".format),
    ("adapter MB", "train.adapter_mb", "{:.2f}".format),
    ("train s", "train.train_seconds", "{:.0f}".format),
    ("peak MB", "train.peak_memory_mb", "{:.0f}".format),
    ("tokens/s", "train.tokens_per_s", "{:.0f}".format),
    ("task gain (points)", "forgetting.mean_gain", lambda x: f"{100 * x:+.1f}"),
    ("general acc (%)", "eval.tuned.general_mean_acc", lambda x: f"{100 * x:.1f}"),
    ("change elsewhere (points)", "forgetting.mean_retained_difference",
     lambda x: f"{100 * x:+.1f}"),
]


def sweep(methods: list[str], experiment: str, sets: list[str]) -> None:
    for method in methods:
        args = ["dvc", "exp", "run", "-S", f"train_adapter.method={method}",
                "-S", f"tracking.experiment={experiment}",
                # "5.0e-05", not "5e-05": YAML 1.1 (PyYAML) reads the latter as text.
                "-S", f"train_adapter.learning_rate={LEARNING_RATES[method]:.1e}"]
        for item in sets:
            args += ["-S", item]
        print(f"compare_methods: {' '.join(args)}", flush=True)
        started = time.perf_counter()
        subprocess.run(args, check=True)
        print(f"compare_methods: {method} done in {time.perf_counter() - started:.0f}s",
              flush=True)


def collect(experiment: str, since_ms: int = 0) -> dict[str, Any]:
    """The latest finished run of each method in the MLflow experiment."""
    tp = tracking.load(load_params())
    client = tracking.client(tp)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        sys.exit(f"error: no MLflow experiment {experiment!r} in {tracking.tracking_uri(tp)}")
    latest: dict[str, Any] = {}
    for run in client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"]):
        method = run.data.params.get("train_adapter.method")
        if method and run.info.start_time >= since_ms and "forgetting.mean_gain" in \
                run.data.metrics:
            latest[method] = run
    return latest


def base_general(runs: dict[str, Any]) -> str:
    values = {round(100 * r.data.metrics["eval.base.general_mean_acc"], 1)
              for r in runs.values() if "eval.base.general_mean_acc" in r.data.metrics}
    return ", ".join(f"{v:.1f}%" for v in sorted(values)) or "n/a"


def table(runs: dict[str, Any]) -> str:
    header = "| method | merges | " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(COLUMNS)]
    for method in [m for m in METHODS if m in runs]:
        metrics = runs[method].data.metrics
        cells = [fmt(metrics[key]) if key in metrics else "n/a" for _, key, fmt in COLUMNS]
        merge = METHODS[method].merge
        lines.append(f"| {method} | {'no' if merge == 'keep' else 'yes'} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def scatter(runs: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, run in runs.items():
        m = run.data.metrics
        x, y = 100 * m["forgetting.mean_gain"], 100 * m["forgetting.mean_retained_difference"]
        ax.scatter(x, y)
        ax.annotate(method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("learned: mean gain on trained tasks (points)")
    ax.set_ylabel("kept: mean change elsewhere (points)")
    ax.set_title("Learning vs forgetting, one point per method")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--experiment", default="methods", help="MLflow experiment name")
    parser.add_argument("--set", action="append", default=[], dest="sets",
                        help="extra params for every run, as for dvc exp run -S")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports/methods.md"))
    parser.add_argument("--plot", type=Path, default=Path("reports/methods.png"))
    a = parser.parse_args()
    unknown = [m for m in a.methods if m not in METHODS]
    if unknown:
        sys.exit(f"error: unknown method {unknown[0]!r}; methods: {', '.join(METHODS)}")
    started_ms = int(time.time() * 1000)
    if not a.collect_only:
        sweep(a.methods, a.experiment, a.sets)
    runs = collect(a.experiment, 0 if a.collect_only else started_ms)
    scatter(runs, a.plot)
    settings = ", ".join(a.sets) or "params.yaml as it is"
    write_text(a.out, "\n".join([
        "# PEFT methods compared", "",
        f"Same mixture and evaluation for every method; {settings}; learning rate per method "
        "from `stages/compare_methods.py` (LEARNING_RATES). One DVC experiment and one MLflow "
        f"run (experiment `{a.experiment}`) per method.", "", table(runs), "",
        "Task gain: mean change on the trained tasks, in points. Change elsewhere: mean change "
        "on everything else (untrained tasks and the general suite); negative is forgetting. "
        "General acc: the tuned model's mean accuracy on the general suite (base: "
        f"{base_general(runs)}).", "",
        f"![learning vs forgetting]({a.plot.relative_to(a.out.parent)})", ""]))
    print(f"compare_methods: {len(runs)} methods -> {a.out}, {a.plot}")


if __name__ == "__main__":
    main()
