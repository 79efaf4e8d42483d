"""What the study runs: its params, its points and the learning rates they train at.

A point is one configuration at one seed: the `-S` overrides of one DVC experiment.
Sweeps (params.yaml `study:`; a preset replaces some keys):
- method: every method in study.methods on the default mixture, each at the learning rate
  the learning-rate sweep chose (`lr_sweep`: three rates per method family, and up to two
  more past an edge of the grid, lowest validation loss);
- rank: LoRA at each rank in study.ranks, alpha = 2 × rank (the method sweep's lora point
  is the default rank);
- replay: narrow tuning (study.narrow: one task) with the base model's own answers
  (study.replay_task) replacing study.replay_ratios of the mixture;
- aa: the default LoRA configuration again at study.aa_seeds further seeds (k = seeds …),
  compared with its first seeds: an A/A comparison that must come out inconclusive;
- strength: the narrow replay=0 model and the default LoRA merged at each α in
  study.strengths (merge_adapter.strength: WiSE-FT interpolation toward the base, no
  training: the same training params, so DVC's run cache gives the adapter of the point
  it derives from, which is queued first).
Seed k trains with train_adapter.seed + k and mix_tasks.seed + k; every point trains
study.max_steps steps, the probe off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetful.core.artifacts import read_json, write_json
from forgetful.core.config import ConfigError, build, require, section
from forgetful.evaluate.evaluator import EvalParams
from forgetful.train.methods import METHODS

FAMILY_GRIDS = {  # learning rates tried per method: three around each family's usual value
    "lora": [3e-4, 1e-3, 3e-3], "dora": [3e-4, 1e-3, 3e-3], "rslora": [3e-4, 1e-3, 3e-3],
    "adalora": [1e-3, 3e-3, 1e-2], "ia3": [2e-3, 6e-3, 2e-2],
    "prompt_tuning": [1e-2, 3e-2, 1e-1], "p_tuning": [3e-3, 1e-2, 3e-2],
    "prefix_tuning": [3e-3, 1e-2, 3e-2], "llama_adapter": [3e-3, 1e-2, 3e-2],
    "full": [1e-5, 3e-5, 1e-4],
}
AA = "aa=lora"  # the A/A configuration: method=lora at further seeds


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
    aa_seeds: int = 3  # the A/A guard's further seeds of the default LoRA (0 = none)
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75)  # α merged of replay=0 and default LoRA
    equivalence_margin: float = 0.05  # claim (c): gains comparable when within ± this
    learning_rates: str = "reports/study/learning_rates.json"
    evaluate: dict[str, Any] = field(default_factory=dict)  # evaluate overrides, every point
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.seeds >= 1, "seeds", "must be a positive integer")
        require(self.jobs >= 1, "jobs", "must be a positive integer")
        require(self.max_steps > 0, "max_steps", "must be a positive integer")
        require(self.aa_seeds >= 0, "aa_seeds", "must be 0 (no A/A guard) or more")
        require(self.aa_seeds == 0 or self.seeds >= 2, "aa_seeds",
                "needs study.seeds >= 2 (an A/A comparison of one seed against one seed "
                "has no seed variance); set aa_seeds: 0")
        require(0 < self.equivalence_margin < 1, "equivalence_margin",
                "must be a fraction in (0, 1), e.g. 0.05 for 5 points")
        for m in self.methods:
            require(m in METHODS and m in FAMILY_GRIDS, "methods",
                    f"names unknown method {m!r}; choose from {', '.join(FAMILY_GRIDS)}")
        require(self.aa_seeds == 0 or "lora" in self.methods, "aa_seeds",
                "compares the method sweep's lora point with itself: add lora to "
                "study.methods or set aa_seeds: 0")
        require(all(r > 0 for r in self.ranks), "ranks", "must be positive integers")
        require(all(0 <= r < 1 for r in self.replay_ratios), "replay_ratios",
                "must each be in [0, 1)")
        require(len(self.narrow) == 1, "narrow", "must name one task (narrow tuning)")
        require(all(0 <= a < 1 for a in self.strengths), "strengths",
                "must each be in [0, 1) (α = 1 is the point itself, 0 the base); [] = none")
        require(len(set(self.strengths)) == len(self.strengths), "strengths",
                "names an α twice")
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
    code: str = ""  # the pipeline's fingerprint (forgetful.study.fingerprint) it runs
    after: str = ""  # the configuration whose trained adapter it reuses (queued after it)

    @property
    def stem(self) -> str:
        """The name without the code: the same configuration and overrides."""
        digest = hashlib.sha256(json.dumps(self.sets).encode()).hexdigest()[:6]
        slug = re.sub(r"[^A-Za-z0-9.-]", "-", self.config)
        return f"{slug}-s{self.seed}-{digest}"

    @property
    def name(self) -> str:
        """Its DVC experiment's and MLflow run's name: configuration, seed, a hash of the
        overrides and, once known, of the code and data it runs (a point run by other
        code is another point)."""
        return f"{self.stem}-{self.code[:6]}" if self.code else self.stem


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


@dataclass(frozen=True)
class Plan:
    points: list[Point]
    ranks: dict[int, str]  # LoRA rank -> configuration
    ratios: dict[float, str]  # replay ratio -> configuration
    strengths: dict[str, dict[float, str]] = field(default_factory=dict)
    # a configuration merged at strengths -> {α -> configuration}, α = 1 the configuration


def strength_config(base: str, alpha: float) -> str:
    return f"{base},strength={alpha:g}"


def points(p: StudyParams, params: dict[str, Any], lrs: dict[str, float], code: str = ""
           ) -> Plan:
    """Every point; and which configuration is which rank and which replay ratio."""
    base_train, base_mix = params["train_adapter"]["seed"], params["mix_tasks"]["seed"]
    default_rank = params["train_adapter"]["lora"]["r"]
    configs: list[tuple[str, str, list[str], range]] = []
    every = range(p.seeds)

    def lr(method: str) -> str:
        return f"train_adapter.learning_rate={lrs[method]:.1e}"  # 1.0e-03: a float in YAML

    for m in p.methods:
        configs.append((f"method={m}", "method", [f"train_adapter.method={m}", lr(m)], every))
    ranks = {default_rank: "method=lora"} if "lora" in p.methods else {}
    for r in p.ranks:
        if r == default_rank and "lora" in p.methods:
            continue
        ranks[r] = f"rank={r}"
        configs.append((f"rank={r}", "rank", ["train_adapter.method=lora", lr("lora"),
                                              f"train_adapter.lora.r={r}",
                                              f"train_adapter.lora.alpha={2 * r}"], every))
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
        configs.append((f"replay={ratio}", "replay", sets, every))
    if p.aa_seeds:
        configs.append((AA, "aa", ["train_adapter.method=lora", lr("lora")],
                        range(p.seeds, p.seeds + p.aa_seeds)))
    strengths: dict[str, dict[float, str]] = {}
    derived: dict[str, str] = {}
    bases = [c for c in (ratios.get(0.0), "method=lora" if "lora" in p.methods else None) if c]
    for base in bases if p.strengths else []:
        sets = next(s for c, _, s, _ in configs if c == base)
        strengths[base] = {1.0: base}
        for alpha in sorted(p.strengths, reverse=True):
            name = strength_config(base, alpha)
            strengths[base][alpha] = name
            configs.append((name, "strength", [*sets, f"merge_adapter.strength={alpha:g}"],
                            every))
            derived[name] = base
    evaluation = [f"evaluate.{k}={yaml_value(v)}" for k, v in p.evaluate.items()]
    out = []
    for config, sweep, sets, seeds in configs:
        for k in seeds:
            out.append(Point(config, sweep, k, tuple([
                *sets, f"train_adapter.seed={base_train + k}", f"mix_tasks.seed={base_mix + k}",
                f"train_adapter.max_steps={p.max_steps}", "train_adapter.evaluate_every=0",
                "remedy.strengths=[]",
                f"tracking.experiment={p.experiment}", *evaluation]), code,
                derived.get(config, "")))
    return Plan(out, ranks, ratios, strengths)


def yaml_value(value: Any) -> str:
    """A value as `dvc exp run -S key=value` reads it (YAML): true, [a, b], 3."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


