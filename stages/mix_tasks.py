"""Stage mix_tasks: a seeded mixture of the formatted training splits, checked for contamination.

Deps:   this module, forgetful.data (mixing, hygiene), forgetful.evaluate.benchmarks,
        data/formatted, the base tokenizer (token counts), <inputs> (index_inputs'
        fingerprints of the evaluate.files benchmarks it checks).
Params: mix_tasks.* (seed, strategy, weights, totals, temperature, caps, upsample, replay,
        val_per_task, contamination), evaluate.general_suite and evaluate.files (the
        benchmarks checked for contamination: adding one re-runs this stage, whose mixture
        is then the same bytes, so training stays cached).
Outs:   <out>/train.jsonl, val.jsonl, run_info.json; metrics <metrics>: the composition
        (examples, tokens, shares and effective epochs per task) and the contamination of
        every evaluation set by the training mixture.
Run:    python -m stages.mix_tasks --formatted data/formatted --base models/base \
            --out data/mixed --metrics reports/metrics/mix.json

A task with weight 0 (or absent from `weights`) is not trained but is still evaluated:
that is how forgetting shows. The replay task, if any, takes `replay.ratio` of the same
total (the other tasks are scaled down), so a run with replay trains as long, on as many
examples, as one without. The stage fails, writing nothing, when any evaluation set (every
evaluated task's test split, every general benchmark) is contaminated above the limit.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from forgetful.core.artifacts import (
    atomic_dir,
    read_json,
    read_jsonl,
    run_info,
    write_json,
    write_jsonl,
)
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, DataError, build, load_params, section
from forgetful.data.batches import encode
from forgetful.data.hygiene import contamination
from forgetful.data.inputs import verify
from forgetful.data.mixing import MixParams, mix
from forgetful.evaluate.benchmarks import BENCHMARKS, FileBenchmark, question_of, suite


def evaluation_sets(formatted: Path, tasks: dict[str, dict], names: list[str],
                    files: dict[str, FileBenchmark]) -> dict[str, list[str]]:
    """Every item the pipeline evaluates on, as its question with its gold answer: task
    test records (instruction and completion) and benchmark items."""
    sets = {f"task:{t}": [f"{r['instruction']} {r['completion']}"
                          for r in read_jsonl(formatted / t / "test.jsonl")]
            for t, info in tasks.items() if info.get("evaluate", True)}
    for name in names:
        if name not in BENCHMARKS:
            raise ConfigError(f"evaluate.general_suite names unknown benchmark {name!r}; "
                              f"choose from {', '.join(BENCHMARKS)}")
    for name, items in suite(names, files).items():
        sets[f"general:{name}"] = [f"{question_of(item)} {item['choices'][item['answer']]}"
                                   for item in items]
    return sets


def main(formatted: Path, base: Path, out: Path, metrics: Path,
         params_file: Path = Path("params.yaml"), inputs: Path | None = None) -> None:
    params = load_params(params_file)
    p = build(MixParams, section(params, "mix_tasks"), "mix_tasks")
    evaluation = section(params, "evaluate")
    names = list(evaluation.get("general_suite") or [])
    files = {name: build(FileBenchmark, spec, f"evaluate.files.{name}")
             for name, spec in (evaluation.get("files") or {}).items()}
    if inputs is not None:
        verify(inputs, Path.cwd())  # the benchmark files are those DVC fingerprinted
    infos = {d.name: read_json(d / "run_info.json") for d in sorted(formatted.iterdir())
             if (d / "run_info.json").exists()}
    # Every evaluation text, read first: a malformed benchmark file (an answer index out of
    # range, say) fails here, before any tokenizer or model loads.
    sets = evaluation_sets(formatted, infos, names, files)
    for task in [*p.weights, *p.caps, *([p.replay.task] if p.replay.task else [])]:
        if task not in infos:
            raise ConfigError(f"mix_tasks names task '{task}', which format_data did not "
                              f"produce; formatted tasks: {', '.join(infos)}")
    active = [t for t, w in p.weights.items() if w > 0] + ([p.replay.task] if p.replay.task else [])
    train = {t: read_jsonl(formatted / t / "train.jsonl") for t in active}
    val = {t: read_jsonl(formatted / t / "val.jsonl") for t in active}
    for task, records in train.items():
        if not records:
            raise DataError(f"{formatted / task / 'train.jsonl'} is empty; task '{task}' is "
                            "in the mixture but has no training examples")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    mixed_train, mixed_val, summary = mix(train, val, p,
                                          lambda r: len(encode(r, tokenizer)["input_ids"]))
    checked = contamination(
        [f"{r['instruction']} {r['completion']}" for r in mixed_train],
        sets, p.contamination.ngram, p.contamination.item_threshold, p.contamination.min_words)
    summary["contamination"] = checked
    worst = max(checked.items(), key=lambda kv: kv[1]["share"])
    if worst[1]["share"] > p.contamination.max_share:
        raise DataError(
            f"evaluation set {worst[0]}: {worst[1]['contaminated']} of {worst[1]['items']} items "
            f"overlap the training mixture (share {worst[1]['share']} > mix_tasks.contamination."
            f"max_share={p.contamination.max_share}), e.g. {worst[1]['examples'][0]}; remove "
            "them from the training data or raise the limit")
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "train.jsonl", mixed_train)
        write_jsonl(tmp / "val.jsonl", mixed_val)
        # The contamination result stays out of the mixture's folder (it goes to the
        # metrics): adding a benchmark re-runs this check, and the mixture keeps its bytes,
        # so DVC does not train again.
        write_json(tmp / "run_info.json", run_info(
            "mix_tasks", asdict(p),
            composition={k: v for k, v in summary.items() if k != "contamination"}))
    write_json(metrics, summary)
    shares = ", ".join(f"{t} {c['share']:.2f}" for t, c in summary["tasks"].items())
    print(f"mix_tasks: {summary['examples']} examples ({shares}), {summary['tokens']} tokens; "
          f"worst contamination {worst[0]} {worst[1]['share']} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formatted", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--inputs", type=Path, help="index_inputs' JSON of the benchmark files")
    args = parser.parse_args()
    run_stage(lambda: main(args.formatted, args.base, args.out, args.metrics, args.params,
                           args.inputs))


if __name__ == "__main__":
    cli()
