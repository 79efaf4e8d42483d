"""The learning–forgetting study: sweeps of method, LoRA rank and replay ratio over seeds.

Not a DVC stage: a driver over the pipeline, like run_seeds. Every point (a configuration
at one seed) is one DVC experiment, queued with `dvc exp run --queue -n <name> -S ...` and
run by `dvc queue start -j <study.jobs>`, and one MLflow run in the experiment
`study.experiment`. A point's name carries a hash of its overrides, so re-running the
study skips the points that already finished (and DVC's run cache restores any stage a
new point shares with an old one: the base model's evaluation is computed once).

Sweeps (params.yaml `study:`; `--preset quick` takes the smaller set in study.presets):
- method: every method in study.methods on the default mixture, each at its learning rate
  from the learning-rate sweep (reports/study/learning_rates.json, `--lr-sweep` makes it);
- rank: LoRA at each rank in study.ranks, alpha = 2 × rank (the method sweep's lora point
  is the default rank);
- replay: narrow tuning (study.narrow: one task) with the base model's own answers
  (study.replay_task, source self_distill) replacing study.replay_ratios of the mixture.
Seed k trains with train_adapter.seed + k and mix_tasks.seed + k. Every point trains
study.max_steps steps, the probe off.

Then it reads every point back from DVC (`dvc exp show`, and the per-item scores from the
DVC cache at the experiment's commit), writes reports/study.md, reports/study.json and
reports/study/frontier.png (forgetful/report/study.py), with no training:
`--collect-only` redraws them from the experiments as they are.

Run:    python -m stages.run_study --lr-sweep        # once: the learning rates, as data
        python -m stages.run_study [--preset quick]  # queue, run, collect, report
        python -m stages.run_study --collect-only    # tables and figures from DVC alone
        python -m stages.run_study --collect-only --from-mlflow  # ... from MLflow alone
        python -m stages.run_study --backfill-mlflow  # older runs' per-item scores, from DVC
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import package_versions, read_json, write_json, write_text
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, build, load_params, require, section
from forgetful.core.tracking import load as load_tracking
from forgetful.evaluate.evaluator import EvalParams
from forgetful.report.readme import write_between
from forgetful.report.study import Run, claims, frontier, markdown, plot, summarise
from forgetful.report.study_runs import backfill_mlflow, from_dvc, from_mlflow
from forgetful.train.methods import METHODS

DEFAULT_OUT = Path("reports/study")
README_BLOCK = ("<!-- study: written by stages/run_study.py from reports/study.md -->",
                "<!-- /study -->")
FAMILY_GRIDS = {  # learning rates tried per method: three around each family's usual value
    "lora": [3e-4, 1e-3, 3e-3], "dora": [3e-4, 1e-3, 3e-3], "rslora": [3e-4, 1e-3, 3e-3],
    "adalora": [1e-3, 3e-3, 1e-2], "ia3": [2e-3, 6e-3, 2e-2],
    "prompt_tuning": [1e-2, 3e-2, 1e-1], "p_tuning": [3e-3, 1e-2, 3e-2],
    "prefix_tuning": [3e-3, 1e-2, 3e-2], "llama_adapter": [3e-3, 1e-2, 3e-2],
    "full": [1e-5, 3e-5, 1e-4],
}


@dataclass(frozen=True)
class StudyParams:
    seeds: int = 3  # seeds per configuration
    jobs: int = 2  # dvc queue workers; each gets cores / jobs torch threads
    experiment: str = "study"  # MLflow experiment of every point
    max_steps: int = 60  # optimizer steps of every point (and of the learning-rate sweep)
    methods: tuple[str, ...] = ("lora", "dora", "ia3", "prompt_tuning", "prefix_tuning",
                                "llama_adapter", "full")
    ranks: tuple[int, ...] = (2, 8, 32)  # LoRA ranks besides the default one
    narrow: dict[str, float] = field(default_factory=lambda: {"sentiment": 1.0})
    replay_ratios: tuple[float, ...] = (0.0, 0.01, 0.05, 0.2)
    replay_task: dict[str, Any] = field(default_factory=lambda: {
        "source": "self_distill", "n_train": 240, "n_val": 12, "n_test": 0})
    learning_rates: str = "reports/study/learning_rates.json"
    evaluate: dict[str, Any] = field(default_factory=dict)  # evaluate overrides, every point
    bootstrap: int = 1000  # two-level bootstrap resamples
    seed: int = 0  # bootstrap seed
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.seeds >= 1, "seeds", "must be a positive integer")
        require(self.jobs >= 1, "jobs", "must be a positive integer")
        require(self.max_steps > 0, "max_steps", "must be a positive integer")
        for m in self.methods:
            require(m in METHODS and m in FAMILY_GRIDS, "methods",
                    f"names unknown method {m!r}; choose from {', '.join(FAMILY_GRIDS)}")
        require(all(r > 0 for r in self.ranks), "ranks", "must be positive integers")
        require(all(0 <= r < 1 for r in self.replay_ratios), "replay_ratios",
                "must each be in [0, 1)")
        require(len(self.narrow) == 1, "narrow", "must name one task (narrow tuning)")
        known = {f.name for f in dataclasses.fields(EvalParams)}
        for key in self.evaluate:
            require(key in known, "evaluate", f"names unknown evaluate param {key!r}; "
                    f"choose from {', '.join(sorted(known))}")


@dataclass(frozen=True)
class Point:
    config: str  # e.g. method=lora
    sweep: str
    seed: int
    sets: tuple[str, ...]  # -S overrides

    @property
    def name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.sets).encode()).hexdigest()[:6]
        slug = self.config.replace("=", "-").replace("_", "-")
        return f"{slug}-s{self.seed}-{digest}"


def study_params(params: dict[str, Any], preset: str) -> StudyParams:
    p = build(StudyParams, section(params, "study"), "study")
    if preset == "default":
        return p
    if preset not in p.presets:
        raise ConfigError(f"study.presets has no preset {preset!r}; presets: "
                          f"{', '.join(['default', *p.presets])}")
    return build(StudyParams, {**section(params, "study"), **p.presets[preset]},
                 f"study.presets.{preset}")


def learning_rates(p: StudyParams) -> dict[str, float]:
    path = Path(p.learning_rates)
    if not path.exists():
        raise ConfigError(f"{path} not found: run `python -m stages.run_study --lr-sweep` "
                          "first (it picks each method's learning rate)")
    swept = read_json(path)
    chosen = swept["chosen"]
    missing = [m for m in p.methods if m not in chosen]
    if missing:
        raise ConfigError(f"{path} has no learning rate for {', '.join(missing)}: re-run "
                          "`python -m stages.run_study --lr-sweep`")
    if swept["max_steps"] != p.max_steps:
        raise ConfigError(f"{path} was swept at {swept['max_steps']} steps, the "
                          f"study trains {p.max_steps} (study.max_steps): re-run --lr-sweep")
    return chosen


def points(p: StudyParams, params: dict[str, Any], lrs: dict[str, float]
           ) -> tuple[list[Point], dict[int, str], dict[float, str]]:
    """Every point; and which configuration is which rank and which replay ratio."""
    base_train, base_mix = params["train_adapter"]["seed"], params["mix_tasks"]["seed"]
    default_rank = params["train_adapter"]["lora"]["r"]
    configs: list[tuple[str, str, list[str]]] = []

    def lr(method: str) -> str:
        return f"train_adapter.learning_rate={lrs[method]:.1e}"  # 1.0e-03: a float in YAML

    for m in p.methods:
        configs.append((f"method={m}", "method", [f"train_adapter.method={m}", lr(m)]))
    ranks = {default_rank: "method=lora"} if "lora" in p.methods else {}
    for r in p.ranks:
        if r == default_rank and "lora" in p.methods:
            continue
        ranks[r] = f"rank={r}"
        configs.append((f"rank={r}", "rank", ["train_adapter.method=lora", lr("lora"),
                                              f"train_adapter.lora.r={r}",
                                              f"train_adapter.lora.alpha={2 * r}"]))
    (narrow_task,) = p.narrow
    weights = [f"mix_tasks.weights.{t}={1.0 if t == narrow_task else 0.0}"
               for t in dict.fromkeys([*params["mix_tasks"]["weights"], narrow_task])]
    ratios = {}
    for ratio in p.replay_ratios:
        sets = ["train_adapter.method=lora", lr("lora"), *weights]
        if ratio > 0:
            block = ",".join(f"{k}:{v}" for k, v in p.replay_task.items())
            sets += [f"format_data.tasks.replay={{{block}}}", "mix_tasks.replay.task=replay",
                     f"mix_tasks.replay.ratio={ratio}"]
        ratios[ratio] = f"replay={ratio}"
        configs.append((f"replay={ratio}", "replay", sets))
    evaluation = [f"evaluate.{k}={yaml_value(v)}" for k, v in p.evaluate.items()]
    out = []
    for config, sweep, sets in configs:
        for k in range(p.seeds):
            out.append(Point(config, sweep, k, tuple([
                *sets, f"train_adapter.seed={base_train + k}", f"mix_tasks.seed={base_mix + k}",
                f"train_adapter.max_steps={p.max_steps}", "train_adapter.evaluate_every=0",
                f"tracking.experiment={p.experiment}", *evaluation])))
    return out, ranks, ratios


def yaml_value(value: Any) -> str:
    """A value as `dvc exp run -S key=value` reads it (YAML): true, [a, b], 3."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def dvc(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(["dvc", *args], capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return done.stdout


