"""The study's statistics and its points, without training (forgetful/report/study.py)."""

from __future__ import annotations

import json

import pytest

from forgetful.report.study import (
    Run,
    at_floor,
    claims,
    frontier,
    markdown,
    measure_bootstrap,
    paired,
    sets,
    summarise,
    verdict,
)

KINDS = {"a": "trained task", "u": "untrained task", "g1": "general", "g2": "general",
         "near": "general (near chance)"}


def run(config: str, seed: int, tuned: dict[str, float], sweep: str = "method") -> Run:
    """Base: every item right (1.0) except trained items (0.0); tuned: one value per
    benchmark for all its 20 items."""
    base = {b: {f"{b}-{i}": (0.0 if k == "trained task" else 1.0) for i in range(20)}
            for b, k in KINDS.items()}
    after = {b: {i: tuned.get(b, v) for i, v in items.items()} for b, items in base.items()}
    return Run(config, sweep, seed, base, after, KINDS, {"learning_rate": 1e-3,
                                                         "name": f"{config}-s{seed}"})


def test_measures_weight_their_sets_as_documented() -> None:
    r = run("x", 0, {"a": 0.5, "u": 0.0, "g1": 0.9, "g2": 0.7, "near": 0.0})
    learning = sets(r, "learning")
    assert [(sum(d) / len(d), w) for d, w in learning] == [(0.5, 1.0)]
    (general, w), = sets(r, "general")  # g1 and g2 pooled, the near-chance skill left out
    assert len(general) == 40 and w == 1.0
    assert sum(general) / 40 == pytest.approx(-0.2)
    elsewhere = sets(r, "elsewhere")  # ½ general + ½ untrained
    value = sum(w * sum(d) / len(d) for d, w in elsewhere)
    assert value == pytest.approx(0.5 * -0.2 + 0.5 * -1.0)
    result = measure_bootstrap([elsewhere], 200, 0)
    assert result["value"] == pytest.approx(-0.6) and result["ci"][0] <= -0.6 <= result["ci"][1]


def test_two_level_interval_holds_seed_variance() -> None:
    """Items agree within each seed, seeds disagree: the interval must be wide, and the
    verdict inconclusive, though each seed alone looks certain."""
    seeds = [[([0.3] * 50, 1.0)], [([-0.3] * 50, 1.0)], [([0.0] * 50, 1.0)]]
    result = measure_bootstrap(seeds, 500, 0)
    assert result["value"] == 0.0 and result["per_seed"] == [0.3, -0.3, 0.0]
    assert result["ci"][0] < -0.1 and result["ci"][1] > 0.1
    assert verdict(result["ci"], "below") == "inconclusive"
    assert verdict([-0.2, -0.1], "below") == "supported"
    assert verdict([0.1, 0.2], "below") == "not supported"


def test_paired_comparison_cancels_the_base() -> None:
    runs = [run("lora", s, {"g1": 0.9, "g2": 0.9, "u": 0.8}) for s in range(3)] + \
        [run("full", s, {"g1": 0.6, "g2": 0.6, "u": 0.4}) for s in range(3)]
    cmp = paired(runs, "lora", "full", "elsewhere", 300, 0)
    assert cmp["seeds"] == 3
    assert cmp["value"] == pytest.approx(0.5 * 0.3 + 0.5 * 0.4)
    assert verdict(cmp["ci"], "above") == "supported"


def test_frontier_and_claims_from_synthetic_runs() -> None:
    runs = []
    for s in range(3):
        runs += [run("method=lora", s, {"a": 0.6, "g1": 0.95, "g2": 0.95}),
                 run("method=full", s, {"a": 0.7, "g1": 0.7, "g2": 0.7, "u": 0.5}),
                 run("rank=2", s, {"a": 0.4}, "rank"),
                 run("replay=0.0", s, {"a": 0.8, "g1": 0.5, "g2": 0.5, "u": 0.0}, "replay"),
                 run("replay=0.2", s, {"a": 0.8, "g1": 0.9, "g2": 0.9, "u": 0.9}, "replay")]
    points = summarise(runs, 200, 0)
    assert points["method=lora"]["runs"][0] == {"seed": 0, "name": "method=lora-s0"}
    # rank=2 learns less and forgets nothing; lora and full trade learning for forgetting
    assert set(frontier(points, ["method=lora", "method=full", "rank=2"])) == {
        "method=lora", "method=full", "rank=2"}
    assert frontier(points, ["replay=0.0", "replay=0.2"]) == ["replay=0.2"]
    found = {c["claim"][:3]: c for c in claims(runs, points, {2: "rank=2", 16: "method=lora"},
                                               {0.0: "replay=0.0", 0.2: "replay=0.2"}, 200, 0)}
    assert found["(a)"]["verdict"] == "supported"
    assert found["(b)"]["verdict"] == "supported" and "smallest ratio" in found["(b)"]["evidence"]
    assert found["(c)"]["verdict"] == "supported" and "gains differ" in found["(c)"]["evidence"]
    assert found["(d)"]["verdict"] == "supported"  # rank 2 kept more than rank 16
    # replay=0.0 answered no untrained item at any seed: the report names it at the floor
    assert points["replay=0.0"]["floor"] == ["u"] and points["method=full"]["floor"] == []
    text = markdown(points, list(found.values()), {}, [], 200)
    assert "At the floor on u: replay=0.0 answered none of its items" in text