Trial = Callable[[str, float, int], dict[str, Any]]


def lr_sweep(p: StudyParams, trial: Trial) -> None:
    """Each method at each learning rate of its family's grid (`trial(method, lr, steps)`
    trains one and returns its losses); the rate with the lowest validation loss is chosen.
    Written after every trial, so a killed sweep resumes."""
    out = Path(p.learning_rates)
    done = read_json(out) if out.exists() else {"trials": [], "max_steps": p.max_steps}
    if done.get("max_steps") != p.max_steps:
        done = {"trials": [], "max_steps": p.max_steps}
    for method in p.methods:
        grid = list(FAMILY_GRIDS[method])
        while True:
            for lr in grid:
                if not any(t["method"] == method and t["learning_rate"] == lr
                           for t in done["trials"]):
                    done["trials"].append(trial(method, lr, p.max_steps))
                    done["chosen"] = choose(done["trials"])
                    write_json(out, done)
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
                   "rate of its grid (forgetful/study/plan.py FAMILY_GRIDS), and up to two "
                   "steps (x3) past an edge of the grid where the best rate was on it; "
                   "chosen: the lowest validation loss (data/mixed/val.jsonl)")
    write_json(out, done)


def choose(trials: list[dict]) -> dict[str, float]:
    best: dict[str, tuple[float, float]] = {}
    for t in trials:
        loss = t["eval_loss"] if math.isfinite(t["eval_loss"]) else math.inf
        if t["method"] not in best or loss < best[t["method"]][0]:
            best[t["method"]] = (loss, t["learning_rate"])
    return {m: lr for m, (_, lr) in best.items()}
