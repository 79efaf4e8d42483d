"""Wall time of a command (e.g. `make run` in a fresh clone) and of each pipeline stage.

Runs the command given after the options and times it; each stage's wall time (its
process start-up, imports and model loads included) is the time from DVC's "Running
stage" line to the next one (or the end). Then it reads the seconds the stages' own timers
record in their metrics files (reports/metrics/train.json, reports/eval/*/scores.json,
reports/metrics/merge.json): wall minus own timer is what a stage spends outside its
work. Writes reports/timings.json and reports/timings.md, where the README's timings
table comes from. Standard library only, so it runs before `make` has created the
virtual environment.

Run:    python3 benchmarks/timings.py make run        # in a fresh clone: install + dvc repro
        python3 benchmarks/timings.py --label "dvc repro, installed" dvc repro -f
        python3 benchmarks/timings.py --compare before.json after.json --out reports/speed/pipeline
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path


def seconds(path: str, key: str) -> float | None:
    file = Path(path)
    return json.loads(file.read_text()).get(key) if file.exists() else None


# stage -> (its row in the table, the metrics file and key of the stage's own timer)
OWN_TIMERS = {
    "train_adapter": ("train_adapter (training loop, probes included)",
                      "reports/metrics/train.json", "train_seconds"),
    "merge_adapter": ("merge_adapter (merge + logit check)", "reports/metrics/merge.json",
                      "seconds"),
    "evaluate@base": ("evaluate@base", "reports/eval/base/scores.json", "seconds"),
    "evaluate@tuned": ("evaluate@tuned", "reports/eval/tuned/scores.json", "seconds"),
    "measure_drift": ("measure_drift", "reports/eval/drift/scores.json", "seconds"),
    "select_model": ("select_model (candidates on the selection split, the chosen on test)",
                     "reports/remedy/selection.json", "seconds"),
}
PROBES = "  of which forgetting probes"


def compare(before: Path, after: Path, out: Path) -> None:
    """Two runs' JSONs side by side (e.g. `dvc repro -f` before and after a speed-up):
    out.json holds both, out.md the table of stage wall times and the totals."""
    b, c = json.loads(before.read_text()), json.loads(after.read_text())
    out.with_suffix(".json").write_text(json.dumps({"before": b, "after": c}, indent=2) + "\n")
    lines = ["# Pipeline wall time, before and after", "",
             f"Before: {b['label']} ({b['date']}); after: {c['label']} ({c['date']}), back to "
             f"back on {c['machine']['cpus']} CPUs. Stage wall time: from DVC's \"Running "
             "stage\" line to the next (start-up, imports, model loads, DVC's hashing "
             "included); in brackets the stage's own timer.", "",
             "| stage | before (s) | after (s) | after / before |", "|---|---:|---:|---:|"]
    def cell(run: dict, stage: str) -> str:
        if stage not in run["stage_wall_seconds"]:
            return "— (not in this pipeline)"
        timer = run["stages_seconds"].get(OWN_TIMERS.get(stage, ("",))[0])
        return f"{run['stage_wall_seconds'][stage]:.1f}" + (f" ({timer:.1f})" if timer else "")

    # every stage of either run, in the order they ran (a stage one pipeline lacks: "—")
    stages = list(dict.fromkeys([*b["stage_wall_seconds"], *c["stage_wall_seconds"]]))
    for stage in stages:
        wall, after = b["stage_wall_seconds"].get(stage), c["stage_wall_seconds"].get(stage)
        ratio = f"{after / wall:.2f}" if wall and after else "—"
        lines.append(f"| {stage} | {cell(b, stage)} | {cell(c, stage)} | {ratio} |")
    lines += [f"| **total** | **{b['total_seconds']:.0f}** | **{c['total_seconds']:.0f}** | "
              f"**{c['total_seconds'] / b['total_seconds']:.2f}** |", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="what the command is, for the table")
    parser.add_argument("--out", type=Path, default=Path("reports/timings"))
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="no command: the two runs' JSONs side by side in <out>.md")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    if a.compare:
        compare(*a.compare, a.out)
        return
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []  # (stage, when its "Running stage" line came)
    with subprocess.Popen(a.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            found = re.match(r"Running stage '([^']+)'", line)
            if found:
                marks.append((found.group(1), time.perf_counter()))
    if proc.returncode:
        raise SystemExit(f"{' '.join(a.command)} exited {proc.returncode}")
    total = round(time.perf_counter() - started, 1)
    ends = [t for _, t in marks[1:]] + [started + total]
    walls = {name: round(end - t, 1) for (name, t), end in zip(marks, ends, strict=True)}
    train = json.loads(Path("reports/metrics/train.json").read_text())
    stages = {}
    for stage, (label, path, key) in OWN_TIMERS.items():
        stages[label] = seconds(path, key)
        if stage == "train_adapter":
            stages[PROBES] = train.get("probe_seconds")
    result = {"command": " ".join(a.command), "label": a.label or " ".join(a.command),
              "total_seconds": total, "stages_seconds": stages, "stage_wall_seconds": walls,
              "train": {k: train.get(k) for k in ("steps", "tokens_per_s", "probes")},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d")}
    a.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Timings", "",
             f"`{result['command']}` on {os.cpu_count()} CPUs ({result['date']}): "
             f"**{total:.0f} s** in all. Stage figures are the stages' own timers (their "
             "metrics files), without Python start-up.", "",
             "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {value:.0f} |" for name, value in stages.items() if value is not None]
    lines += [f"| **total: {result['label']}** | **{total:.0f}** |", ""]
    if walls:
        lines += ["Each stage's wall time, from DVC's \"Running stage\" line to the next "
                  "(process start-up, imports, model loads and DVC's hashing included):", "",
                  "| stage | wall seconds |", "|---|---:|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in walls.items()]
        lines += [f"| stages not run (cached) and DVC before the first | "
                  f"{marks[0][1] - started:.1f} |", ""]
    a.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
