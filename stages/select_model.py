"""Stage select_model: the model that keeps the most learning within a forgetting budget.

Deps:   this module, forgetful (merging, evaluator, remedy), models/base, models/adapter,
        models/kept (train_adapter's snapshots), models/merged (α = 1), data/formatted (the
        tasks' validation splits: the selection split), data/eval (the test splits),
        data/mixed/val.jsonl (the merge check's prompts), both evaluations (scores and
        predictions: the base's and α = 1's test scores), reports/metrics/mix.json.
Params: remedy.*, evaluate, merge_adapter, report.min_above_chance.
Outs:   <out>/ the chosen model in transformers' format (a prompt method's adapter, as
        merge_adapter writes it), with run_info.json naming the candidate; metrics
        <selection> (every candidate's learning and forgetting with intervals on the
        selection split, the choice and why, the chosen and the tuned model on the test
        items); <figure> (learning vs forgetting along α and along steps, the budget line).
        To MLflow: the candidates' metrics in the adapter's run; with tracking.register,
        the chosen model as a version, aliased champion when it is within budget.
Run:    python -m stages.select_model --base models/base --adapter models/adapter \
            --kept models/kept --merged models/merged --formatted data/formatted \
            --eval-sets data/eval --probe data/mixed/val.jsonl --base-eval reports/eval/base \
            --tuned-eval reports/eval/tuned --mix reports/metrics/mix.json \
            --out models/selected --selection reports/remedy/selection.json \
            --figure reports/remedy/remedy.png

What a candidate is, the selection split and the rule: forgetful/report/remedy.py. With
no candidate but α = 1 (`remedy.strengths: []` and no kept steps) the stage is off: it
writes a selection that says so and an <out> holding only run_info.json.
"""

from __future__ import annotations

import argparse
import gc
import shutil
from pathlib import Path
from typing import Any

from forgetful.core import tracking
from forgetful.core.artifacts import (
    Timer,
    atomic_dir,
    read_json,
    read_jsonl,
    run_info,
    weights_sha256,
    write_json,
)
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, build, load_params, section
from forgetful.data.eval_sets import TASKS_FILE, read_eval_sets
from forgetful.evaluate.benchmarks import suite
from forgetful.evaluate.evaluator import EvalParams, score_items
from forgetful.evaluate.scoring import load_for_eval
from forgetful.report import figures
from forgetful.report.forgetting import ReportParams, item_scores
from forgetful.report.remedy import (
    FINAL,
    SELECTION,
    VERDICT,
    RemedyParams,
    candidates,
    cell,
    choose,
    groups,
    measures,
    split_general,
    test_summary,
)
from forgetful.train.merging import MergeParams, merged_at, probe_batch, tolerance_for
from forgetful.train.methods import METHODS


def build_model(a: argparse.Namespace, ctx: dict, c: Any) -> tuple[Any, dict]:
    """The candidate's model (α = 1 of the final adapter is models/merged as it is)."""
    if c.source == FINAL and c.alpha == 1:
        return load_for_eval(a.merged)[0], {"merged": True, "from": str(a.merged)}
    folder = a.adapter if c.source == FINAL else a.kept / c.source
    return merged_at({**ctx, "adapter": folder, "info": read_json(folder / "run_info.json")},
                     c.alpha)


def off(a: argparse.Namespace, why: str) -> None:
    with atomic_dir(a.out) as tmp:
        write_json(tmp / "run_info.json", {"stage": "select_model", "skipped": why})
    write_json(a.selection, {"skipped": why})
    a.figure.parent.mkdir(parents=True, exist_ok=True)
    figures.note(f"select_model is off: {why}", a.figure)  # an out DVC expects
    print(f"select_model: off ({why})")


