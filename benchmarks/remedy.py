"""The remedy on the study's narrow configuration: what choosing within a budget buys there.

The narrow point is the study's replay=0 configuration (LoRA tuned on sentiment alone, at
the study's step count and learning rate, seed 0), run as one DVC experiment with the
remedy on: strengths 0.25, 0.5 and 0.75 and a snapshot every 10 steps. Its
reports/remedy/selection.json is read back from the experiment with dvc.api and written to
reports/remedy/narrow.json, its Remedy section to reports/remedy/narrow.md, with the
experiment's overrides and wall time. (The default run's own selection is
reports/remedy/selection.json, written by `dvc repro`.)

Run:    python benchmarks/remedy.py         # one training and evaluation: ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forgetful.core.artifacts import write_json, write_text  # noqa: E402
from forgetful.core.config import load_params  # noqa: E402
from forgetful.report.remedy import markdown  # noqa: E402
from forgetful.study.plan import learning_rates, points, study_params  # noqa: E402
from forgetful.study.queue import run_named  # noqa: E402

NAME = "remedy-narrow"
REMEDY = ["remedy.strengths=[0.25, 0.5, 0.75]", "train_adapter.keep_every=10",
          "tracking.experiment=remedy"]


def overrides(params: dict) -> list[str]:
    """The study's replay=0 point at seed 0, with the remedy on instead of off."""
    p = study_params(params, "default")
    plan = points(p, params, learning_rates(p))
    config = plan.ratios[0.0]
    (point,) = [x for x in plan.points if x.config == config and x.seed == 0]
    keep = [s for s in point.sets if not s.startswith(("remedy.", "tracking.experiment="))]
    return keep + REMEDY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/remedy/narrow")
    a = parser.parse_args()
    sets = overrides(load_params(ROOT / "params.yaml"))
    rev, wall = run_named(NAME, sets, ROOT)
    import dvc.api
    selection = json.loads(dvc.api.read("reports/remedy/selection.json", repo=str(ROOT),
                                        rev=rev))
    write_json(a.out.with_suffix(".json"), {"experiment": NAME, "overrides": sets,
                                            "wall_seconds": wall, "selection": selection})
    write_text(a.out.with_suffix(".md"), "\n".join(
        ["# The remedy on the narrow configuration", "",
         "The study's replay=0 configuration (tuned on sentiment alone), seed 0, with "
         f"`{'`, `'.join(sets)}`; one DVC experiment ({NAME}): {wall:.0f} s wall for this "
         "invocation (stages found in DVC's run cache are restored, not re-run), of which "
         f"select_model {selection['seconds']:.0f} s. Written by benchmarks/remedy.py.", "",
         *markdown(selection)]))
    print(f"remedy (narrow): chose {selection['chosen']} -> {a.out}.md")


if __name__ == "__main__":
    main()
