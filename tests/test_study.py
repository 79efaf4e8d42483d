"""The study's statistics, claims, points and per-item file, without training
(forgetful/report/study.py, study_claims.py, study_page.py; forgetful/study/)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from forgetful.report.study import (
    Run,
    at_floor,
    changes,
    frontier,
    measure,
    paired,
    summarise,
    trend,
    unpaired,
)
from forgetful.report.study_claims import NO_VERDICT, claims
from forgetful.report.study_page import markdown
from forgetful.study.plan import AA

KINDS = {"a": "trained task", "u": "untrained task", "g1": "general", "g2": "general",
         "near": "general (near chance)"}
SIZES = {"a": 30, "u": 20, "g1": 60, "g2": 40, "near": 10}


def run(config: str, seed: int, rates: dict[str, float], sweep: str = "method",
        spread: float = 0.0) -> Run:
    """Items of varied difficulty: item i of benchmark b is right under the base when its
    difficulty u_i < the base rate (0 for trained tasks, 0.7 elsewhere), and under the
    tuned model when u_i < rates[b] + the seed's shift; the same items at every seed."""
    base, tuned = {}, {}
    for b, kind in KINDS.items():
        u = np.random.default_rng(len(b) * 7 + SIZES[b]).random(SIZES[b])
        shift = spread * ((seed % 3) - 1)
        base_rate = 0.0 if kind == "trained task" else 0.7
        base[b] = {f"{b}-{i}": float(x < base_rate) for i, x in enumerate(u)}
        tuned[b] = {f"{b}-{i}": float(x < rates.get(b, base_rate) + shift)
                    for i, x in enumerate(u)}
    return Run(config, sweep, seed, base, tuned, KINDS,
               {"learning_rate": 1e-3, "name": f"{config}-s{seed}", "code": "c0ffee"})


def by_hand(r: Run, sets: list[tuple[list[str], float]], other: Run | None = None) -> float:
    ref = other.tuned if other else r.base
    total = 0.0
    for names, w in sets:
        d = [r.tuned[n][i] - ref[n][i] for n in names for i in r.tuned[n]]
        total += w * sum(d) / len(d)
    return total


def test_measures_weight_their_sets_as_documented() -> None:
    runs = [run("x", s, {"a": 0.5, "u": 0.3, "g1": 0.9, "g2": 0.6}, spread=0.05)
            for s in range(3)]
    for name, sets in (("learning", [(["a"], 1.0)]), ("general", [(["g1", "g2"], 1.0)]),
                       ("elsewhere", [(["g1", "g2"], 0.5), (["u"], 0.5)])):
        got = measure(runs, name)
        assert got["value"] == pytest.approx(np.mean([by_hand(r, sets) for r in runs]),
                                             abs=1e-4), name
        assert got["items"] == sum(SIZES[n] for names, _ in sets for n in names)
    # the near-chance skill is not in the general suite; items pooled item-weighted
    assert {k.split("\t")[1] for k in changes(runs[0], "general")} == {"g1", "g2"}


def test_paired_comparison_cancels_the_base_and_counts_the_previous_method() -> None:
    runs = [run("lora", s, {"g1": 0.9, "g2": 0.9, "u": 0.8}, spread=0.03) for s in range(3)] + \
        [run("full", s, {"g1": 0.6, "g2": 0.6, "u": 0.4}, spread=0.03) for s in range(3)]
    cmp = paired(runs, "lora", "full", "elsewhere")
    sets = [(["g1", "g2"], 0.5), (["u"], 0.5)]
    expect = np.mean([by_hand(runs[s], sets, runs[3 + s]) for s in range(3)])
    assert cmp["seeds"] == 3 and cmp["value"] == pytest.approx(expect, abs=1e-4)
    assert cmp["ci"][0] > 0 and cmp["previous"]["ci"][0] > 0


def test_items_missing_in_one_seed_are_an_error_naming_it() -> None:
    runs = [run("x", s, {"a": 0.5}) for s in range(3)]
    del runs[2].tuned["a"]["a-3"]
    with pytest.raises(ValueError, match=r"x, learning: run x seed 2 scored 29 items"):
        measure(runs, "learning")