def experiments() -> dict[str, str]:
    """Finished experiments of every commit (a point run before the last commit is still
    done): name -> commit."""
    found = {}
    for baseline in json.loads(dvc("exp", "show", "--json", "--no-fetch", "--all-commits")
                               or "[]"):
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") and not rev.get("error"):
                    found[rev["name"]] = rev["rev"]
    return found


def longest_first(todo: list[Point], last: Path) -> list[Point]:
    """The points in the order to queue them: the configurations that took longest in the
    last report (`last`, its stage seconds) first, those it lacks before them, so the
    workers do not end on one long point alone (longest-processing-time-first
    scheduling; the order changes no result)."""
    took = {c: x.get("info", {}).get("stage_seconds") for c, x in
            (read_json(last).get("points", {}) if last.exists() else {}).items()}
    return sorted(todo, key=lambda pt: -(took.get(pt.config) or math.inf))


WORKERS = re.compile(r"^Worker status: (\d+) active, (\d+) idle", re.MULTILINE)


def workers_short(status: str, queued: int, jobs: int) -> int:
    """How many queue workers to start again: DVC's celery workers on its filesystem
    broker can die of a half-written message (`Unrecoverable error: JSONDecodeError`,
    treeverse/dvc#10428, celery/kombu#1551), leaving the queue to fewer workers or none."""
    found = WORKERS.search(status)
    if not queued or not found:
        return 0
    return max(0, jobs - int(found[1]) - int(found[2]))


