"""Preference tuning (DPO) on the default model with no download: the alignment tax measured.

One DVC experiment of the default pipeline with a self-play preference task (`pairs`: the
arithmetic generator's gold answers against the base model's own wrong answers), trained
alone with `train_adapter.objective: dpo`; the arithmetic task itself is not scored (its
pairs are the trained task), so "elsewhere" is sentiment, reading and the general suite.
The remedy stage runs as in the default pipeline. Written: reports/dpo/dpo.json (the
overrides, wall time, how many pairs the base model's answers gave, the forgetting
metrics, the remedy's choice) and reports/dpo/dpo.md (the experiment's forgetting report,
figures left out).

Run:    python benchmarks/dpo.py     # one format, training and evaluation: ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forgetful.core.artifacts import write_json, write_text  # noqa: E402
from forgetful.study.queue import run_named  # noqa: E402

NAME = "dpo-self-play"
PAIRS = {"source": "self_play", "generator": "arithmetic", "n_train": 0, "n_val": 12,
         "n_test": 60, "max_prompts": 400, "heldout_prompts": 160}
SETS = [
    "+format_data.tasks.pairs={" + ",".join(f"{k}:{v}" for k, v in PAIRS.items()) + "}",
    "+format_data.tasks.arithmetic.evaluate=false",
    "mix_tasks.weights.sentiment=0.0", "mix_tasks.weights.arithmetic=0.0",
    "mix_tasks.weights.reading=0.0", "+mix_tasks.weights.pairs=1.0",
    "train_adapter.objective=dpo", "train_adapter.dpo.beta=0.1",
    "train_adapter.dpo.loss_type=sigmoid", "train_adapter.learning_rate=5.0e-04",
    "train_adapter.max_steps=40", "train_adapter.evaluate_every=0",
    "tracking.experiment=dpo",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "reports/dpo/dpo")
    a = parser.parse_args()
    rev, wall = run_named(NAME, SETS, ROOT)
    import dvc.api

    def read(path: str) -> str:
        return dvc.api.read(path, repo=str(ROOT), rev=rev)

    formatted = json.loads(read("reports/metrics/format/pairs.json"))
    forgetting = json.loads(read("reports/metrics/forgetting.json"))
    selection = json.loads(read("reports/remedy/selection.json"))
    train = json.loads(read("reports/metrics/train.json"))
    report = read("reports/forgetting.md")
    write_json(a.out.with_suffix(".json"), {
        "experiment": NAME, "overrides": SETS, "wall_seconds": wall,
        "pairs": {"asked": {"train part": PAIRS["max_prompts"],
                            "held-out part": PAIRS["heldout_prompts"]},
                  "format_metrics": formatted},
        "train": {k: train.get(k) for k in ("steps", "train_loss", "eval_loss",
                                            "train_seconds", "tokens_per_s")},
        "forgetting": forgetting, "remedy": {k: selection.get(k) for k in
                                             ("chosen", "reason", "seconds")}})
    body = report.split("\n", 1)[1]
    kept = "\n".join(line for line in body.splitlines() if not line.startswith("!["))
    write_text(a.out.with_suffix(".md"), "\n".join(
        ["# Preference tuning (DPO) on the default model", "",
         f"One DVC experiment ({NAME}) of the default pipeline with `{'`, `'.join(SETS)}`: "
         f"{wall:.0f} s wall (stages found in DVC's run cache are restored, not re-run). "
         "Written by benchmarks/dpo.py; the experiment's forgetting report follows (its "
         "figures are in the experiment).", "", kept]))
    print(f"dpo: {train.get('steps')} steps, -> {a.out}.md")


if __name__ == "__main__":
    main()