def test_trend_is_the_least_squares_slope_over_every_rank() -> None:
    ranks = {2: "r2", 8: "r8", 16: "r16", 32: "r32"}
    rate = {2: 0.8, 8: 0.7, 16: 0.6, 32: 0.5}  # forgetting grows with log2 rank
    runs = [run(c, s, {"g1": rate[r], "g2": rate[r], "u": rate[r]}, "rank", spread=0.02)
            for r, c in ranks.items() for s in range(3)]
    xs = {math.log2(r): c for r, c in ranks.items()}
    slope = trend(runs, xs, "elsewhere")
    values = {r: measure([x for x in runs if x.config == c], "elsewhere")["value"]
              for r, c in ranks.items()}
    expect = np.polyfit([math.log2(r) for r in values], list(values.values()), 1)[0]
    assert slope["value"] == pytest.approx(expect, abs=1e-3) and slope["ci"][1] < 0


def test_unpaired_seed_sets_and_the_a_a_guard() -> None:
    same = [run("method=lora", s, {"a": 0.6, "g1": 0.8}, spread=0.03) for s in range(3)] + \
        [run(AA, s, {"a": 0.6, "g1": 0.8}, "aa", spread=0.03) for s in range(3, 6)]
    cmp = unpaired(same, "method=lora", AA, "elsewhere")
    assert cmp["seeds"] == [3, 3]
    points = summarise(same)
    found = claims(same, points, {}, {}, 0.05, 0.03, AA)
    guard = found[-1]
    assert guard["verdict"].startswith("inconclusive") and not guard["false_positive"]
    other = [r if r.config != AA else run(AA, r.seed, {"a": 0.95, "g1": 0.99}, "aa")
             for r in same]
    bad = claims(other, summarise(other), {}, {}, 0.05, 0.03, AA)[-1]
    assert bad["false_positive"]
    text = markdown(summarise(other), [bad], {}, [])
    assert "**The A/A comparison is not inconclusive" in text


def study_runs(full_gain: float) -> list[Run]:
    runs = []
    for s in range(3):
        runs += [run("method=lora", s, {"a": 0.6, "g1": 0.7, "g2": 0.7, "u": 0.6},
                     spread=0.01),
                 run("method=full", s, {"a": full_gain, "g1": 0.95, "g2": 0.95, "u": 0.9},
                     spread=0.01),
                 run("rank=2", s, {"a": 0.4, "g1": 0.9, "g2": 0.9, "u": 0.9}, "rank",
                     spread=0.01),
                 run("replay=0.0", s, {"a": 0.8, "g1": 0.4, "g2": 0.4, "u": 0.0}, "replay"),
                 run("replay=0.01", s, {"a": 0.8, "g1": 0.41, "g2": 0.41, "u": 0.0},
                     "replay"),
                 run("replay=0.2", s, {"a": 0.8, "g1": 0.9, "g2": 0.9, "u": 0.9}, "replay")]
    return runs


def test_claims_say_what_they_test() -> None:
    ranks, ratios = {2: "rank=2", 16: "method=lora"}, \
        {0.0: "replay=0.0", 0.01: "replay=0.01", 0.2: "replay=0.2"}
    runs = study_runs(full_gain=0.6)  # LoRA and full learn the same
    points = summarise(runs)
    found = {c["claim"][:3]: c for c in claims(runs, points, ranks, ratios, 0.05, 0.03, AA)}
    assert found["(a)"]["verdict"] == "supported"
    # (b): every ratio has its verdict; the largest decides, the last to hold is named
    b = found["(b)"]
    assert b["verdict"] == "supported"
    assert [c["a"] for c in b["comparisons"]] == ["replay=0.2", "replay=0.01"]
    assert b["comparisons"][1]["verdict"] == "inconclusive" and "power" in b["comparisons"][1]
    assert "the smallest ratio that helps: 0.2" in b["evidence"]
    # (c): gains shown equal within ±5 points, so the forgetting difference decides: LoRA
    # forgot more here, which contradicts the claim
    assert found["(c)"]["comparisons"][1]["equivalence"]["equivalent"]
    assert found["(c)"]["verdict"] == "contradicted"
    assert found["(c)"]["previous"]["verdict"] == "not supported"  # the old word for it
    # (d): the slope over the two ranks: rank 16 forgot more than rank 2
    assert found["(d)"]["verdict"] == "supported"
    assert points["replay=0.0"]["floor"] == ["u"] and points["method=full"]["floor"] == []
    text = markdown(points, list(found.values()), {}, [])
    assert "At the floor on u: replay=0.0, replay=0.01 answered none" in text
    assert "## Before and after: the previous method" in text