def run_points(todo: list[Point], jobs: int) -> int:
    """Queue the points, run them with `jobs` workers, wait; a failed point stops here.
    A worker that dies while points wait is started again; returns how many times."""
    for point in todo:
        args = ["exp", "run", "--queue", "-n", point.name]
        for s in point.sets:  # ++: set the key whether params.yaml has it or not
            args += ["-S", f"++{s}"]
        dvc(*args)
        print(f"run_study: queued {point.name} ({point.config}, seed {point.seed})", flush=True)
    # torch uses every core by default: two workers would fight over them (5-10x slower)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "FORGETFUL_THREADS": str(threads)}  # every stage applies it

    def start() -> None:
        # the workers outlive `dvc queue start` and would hold a captured pipe open
        subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    start()
    started, names, shown, restarts = time.perf_counter(), {p.name for p in todo}, -1, 0
    while True:
        time.sleep(10)
        status = dvc("queue", "status", check=False)
        states = {line.split()[1]: line.split()[-1] for line in status.splitlines()[1:]
                  if len(line.split()) >= 3 and line.split()[1] in names}
        active = [n for n, s in states.items() if s in ("Queued", "Running")]
        failed = [n for n, s in states.items() if s == "Failed"]
        if failed:
            raise RuntimeError(f"point {failed[0]} failed: see `dvc queue logs {failed[0]}`; "
                               "once fixed, `dvc queue remove --failed` and run again (the "
                               "points that finished are kept)")
        if not active:
            break
        short = workers_short(status, sum(s == "Queued" for s in states.values()), jobs)
        if short:
            restarts += short
            print(f"run_study: {short} queue worker(s) stopped while points wait "
                  "(.dvc/tmp/exps/celery/dvc-exp-worker-*.out); starting again", flush=True)
            start()
        if len(names) - len(active) != shown:
            shown = len(names) - len(active)
            print(f"run_study: {shown}/{len(names)} points done "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
    return restarts


def wall_line(log: list[dict], preset: str) -> str:
    """The wall time of the last invocation that ran points of this preset, and of the
    latest one if it only redrew."""
    ran = [e for e in log if e["preset"] == preset and e["ran"]]
    text = (f"Wall time: {ran[-1]['seconds']:.0f} s for the invocation that ran "
            f"{ran[-1]['ran']} of its {ran[-1]['points']} points ({ran[-1]['date']}, "
            "install and `dvc repro` done before)" if ran else
            "Wall time: no invocation in reports/study/invocations.json ran points of this "
            "preset")
    last = log[-1]
    if not last["ran"]:
        text += (f"; the latest invocation ({last['date']}) found every point done and only "
                 f"redrew, in {last['seconds']:.0f} s")
    return text + "."


def report(p: StudyParams, runs: list[Run], ranks: dict[int, str], ratios: dict[float, str],
           preset: str, log: list[dict], out: Path, figure: Path) -> None:
    summary = summarise(runs, p.bootstrap, p.seed)
    found = claims(runs, summary, ranks, ratios, p.bootstrap, p.seed)
    panels = {"method and rank (default mixture)": [c for c in summary
                                                    if summary[c]["sweep"] != "replay"],
              f"replay (narrow: {next(iter(p.narrow))})": [c for c in summary
                                                          if summary[c]["sweep"] == "replay"]}
    panels = {k: v for k, v in panels.items() if v}
    fronts = {title: frontier(summary, configs) for title, configs in panels.items()}
    plot(summary, panels, fronts, figure)
    first = runs[0]
    items = {kind: sum(len(first.base[n]) for n, k in first.kinds.items() if k == kind)
             for kind in ("trained task", "untrained task", "general")}
    setup = [
        f"Preset `{preset}`: {len(summary)} configurations × {p.seeds} "
        f"seed{'s' if p.seeds > 1 else ''} = {len(runs)} "
        f"points, each {p.max_steps} optimizer steps (the same for all), the training probe "
        f"off. Items per run: general suite {items['general']}, untrained tasks "
        f"{items['untrained task']}, trained tasks {items['trained task']} (default mixture"
        "; the replay sweep trains one task). Learning rates: "
        f"{p.learning_rates} (a short sweep, lowest validation loss).",
        *(["**One seed per configuration: the intervals hold item variance only, not seed "
            "variance** (reports/seeds.md found the spread across seeds as large as the item "
            "noise), so read these verdicts as a first look; the default preset runs 3 "
            "seeds."] if p.seeds == 1 else []),
        wall_line(log, preset),
        "Made by `python -m stages.run_study" + ("" if preset == "default" else
                                                 f" --preset {preset}") + "`; "
        "`python -m stages.run_study --collect-only` redraws it from the DVC experiments "
        "(`dvc exp show`) without training, and `--collect-only --from-mlflow` from the "
        "MLflow runs alone.",
    ]
    text = markdown(summary, found, fronts, setup, p.bootstrap)
    write_text(out.with_suffix(".md"), text)
    if preset == "default" and out == DEFAULT_OUT:  # the README shows this one
        body = text.split("\n", 2)[2].replace("](study/", "](reports/study/")
        if not write_between("README.md", *README_BLOCK, body):
            print(f"run_study: README.md has no {README_BLOCK[0]} ... {README_BLOCK[1]} "
                  "block; not updated")
    write_json(out.with_suffix(".json"), {
        "preset": preset, "invocations": log, "points": summary, "claims": found,
        "frontiers": fronts, "versions": package_versions()})
    for c in found:
        print(f"run_study: {c['claim']}: {c['verdict']}")


def lr_sweep(p: StudyParams, params: dict[str, Any]) -> None:
    """Each method at each learning rate of its family's grid, trained p.max_steps steps on
    the default mixture (seed as in params.yaml, probe and MLflow off); the rate with the
    lowest validation loss is chosen. Needs `dvc repro` first (models/base, data/mixed)."""


    out = Path(p.learning_rates)
    done = read_json(out) if out.exists() else {"trials": [], "max_steps": p.max_steps}
    if done.get("max_steps") != p.max_steps:
        done = {"trials": [], "max_steps": p.max_steps}
    work = Path(".dvc/tmp/lr_sweep")
    for method in p.methods:
        grid = list(FAMILY_GRIDS[method])
        while True:
            for lr in grid:
                if not any(t["method"] == method and t["learning_rate"] == lr
                           for t in done["trials"]):
                    done["trials"].append(trial(params, method, lr, p.max_steps, work))
                    done["chosen"] = choose(done["trials"])
                    write_json(out, done)  # after every trial: a killed sweep resumes
            # the best rate on an edge of the grid: one more step (x3) past that edge, up
            # to two, so the choice is a minimum, not the end of a list
            best = done["chosen"][method]
            tried = sorted(t["learning_rate"] for t in done["trials"] if t["method"] == method)
            past = len(tried) - len(FAMILY_GRIDS[method])
            if best == tried[-1] and past < 2:
                grid = [float(f"{best * 3:.0e}")]
            elif best == tried[0] and past < 2:
                grid = [float(f"{best / 3:.0e}")]
            else:
                break
    done["chosen"] = choose(done["trials"])
    done["how"] = (f"each method trained {p.max_steps} steps on the default mixture at each "
                   "rate of its grid (stages/run_study.py FAMILY_GRIDS), and up to two steps "
                   "(x3) past an edge of the grid where the best rate was on it; chosen: the "
                   "lowest validation loss (data/mixed/val.jsonl)")
    write_json(out, done)


def trial(params: dict[str, Any], method: str, lr: float, steps: int, work: Path) -> dict:
    """Train one method at one rate on the default mixture; its losses and seconds."""
    import yaml

    from stages import train_adapter

    run = json.loads(json.dumps(params))
    run["train_adapter"].update(method=method, learning_rate=lr, max_steps=steps,
                                evaluate_every=0)
    run["tracking"]["enabled"] = False
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
    started = time.perf_counter()
    train_adapter.main(Path("models/base"), Path("data/mixed"), work / "adapter",
                       work / "train.json", work / "curve.csv", work / "params.yaml")
    metrics = read_json(work / "train.json")
    print(f"run_study: lr sweep {method} {lr:.0e}: eval loss {metrics['eval_loss']}",
          flush=True)
    return {"method": method, "learning_rate": lr, "eval_loss": metrics["eval_loss"],
            "train_loss": metrics["train_loss"],
            "seconds": round(time.perf_counter() - started, 1)}


def choose(trials: list[dict]) -> dict[str, float]:
    best: dict[str, tuple[float, float]] = {}
    for t in trials:
        loss = t["eval_loss"] if math.isfinite(t["eval_loss"]) else math.inf
        if t["method"] not in best or loss < best[t["method"]][0]:
            best[t["method"]] = (loss, t["learning_rate"])
    return {m: lr for m, (_, lr) in best.items()}


def main(a: argparse.Namespace) -> None:
    # another preset's report goes beside the default one, never over it
    suffix = "" if a.preset == "default" else f"-{a.preset}"
    a.out = a.out or Path(f"{DEFAULT_OUT}{suffix}")
    a.figure = a.figure or DEFAULT_OUT / f"frontier{suffix}.png"
    params = load_params(a.params)
    p = study_params(params, a.preset)
    if a.lr_sweep:
        lr_sweep(p, params)
        return
    lrs = learning_rates(p)
    todo, ranks, ratios = points(p, params, lrs)
    tp = dataclasses.replace(load_tracking(params), experiment=p.experiment)  # the study's runs
    if a.backfill_mlflow:
        filled = backfill_mlflow(todo, experiments(), tp)
        print(f"run_study: per-item scores copied from DVC into {len(filled)} MLflow runs"
              + "".join(f"\n  {name}" for name in filled))
        return
    started = time.perf_counter()
    pending: list[Point] = []
    restarts = 0
    if not a.collect_only:
        have = experiments()
        pending = [pt for pt in todo if pt.name not in have]
        print(f"run_study: {len(todo)} points, {len(todo) - len(pending)} already done",
              flush=True)
        if pending:
            timed = [x for x in (a.out.with_suffix(".json"), DEFAULT_OUT.with_suffix(".json"))
                     if x.exists()]
            restarts = run_points(longest_first(pending, timed[0]) if timed else pending,
                                  p.jobs)
    if a.from_mlflow:  # the MLflow store alone: every point's run and its artifacts
        runs = from_mlflow(todo, tp)
    else:
        runs = from_dvc(todo, experiments())
    # Each invocation's wall time, kept: a later one that only redraws does not hide the
    # time the points took when they ran.
    log_path = a.out / "invocations.json"
    log = read_json(log_path) if log_path.exists() else []
    log.append({"preset": a.preset, "points": len(todo), "ran": len(pending),
                "collect_only": a.collect_only, "date": time.strftime("%Y-%m-%d %H:%M"),
                "seconds": round(time.perf_counter() - started, 1),
                "worker_restarts": restarts})
    write_json(log_path, log)
    report(p, runs, ranks, ratios, a.preset, log, a.out, a.figure)
    print(f"run_study: {len(runs)} points -> {a.out.with_suffix('.md')}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="default, or one of study.presets")
    parser.add_argument("--lr-sweep", action="store_true",
                        help="pick each method's learning rate (writes study.learning_rates)")
    parser.add_argument("--collect-only", action="store_true",
                        help="report from the finished experiments, no training")
    parser.add_argument("--from-mlflow", action="store_true",
                        help="read the points back from their MLflow runs (metrics and "
                             "artifacts) instead of their DVC experiments")
    parser.add_argument("--backfill-mlflow", action="store_true",
                        help="copy per-item scores from the DVC experiments into the MLflow "
                             "runs that lack them (points logged before the report stage "
                             "logged them), so --from-mlflow can redraw every point")
    parser.add_argument("--out", type=Path, default=None,
                        help="the report is <out>.md and <out>.json, its invocations "
                             "<out>/invocations.json (default reports/study, for another "
                             "preset reports/study-<preset>)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="default reports/study/frontier.png (frontier-<preset>.png)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = parser.parse_args()
    run_stage(lambda: main(a))


if __name__ == "__main__":
    cli()