def test_a_floor_needs_every_seed_at_zero() -> None:
    runs = [run("x", 0, {"u": 0.0}), run("x", 1, {"u": 0.0})]
    assert at_floor(runs) == ["u"]
    assert at_floor(runs + [run("x", 2, {"u": 0.05})]) == []


def test_lr_sweep_steps_past_an_edge_and_resumes(tmp_path, monkeypatch) -> None:
    """The best rate on the grid's edge is not a minimum: the sweep tries up to two more
    (x3) past it; trials already in the file are not trained again."""
    import json
    import math

    from stages import run_study

    tried = []

    def fake(params, method, lr, steps, work):
        tried.append(lr)
        return {"method": method, "learning_rate": lr, "train_loss": 1.0, "seconds": 0.0,
                "eval_loss": abs(math.log10(lr) - math.log10(1e-2))}

    monkeypatch.setattr(run_study, "trial", fake)
    out = tmp_path / "rates.json"
    p = run_study.StudyParams(methods=("lora",), learning_rates=str(out))
    run_study.lr_sweep(p, {})
    assert tried == [3e-4, 1e-3, 3e-3, 9e-3, 3e-2]
    saved = json.loads(out.read_text())
    assert saved["chosen"] == {"lora": 9e-3} and saved["max_steps"] == 60
    tried.clear()
    run_study.lr_sweep(p, {})  # resumed: nothing left to train
    assert tried == []


def test_points_cover_every_sweep_with_their_overrides() -> None:
    from stages import run_study

    params = {"train_adapter": {"seed": 42, "lora": {"r": 16}},
              "mix_tasks": {"seed": 7, "weights": {"a": 1.0, "b": 1.0}}}
    p = run_study.StudyParams(seeds=2, methods=("lora", "full"), ranks=(2, 16),
                              narrow={"c": 1.0}, replay_ratios=(0.0, 0.2))
    todo, ranks, ratios = run_study.points(p, params, {"lora": 3e-3, "full": 1e-4})
    configs = sorted({pt.config for pt in todo})
    assert configs == ["method=full", "method=lora", "rank=2", "replay=0.0", "replay=0.2"]
    assert len(todo) == 10 and len({pt.name for pt in todo}) == 10  # names are unique
    assert ranks == {16: "method=lora", 2: "rank=2"}  # the default rank is the lora point
    replay = next(pt for pt in todo if pt.config == "replay=0.2" and pt.seed == 1)
    assert {"mix_tasks.weights.a=0.0", "mix_tasks.weights.b=0.0", "mix_tasks.weights.c=1.0",
            "mix_tasks.replay.ratio=0.2", "train_adapter.seed=43", "mix_tasks.seed=8",
            "train_adapter.learning_rate=3.0e-03"} <= set(replay.sets)
    assert any(s.startswith("format_data.tasks.replay={source:self_distill") for s in replay.sets)
    again, _, _ = run_study.points(p, params, {"lora": 3e-3, "full": 1e-4})
    assert [pt.name for pt in again] == [pt.name for pt in todo]  # stable: re-runs skip them


def test_study_evaluate_overrides_reach_every_point_and_its_name() -> None:
    from stages import run_study

    params = {"train_adapter": {"seed": 42, "lora": {"r": 16}},
              "mix_tasks": {"seed": 7, "weights": {"a": 1.0}}}
    plain = run_study.StudyParams(seeds=1, methods=("lora",), ranks=(), narrow={"a": 1.0},
                                  replay_ratios=(0.0,))
    trimmed = run_study.StudyParams(seeds=1, methods=("lora",), ranks=(), narrow={"a": 1.0},
                                    replay_ratios=(0.0,),
                                    evaluate={"in_template": False, "text_suite": []})
    before, _, _ = run_study.points(plain, params, {"lora": 3e-3})
    after, _, _ = run_study.points(trimmed, params, {"lora": 3e-3})
    for pt in after:
        assert {"evaluate.in_template=false", "evaluate.text_suite=[]"} <= set(pt.sets)
    # a point evaluated otherwise is another point: it does not count as done
    assert not {pt.name for pt in before} & {pt.name for pt in after}
    with pytest.raises(ValueError, match="unknown evaluate param 'in_templates'"):
        run_study.StudyParams(evaluate={"in_templates": False})