def test_claim_c_has_no_verdict_when_gains_differ() -> None:
    runs = study_runs(full_gain=0.95)  # full learns far more than LoRA
    points = summarise(runs)
    (c,) = [x for x in claims(runs, points, {}, {}, 0.05, 0.03, AA) if x["claim"][:3] == "(c)"]
    assert c["verdict"] == NO_VERDICT and "gains not shown comparable" in c["evidence"]


def strength_runs(replay: dict[str, float]) -> list[Run]:
    """The narrow model along α (less learning, less forgetting as α falls) and one replay
    ratio, over three seeds."""
    curve = {"replay=0.0": {"a": 0.8, "g1": 0.4, "g2": 0.4, "u": 0.0},
             "replay=0.0,strength=0.75": {"a": 0.7, "g1": 0.6, "g2": 0.6, "u": 0.4},
             "replay=0.0,strength=0.5": {"a": 0.5, "g1": 0.7, "g2": 0.7, "u": 0.7}}
    return [run(c, s, rates, "replay" if c == "replay=0.0" else "strength", spread=0.01)
            for s in range(3) for c, rates in {**curve, "replay=0.2": replay}.items()]


STRENGTHS = {"replay=0.0": {1.0: "replay=0.0", 0.75: "replay=0.0,strength=0.75",
                            0.5: "replay=0.0,strength=0.5"}}
RATIOS = {0.0: "replay=0.0", 0.2: "replay=0.2"}


def claim_e_of(runs: list[Run]) -> dict:
    found = claims(runs, summarise(runs), {}, RATIOS, 0.05, 0.03, AA, STRENGTHS)
    (e,) = [c for c in found if c["claim"][:3] == "(e)"]
    return e


def test_claim_e_matches_learning_then_asks_for_no_more_forgetting() -> None:
    # replay 0.2 learns what α = 0.75 learns (70%) and forgets more: interpolation wins
    e = claim_e_of(strength_runs({"a": 0.7, "g1": 0.5, "g2": 0.5, "u": 0.3}))
    forget, gain = e["comparisons"]
    assert (forget["a"], forget["b"]) == ("replay=0.0,strength=0.75", "replay=0.2")
    assert gain["equivalence"]["equivalent"] and forget["value"] > 0
    assert e["verdict"] == "supported" and "α = 0.75 (nearest learning)" in e["evidence"]
    # the same learning, but replay keeps far more elsewhere: contradicted
    e = claim_e_of(strength_runs({"a": 0.7, "g1": 0.9, "g2": 0.9, "u": 0.9}))
    assert e["verdict"] == "contradicted" and e["comparisons"][0]["ci"][1] < -0.05
    # no α learns what replay learns (60%: 0.75 and 0.5 are about 10 points off): no verdict
    e = claim_e_of(strength_runs({"a": 0.6, "g1": 0.5, "g2": 0.5, "u": 0.3}))
    assert not e["comparisons"][1]["equivalence"]["equivalent"]
    assert e["verdict"] == NO_VERDICT and "not shown comparable" in e["evidence"]
    # no strength points: not measured
    runs = [r for r in strength_runs({"a": 0.7}) if r.sweep != "strength"]
    found = claims(runs, summarise(runs), {}, RATIOS, 0.05, 0.03, AA, {})
    assert found[4]["claim"].startswith("(e)") and found[4]["verdict"] == "not measured"


def test_noninferiority_words() -> None:
    from forgetful.report.study_claims import noninferior

    assert noninferior({"ci": [-0.04, 0.02]}, 0.05) == "supported"
    assert noninferior({"ci": [-0.04, -0.01]}, 0.05) == "supported"  # worse, within margin
    assert noninferior({"ci": [-0.09, -0.01]}, 0.05) == "contradicted"
    assert noninferior({"ci": [-0.09, 0.03]}, 0.05) == "inconclusive"


def test_frontier_and_floor() -> None:
    runs = study_runs(full_gain=0.7)
    points = summarise(runs)
    assert frontier(points, ["replay=0.0", "replay=0.2"]) == ["replay=0.2"]
    assert at_floor([run("x", 0, {"u": 0.0}), run("x", 1, {"u": 0.0})]) == ["u"]
    assert at_floor([run("x", 0, {"u": 0.0}), run("x", 1, {"u": 0.3})]) == []


