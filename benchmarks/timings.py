"""Wall time of a command (e.g. `make run` in a fresh clone) and of each pipeline stage.

Runs the command given after the options, times it, then reads the per-stage seconds the
stages record in their metrics files (reports/metrics/train.json, reports/eval/*/
scores.json, reports/metrics/merge.json) and writes reports/timings.json and
reports/timings.md, where the README's timings table comes from. Standard library only,
so it runs before `make` has created the virtual environment.

Run:    python3 benchmarks/timings.py make run        # in a fresh clone: install + dvc repro
        python3 benchmarks/timings.py --label "dvc repro, installed" dvc repro -f
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def seconds(path: str, key: str) -> float | None:
    file = Path(path)
    return json.loads(file.read_text()).get(key) if file.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="what the command is, for the table")
    parser.add_argument("--out", type=Path, default=Path("reports/timings"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    started = time.perf_counter()
    subprocess.run(a.command, check=True)
    total = round(time.perf_counter() - started, 1)
    train = json.loads(Path("reports/metrics/train.json").read_text())
    stages = {
        "train_adapter (training loop, probes included)": train.get("train_seconds"),
        "  of which forgetting probes": train.get("probe_seconds"),
        "merge_adapter (merge + logit check)": seconds("reports/metrics/merge.json", "seconds"),
        "evaluate@base": seconds("reports/eval/base/scores.json", "seconds"),
        "evaluate@tuned": seconds("reports/eval/tuned/scores.json", "seconds"),
        "measure_drift": seconds("reports/eval/drift/scores.json", "seconds"),
    }
    result = {"command": " ".join(a.command), "label": a.label or " ".join(a.command),
              "total_seconds": total, "stages_seconds": stages,
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
    a.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