def test_points_queue_longest_first(tmp_path) -> None:
    """The configurations the last report timed longest go first, unknown ones before
    them; seeds keep their order; without a report the order is the sweeps'."""
    from stages import run_study

    todo = [run_study.Point(c, "s", k, (c, str(k))) for c in ("a", "b", "c", "d")
            for k in (0, 1)]
    last = tmp_path / "study.json"
    assert run_study.longest_first(todo, last) == todo
    last.write_text(json.dumps({"points": {"a": {"info": {"stage_seconds": 100.0}},
                                           "b": {"info": {"stage_seconds": 300.0}},
                                           "d": {"info": {"stage_seconds": 200.0}}}}))
    order = [(pt.config, pt.seed) for pt in run_study.longest_first(todo, last)]
    assert order == [("c", 0), ("c", 1), ("b", 0), ("b", 1), ("d", 0), ("d", 1),
                     ("a", 0), ("a", 1)]


def test_a_dead_queue_worker_is_started_again(monkeypatch) -> None:
    """DVC's celery workers can die of a half-written broker message (treeverse/dvc#10428):
    while points wait, the driver starts the missing workers again, and never once the
    queue is empty; the status lines are `dvc queue status`'s."""
    from stages import run_study

    todo = [run_study.Point("a", "s", k, ("a", str(k))) for k in (0, 1, 2)]
    a, b, c = (pt.name for pt in todo)
    head = "Task     Name    Created    Status\n"
    statuses = iter([
        f"{head}1 {a} 08:09 Running\n2 {b} 08:09 Running\n3 {c} 08:09 Queued\n\n"
        "Worker status: 2 active, 0 idle",
        f"{head}1 {a} 08:09 Success\n2 {b} 08:09 Running\n3 {c} 08:09 Queued\n\n"
        "Worker status: 1 active, 0 idle",  # one died after its point: restart one
        f"{head}1 {a} 08:09 Success\n2 {b} 08:09 Running\n3 {c} 08:09 Running\n\n"
        "Worker status: 1 active, 0 idle",  # nothing waits: no restart
        f"{head}1 {a} 08:09 Success\n2 {b} 08:09 Success\n3 {c} 08:09 Success\n\n"
        "Worker status: 0 active, 0 idle"])
    calls, starts = [], []
    monkeypatch.setattr(run_study, "dvc", lambda *args, **kw: calls.append(args) or (
        next(statuses) if args[:2] == ("queue", "status") else ""))
    monkeypatch.setattr(run_study.subprocess, "run", lambda cmd, **kw: starts.append(cmd))
    monkeypatch.setattr(run_study.time, "sleep", lambda s: None)
    assert run_study.run_points(todo, 2) == 1
    assert starts == [["dvc", "queue", "start", "-j", "2"]] * 2
    assert sum(args[:2] == ("exp", "run") for args in calls) == 3
    assert run_study.workers_short("no worker line", 3, 2) == 0
    assert run_study.workers_short("Worker status: 0 active, 0 idle", 0, 2) == 0
    assert run_study.workers_short("Worker status: 0 active, 1 idle", 5, 2) == 1


def test_redraw_from_mlflow_names_what_is_missing(tmp_path) -> None:
    """--from-mlflow on a store without the study, or without a point's run, says which."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from forgetful.core.config import ConfigError
    from forgetful.core.tracking import TrackingParams
    from forgetful.report.study_runs import from_mlflow

    tp = TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="study")
    point = SimpleNamespace(name="method-lora-s0-abc123", config="method=lora",
                            sweep="method", seed=0, sets=("train_adapter.learning_rate=0.001",))
    with pytest.raises(ConfigError, match="has no MLflow experiment 'study'"):
        from_mlflow([point], tp)
    MlflowClient(tp.uri).create_experiment("study")
    with pytest.raises(ConfigError, match=r"1 of 1 points have no finished MLflow run in "
                                          r"experiment 'study' \(first: method-lora-s0-abc123"):
        from_mlflow([point], tp)