def test_items_file_keeps_every_score_and_redraws_the_same(tmp_path: Path) -> None:
    from forgetful.study.collect import read_items, write_items

    runs = study_runs(full_gain=0.6)
    write_items(tmp_path / "items.json.gz", runs)
    again = read_items(tmp_path / "items.json.gz")
    assert [(r.config, r.seed, r.base, r.tuned, r.kinds, r.info) for r in again] == \
        [(r.config, r.seed, r.base, r.tuned, r.kinds, r.info) for r in runs]
    first = (tmp_path / "items.json.gz").read_bytes()
    write_items(tmp_path / "items.json.gz", again)
    assert (tmp_path / "items.json.gz").read_bytes() == first  # no timestamp inside
    assert json.dumps(summarise(again), sort_keys=True) == \
        json.dumps(summarise(runs), sort_keys=True)
    (tmp_path / "items.json.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="is not a gzipped JSON file"):
        read_items(tmp_path / "items.json.gz")


def test_lr_sweep_steps_past_an_edge_and_resumes(tmp_path: Path) -> None:
    """The best rate on the grid's edge is not a minimum: the sweep tries up to two more
    (x3) past it; trials already in the file are not trained again."""
    from forgetful.study.plan import StudyParams, lr_sweep

    tried = []

    def fake(method: str, lr: float, steps: int) -> dict:
        tried.append(lr)
        return {"method": method, "learning_rate": lr, "train_loss": 1.0, "seconds": 0.0,
                "eval_loss": abs(math.log10(lr) - math.log10(1e-2))}

    out = tmp_path / "rates.json"
    p = StudyParams(methods=("lora",), learning_rates=str(out))
    lr_sweep(p, fake)
    assert tried == [3e-4, 1e-3, 3e-3, 9e-3, 3e-2]
    saved = json.loads(out.read_text())
    assert saved["chosen"] == {"lora": 9e-3} and saved["max_steps"] == 60
    tried.clear()
    lr_sweep(p, fake)  # resumed: nothing left to train
    assert tried == []


def test_points_cover_every_sweep_and_carry_the_code_in_their_name() -> None:
    from forgetful.study.plan import StudyParams, points

    params = {"train_adapter": {"seed": 42, "lora": {"r": 16}},
              "mix_tasks": {"seed": 7, "weights": {"a": 1.0, "b": 1.0}}}
    p = StudyParams(seeds=2, methods=("lora", "full"), ranks=(2, 16), narrow={"c": 1.0},
                    replay_ratios=(0.0, 0.2), aa_seeds=2, strengths=())
    plan = points(p, params, {"lora": 3e-3, "full": 1e-4}, code="abcdef123456")
    configs = sorted({pt.config for pt in plan.points})
    assert configs == [AA, "method=full", "method=lora", "rank=2", "replay=0.0", "replay=0.2"]
    assert len(plan.points) == 12 and len({pt.name for pt in plan.points}) == 12
    assert plan.ranks == {16: "method=lora", 2: "rank=2"}
    aa = [pt for pt in plan.points if pt.config == AA]
    assert [pt.seed for pt in aa] == [2, 3] and "train_adapter.seed=44" in aa[0].sets
    replay = next(pt for pt in plan.points if pt.config == "replay=0.2" and pt.seed == 1)
    assert {"mix_tasks.weights.a=0.0", "mix_tasks.weights.b=0.0", "mix_tasks.weights.c=1.0",
            "mix_tasks.replay.ratio=0.2", "train_adapter.seed=43", "mix_tasks.seed=8",
            "train_adapter.learning_rate=3.0e-03"} <= set(replay.sets)
    assert all(pt.name.endswith("-abcdef") for pt in plan.points)
    other = points(p, params, {"lora": 3e-3, "full": 1e-4}, code="999999999999")
    assert not {pt.name for pt in plan.points} & {pt.name for pt in other.points}
    assert [pt.stem for pt in other.points] == [pt.stem for pt in plan.points]


def test_strength_points_reuse_their_base_training_and_queue_after_it(tmp_path: Path) -> None:
    from forgetful.study.plan import StudyParams, points
    from forgetful.study.queue import longest_first

    params = {"train_adapter": {"seed": 42, "lora": {"r": 16}},
              "mix_tasks": {"seed": 7, "weights": {"a": 1.0, "b": 1.0}}}
    p = StudyParams(seeds=2, methods=("lora", "full"), ranks=(), narrow={"c": 1.0},
                    replay_ratios=(0.0, 0.2), aa_seeds=0, strengths=(0.5, 0.25))
    plan = points(p, params, {"lora": 3e-3, "full": 1e-4}, code="abcdef123456")
    assert plan.strengths == {
        "replay=0.0": {1.0: "replay=0.0", 0.5: "replay=0.0,strength=0.5",
                       0.25: "replay=0.0,strength=0.25"},
        "method=lora": {1.0: "method=lora", 0.5: "method=lora,strength=0.5",
                        0.25: "method=lora,strength=0.25"}}
    by = {(pt.config, pt.seed): pt for pt in plan.points}
    assert len(plan.points) == 2 * (2 + 2 + 4) and len({pt.name for pt in plan.points}) == 16
    for base in ("replay=0.0", "method=lora"):
        derived = by[(f"{base},strength=0.25", 1)]
        assert derived.sweep == "strength" and derived.after == base
        # the same training params: only the merge differs
        assert set(derived.sets) - set(by[(base, 1)].sets) == {"merge_adapter.strength=0.25"}
        assert set(by[(base, 1)].sets) <= set(derived.sets)
    assert by[("replay=0.0,strength=0.5", 0)].stem.startswith("replay-0.0-strength-0.5-s0-")
    # longest first, but every strength point after every training point, in its base's
    # order, even where its configuration was never timed (unknown comes first otherwise)
    last = tmp_path / "study.json"
    last.write_text(json.dumps({"points": {"method=lora": {"info": {"stage_seconds": 300}},
                                           "replay=0.0": {"info": {"stage_seconds": 100}}}}))
    order = longest_first(plan.points, last)
    trained = [pt for pt in order if not pt.after]
    assert order[:len(trained)] == trained and len(trained) == 8
    assert [pt.after for pt in order[8:]] == ["method=lora"] * 4 + ["replay=0.0"] * 4
    with pytest.raises(ValueError, match="strengths must each be in"):
        StudyParams(strengths=(1.0,))


def test_mlflow_redraw_refuses_points_that_reuse_a_training() -> None:
    """A strength point's stages log to the MLflow run that trained its adapter (found by
    the adapter's hash), so MLflow cannot tell it from its base point: refused, naming
    what redraws it, before any MLflow call."""
    from forgetful.core.config import ConfigError
    from forgetful.study.collect import from_mlflow
    from forgetful.study.plan import Point

    pts = [Point("replay=0.0", "replay", 0, ("x=1",)),
           Point("replay=0.0,strength=0.5", "strength", 0, ("x=1", "y=2"), after="replay=0.0")]
    with pytest.raises(ConfigError, match=r"1 points reuse another point's training .*"
                                          r"--collect-only\) or the per-item file"):
        from_mlflow(pts, None)  # type: ignore[arg-type]


def test_points_made_by_other_code_are_stale() -> None:
    from forgetful.study.plan import Point
    from forgetful.study.queue import stale

    now = [Point("method=lora", "method", 0, ("x=1",), "abcdef00"),
           Point("method=lora", "method", 1, ("x=2",), "abcdef00")]
    older = Point("method=lora", "method", 0, ("x=1",), "123456ff").name
    unnamed = Point("method=lora", "method", 1, ("x=2",)).name  # before fingerprints
    unrelated = Point("method=full", "method", 0, ("y=1",), "123456ff").name
    assert stale(now, [now[0].name, older, unnamed, unrelated]) == sorted([older, unnamed])


def test_study_evaluate_overrides_reach_every_point_and_its_name() -> None:
    from forgetful.study.plan import StudyParams, points

    params = {"train_adapter": {"seed": 42, "lora": {"r": 16}},
              "mix_tasks": {"seed": 7, "weights": {"a": 1.0}}}
    plain = StudyParams(seeds=1, aa_seeds=0, methods=("lora",), ranks=(), narrow={"a": 1.0},
                        replay_ratios=(0.0,))
    trimmed = StudyParams(seeds=1, aa_seeds=0, methods=("lora",), ranks=(), narrow={"a": 1.0},
                          replay_ratios=(0.0,),
                          evaluate={"in_template": False, "text_suite": []})
    before = points(plain, params, {"lora": 3e-3}).points
    after = points(trimmed, params, {"lora": 3e-3}).points
    for pt in after:
        assert {"evaluate.in_template=false", "evaluate.text_suite=[]"} <= set(pt.sets)
    assert not {pt.name for pt in before} & {pt.name for pt in after}
    with pytest.raises(ValueError, match="unknown evaluate param 'in_templates'"):
        StudyParams(evaluate={"in_templates": False})
    with pytest.raises(ValueError, match="aa_seeds needs study.seeds >= 2"):
        StudyParams(seeds=1, aa_seeds=3)


def test_points_queue_longest_first(tmp_path: Path) -> None:
    from forgetful.study.plan import Point
    from forgetful.study.queue import longest_first

    todo = [Point(c, "s", k, (c, str(k))) for c in ("a", "b", "c", "d") for k in (0, 1)]
    last = tmp_path / "study.json"
    assert longest_first(todo, last) == todo
    last.write_text(json.dumps({"points": {"a": {"info": {"stage_seconds": 100.0}},
                                           "b": {"info": {"stage_seconds": 300.0}},
                                           "d": {"info": {"stage_seconds": 200.0}}}}))
    order = [(pt.config, pt.seed) for pt in longest_first(todo, last)]
    assert order == [("c", 0), ("c", 1), ("b", 0), ("b", 1), ("d", 0), ("d", 1),
                     ("a", 0), ("a", 1)]


def test_a_dead_queue_worker_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC's celery workers can die of a half-written broker message (treeverse/dvc#10428):
    while points wait, the driver starts the missing workers again, and never once the
    queue is empty; the status lines are `dvc queue status`'s."""
    from forgetful.study import queue
    from forgetful.study.plan import Point

    todo = [Point("a", "s", k, ("a", str(k))) for k in (0, 1, 2)]
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
    monkeypatch.setattr(queue, "dvc", lambda *args, **kw: calls.append(args) or (
        next(statuses) if args[:2] == ("queue", "status") else ""))
    monkeypatch.setattr(queue.subprocess, "run", lambda cmd, **kw: starts.append(cmd))
    monkeypatch.setattr(queue.time, "sleep", lambda s: None)
    assert queue.run_points(todo, 2) == 1
    assert starts == [["dvc", "queue", "start", "-j", "2"]] * 2
    assert sum(args[:2] == ("exp", "run") for args in calls) == 3
    assert queue.workers_short("no worker line", 3, 2) == 0
    assert queue.workers_short("Worker status: 0 active, 0 idle", 0, 2) == 0
    assert queue.workers_short("Worker status: 0 active, 1 idle", 5, 2) == 1


def test_fingerprint_follows_the_code_and_data_behind_the_scores(tmp_path: Path) -> None:
    """An edit to code a scored stage runs, or to its params, is another pipeline; the
    README, the report stage and params no scored stage reads are not."""
    from forgetful.study.fingerprint import pipeline
    from tests.conftest import copy_repo

    repo = copy_repo(tmp_path / "repo")
    first = pipeline(repo)
    (repo / "README.md").write_text("changed\n")
    (repo / "forgetful/report/study_page.py").write_text("# changed\n")
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("min_effect: 0.03", "min_effect: 0.05"))
    assert pipeline(repo) == first
    (repo / "params.yaml").write_text(params.replace("  seed: 42", "  seed: 43", 1))
    second = pipeline(repo)
    assert second != first
    (repo / "forgetful/train/trainer.py").write_text(
        (repo / "forgetful/train/trainer.py").read_text() + "\n# changed\n")
    assert pipeline(repo) not in (first, second)


def test_redraw_from_mlflow_names_what_is_missing(tmp_path: Path) -> None:
    """--from-mlflow on a store without the study, or without a point's run, says which."""
    from mlflow.tracking import MlflowClient

    from forgetful.core.config import ConfigError
    from forgetful.core.tracking import TrackingParams
    from forgetful.study.collect import from_mlflow
    from forgetful.study.plan import Point

    tp = TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="study")
    point = Point("method=lora", "method", 0, ("train_adapter.learning_rate=0.001",), "abc123")
    with pytest.raises(ConfigError, match="has no MLflow experiment 'study'"):
        from_mlflow([point], tp)
    MlflowClient(tp.uri).create_experiment("study")
    with pytest.raises(ConfigError, match=r"1 of 1 points have no finished MLflow run in "
                                          rf"experiment 'study' \(first: {point.name}"):
        from_mlflow([point], tp)
