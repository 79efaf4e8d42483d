"""Forgetting during training: the model scored on a fixed probe set every N steps.

The final evaluation says where a run ended; the probe says how it got there: whether the
general skills fall at once or drift down, whether the trained tasks are learned before
the untrained ones are lost. Every `evaluate_every` optimizer steps (and at step 0)
the training callback scores
- a fixed, seeded subsample of the built-in general suite (`probe.skills`, spread evenly
  over them), by multiple-choice log-likelihood exactly as evaluate scores it, and
- the first `probe.task_items` of each evaluated task's held-out test split (seeded
  shuffle), with the task's own metric exactly as evaluate scores it (greedy answers;
  label likelihood for classification, without the answer-format column),
with the adapter in eval mode and no gradients; the forward passes draw no random
numbers, so the adapter is the same bytes with the probe on or off. The points go to
MLflow as metric histories (probe.general, probe.<task>) and to a CSV that the report
plots. A probe's cost is its forward passes: the train stage's metrics record the seconds
it took (probe_seconds).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgetful.core.config import NonFinite, require
from forgetful.data.eval_sets import read_eval_sets
from forgetful.evaluate.general import SKILLS

DEFAULT_SKILLS = ("capitals", "continents", "opposites", "plurals", "numbers", "uses", "story")


@dataclass(frozen=True)
class ProbeParams:
    # built-in skills probed (forgetful/evaluate/general.py); the default leaves out the
    # three the default model is weakest on (order, animals, quantities: under 60% acc)
    skills: tuple[str, ...] = DEFAULT_SKILLS
    general_items: int = 140  # general-suite items per probe, spread evenly over the skills
    task_items: int = 40  # held-out test items per evaluated task
    max_new_tokens: int = 12  # answer budget for generative tasks during the probe
    batch_size: int = 16  # prompts per forward pass
    generate_batch: int = 64  # prompts per greedy-decoding batch (evaluate.generate_batch)
    seed: int = 0  # which items are drawn

    def __post_init__(self) -> None:
        for name in self.skills:
            require(name in SKILLS, "skills",
                    f"names unknown skill {name!r}; choose from {', '.join(SKILLS)}")
        require(self.general_items >= 0, "general_items", "must be >= 0")
        require(self.task_items >= 0, "task_items", "must be >= 0")
        require(self.max_new_tokens > 0, "max_new_tokens", "must be a positive integer")
        require(self.batch_size > 0, "batch_size", "must be a positive integer")
        require(self.generate_batch > 0, "generate_batch", "must be a positive integer")


@dataclass
class ProbeSet:
    general: list[dict] = field(default_factory=list)  # multiple-choice items
    tasks: dict[str, list[dict]] = field(default_factory=dict)  # task -> test records
    labels: dict[str, list[str]] = field(default_factory=dict)  # classification labels


def probe_set(p: ProbeParams, eval_sets: Path | None) -> ProbeSet:
    """The fixed items: general ones drawn per skill, task ones from every evaluated task's
    held-out test split in `eval_sets` (gather_eval's folder; None = no tasks)."""
    rng = random.Random(p.seed)
    out = ProbeSet()
    if p.skills and p.general_items:
        per_skill, extra = divmod(p.general_items, len(p.skills))
        for k, name in enumerate(p.skills):
            items = SKILLS[name]()
            rng.shuffle(items)
            out.general += items[: per_skill + (k < extra)]
    if eval_sets is None or not p.task_items:
        return out
    sets = read_eval_sets(eval_sets)
    for task, records in sorted(sets.tests.items()):
        records = list(records)
        rng.shuffle(records)
        out.tasks[task] = records[: p.task_items]
        if task in sets.labels:
            out.labels[task] = sets.labels[task]
    return out


def run_probe(model: Any, tokenizer: Any, items: ProbeSet, p: ProbeParams) -> dict[str, float]:
    """probe.general (pooled acc over the general items) and probe.<task> (task score)."""
    import torch

    from forgetful.evaluate.evaluator import EvalParams, score_tasks
    from forgetful.evaluate.scoring import multiple_choice

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            point = {}
            if items.general:
                results = multiple_choice(model, tokenizer, items.general, p.batch_size)
                point["general"] = round(sum(r["acc"] for r in results) / len(results), 4)
            if items.tasks:
                ep = EvalParams(batch_size=p.batch_size, max_new_tokens=p.max_new_tokens,
                                max_test_examples=0, general_suite=(),
                                generate_batch=p.generate_batch)
                scores, _ = score_tasks(model, tokenizer, items.tasks, ep, items.labels,
                                        answer_format=False)
                point |= {task: s["score"] for task, s in scores.items()}
    finally:
        model.train(was_training)
    return point


def probe_callback(items: ProbeSet, tokenizer: Any, p: ProbeParams, every: int,
                   points: list[dict], log: Any) -> Any:
    """A TrainerCallback: a probe at step 0 (unless resuming past it) and every `every`
    optimizer steps; each point {step, seconds, general, <task>...} is appended to `points`
    and handed to `log(metrics, step)`."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def measure(self, state: Any, model: Any) -> None:
            if not state.is_world_process_zero or any(x["step"] == state.global_step
                                                      for x in points):
                return
            started = time.perf_counter()
            try:
                scores = run_probe(model, tokenizer, items, p)
            except NonFinite as err:
                raise NonFinite(f"training diverged by step {state.global_step}: the probe "
                                f"met {err}; nothing was written") from err
            point = {"step": state.global_step, **scores,
                     "seconds": round(time.perf_counter() - started, 2)}
            points.append(point)
            log({f"probe.{k}": v for k, v in point.items() if k != "step"}, state.global_step)

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           **kw: Any) -> None:
            if state.global_step == 0:
                self.measure(state, model)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                        **kw: Any) -> None:
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                self.measure(state, model)

    return Probe()