def main(a: argparse.Namespace) -> None:
    params = load_params(a.params)
    r = build(RemedyParams, section(params, "remedy"), "remedy")
    ep = build(EvalParams, section(params, "evaluate"), "evaluate")
    mp = build(MergeParams, section(params, "merge_adapter"), "merge_adapter")
    rp = build(ReportParams, section(params, "report"), "report")
    tp = tracking.load(params)
    info = read_json(a.adapter / "run_info.json")
    method = METHODS[info["method"]]
    try:
        found, notes = candidates(r, method.mergeable, info["method"],
                                  read_json(a.kept / "steps.json")["steps"])
    except ValueError as err:
        raise ConfigError(f"remedy.{err}") from err
    if len(found) == 1:
        return off(a, "no candidate but the tuned model: remedy.strengths is empty (or the "
                   "method has no weight change) and train_adapter kept no steps")
    timer = Timer()
    base_scores = read_json(a.base_eval / "scores.json")
    trained = set(read_json(a.mix)["tasks"])
    roles = groups(base_scores, trained, rp.min_above_chance)
    manifest = read_json(a.eval_sets / TASKS_FILE)
    val = {t: read_jsonl(a.formatted / t / "val.jsonl") for t in manifest}
    labels = {t: m["labels"] for t, m in manifest.items() if m["labels"]}
    general = split_general(suite(ep.general_suite, ep.files))
    tolerance = tolerance_for(mp, read_json(a.base / "run_info.json").get("dtype", "float32"))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(a.base)
    ctx = {"base": a.base, "batch": probe_batch(tokenizer, a.probe, mp.probe_examples),
           "tolerance": tolerance, "p": mp}

    def scored(model: Any, tasks: dict, part: str) -> dict:
        out = score_items(model, tokenizer, tasks, labels, general[part], ep)
        gc.collect()
        return out

    base_model = load_for_eval(a.base)[0]
    base_sel = scored(base_model, val, SELECTION)
    del base_model
    rows = []
    for c in found:
        model, merge = build_model(a, ctx, c)
        rows.append({"name": c.name, "source": c.source, "alpha": c.alpha, "step": c.step,
                     **measures(base_sel, scored(model, val, SELECTION), roles, r.measure),
                     "merge_check": merge.get("max_abs_logit_diff")})
        del model
        print(f"select_model: {c.name}: learning {cell(rows[-1]['learning'])}, forgetting "
              f"{cell(rows[-1]['forgetting'])} points (selection split)")
    choice = choose(rows, r.budget)
    chosen = next((c for c in found if c.name == choice["chosen"]), None)

    verdict_ids = {i for pairs in general[VERDICT].values() for i, _ in pairs}

    def test_items(path: Path) -> dict:
        found_ = item_scores(read_jsonl(path / "predictions.jsonl"))
        return {b: {i: v for i, v in items.items() if b not in roles["general"]
                    or i in verdict_ids} for b, items in found_.items()}

    base_test, tuned_test = test_items(a.base_eval), test_items(a.tuned_eval)
    model, merge = None, {}
    if chosen is None:
        chosen_test = base_test
    elif chosen.source == FINAL and chosen.alpha == 1:
        chosen_test = tuned_test
    else:
        model, merge = build_model(a, ctx, chosen)
        chosen_test = scored(model, read_eval_sets(a.eval_sets, ep.max_test_examples).tests,
                             VERDICT)
    test = {"tuned": measures(base_test, tuned_test, roles, r.measure),
            "chosen": measures(base_test, chosen_test, roles, r.measure),
            "chosen_vs_tuned": measures(tuned_test, chosen_test, roles, r.measure),
            "items": sum(len(v) for b, v in base_test.items()
                         if b in roles["learned"] + roles["elsewhere"]),
            "same": chosen is not None and chosen.source == FINAL and chosen.alpha == 1}
    test["summary"] = test_summary(test)
    result = {"budget": r.budget, "measure": r.measure, "notes": notes, **choice,
              "candidates": rows, "test": test, "method": info["method"],
              "selection_items": sum(len(v) for v in val.values()) +
              sum(len(v) for v in general[SELECTION].values())}
    save(a, model, merge, chosen, result, info, tokenizer)
    a.figure.parent.mkdir(parents=True, exist_ok=True)
    figures.remedy(rows, r.budget, choice["chosen"], a.figure)
    write_json(a.selection, result | {"seconds": timer.seconds})
    log(a, tp, result)
    print(f"select_model: chose {choice['chosen']}: {choice['why']} -> {a.out} "
          f"({timer.seconds:.0f}s)")


def save(a: argparse.Namespace, model: Any, merge: dict, chosen: Any, result: dict,
         info: dict, tokenizer: Any) -> None:
    """<out>: the chosen model as merge_adapter would write it; the base or α = 1 as copies
    of their folders (the same bytes)."""
    copy_from = a.base if chosen is None else a.merged if model is None else None
    if model is not None and not merge.get("merged", True):  # a prompt method's kept step
        copy_from = a.kept / chosen.source
    with atomic_dir(a.out) as tmp:
        if copy_from is not None:
            for f in sorted(copy_from.iterdir()):
                if f.is_file() and f.name != "run_info.json":
                    shutil.copy2(f, tmp / f.name)
        else:
            model.save_pretrained(tmp)
        if not (tmp / "tokenizer_config.json").exists():
            tokenizer.save_pretrained(tmp)
        merged = not (tmp / "adapter_config.json").exists()
        write_json(tmp / "run_info.json", run_info(
            "select_model", build(RemedyParams, {"budget": result["budget"],
                                                 "measure": result["measure"]}, "remedy"),
            base_model=info.get("base_model"), base_path=str(a.base), method=info["method"],
            merged=merged, candidate=result["chosen"],
            alpha=0.0 if chosen is None else chosen.alpha,
            step=None if chosen is None else chosen.step, why=result["why"],
            adapter_sha256=weights_sha256(a.adapter)))


def log(a: argparse.Namespace, tp: Any, result: dict) -> None:
    """The candidates' metrics in the adapter's MLflow run; with tracking.register, the
    chosen model as a version, champion when a candidate was within budget."""
    run_id = tracking.find_run(tp, weights_sha256(a.adapter))
    metrics = {r["name"].replace("=", "_").replace(" ", "_"): {
        "learning": r["learning"]["value"] if r["learning"] else None,
        "forgetting": r["forgetting"]["value"] if r["forgetting"] else None,
        "within_budget": float(r["within_budget"])} for r in result["candidates"]}
    chosen = result["test"]["chosen"]
    metrics["chosen"] = {k: chosen[k]["value"] for k in ("learning", "forgetting") if chosen[k]}
    tracking.log_metrics(tp, run_id, {"remedy": metrics})
    if tp.register or tp.log_merged:
        model_id = tracking.log_model(tp, run_id, "selected", a.out,
                                      params={"candidate": result["chosen"],
                                              "method": result["method"]})
        version = tracking.register(tp, run_id, model_id, result["chosen"] != "base")
        if version:
            print(f"select_model: registered {tp.register} version {version} (candidate"
                  f"{', champion' if result['chosen'] != 'base' else ''})")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--base", "--adapter", "--kept", "--merged", "--formatted", "--eval-sets",
                 "--probe", "--base-eval", "--tuned-eval", "--mix", "--out", "--selection",
                 "--figure"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a))


if __name__ == "__main__":
    cli()
