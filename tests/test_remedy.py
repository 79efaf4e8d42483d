"""The remedy's pure parts: the candidates, the selection split, the measures and the rule
(forgetful/report/remedy.py). The stage itself runs on the tiny model in test_stages.py."""

from __future__ import annotations

import numpy as np
import pytest

from forgetful.core.config import ConfigError, build
from forgetful.report.remedy import (
    SELECTION,
    VERDICT,
    RemedyParams,
    candidates,
    change,
    choose,
    split_general,
)
from forgetful.report.stats import estimate


def test_candidates_strengths_then_steps_and_alpha_one_always() -> None:
    p = RemedyParams(strengths=(0.25, 0.75), steps=())
    found, notes = candidates(p, True, "lora", [10, 20])
    assert [c.name for c in found] == ["α=1.00", "α=0.75", "α=0.25", "step 10", "step 20"]
    assert notes == []
    only, _ = candidates(RemedyParams(strengths=(), steps=(20,)), True, "lora", [10, 20])
    assert [c.name for c in only] == ["α=1.00", "step 20"]


def test_prompt_methods_get_steps_only_with_a_note() -> None:
    found, notes = candidates(RemedyParams(strengths=(0.5,)), False, "prompt_tuning", [5])
    assert [c.name for c in found] == ["α=1.00", "step 5"]
    assert "prompt_tuning adds trained inputs" in notes[0]


def test_a_step_never_kept_is_an_error_naming_the_keys() -> None:
    with pytest.raises(ValueError, match=r"step 30, which train_adapter did not keep .*"
                                         r"train_adapter.keep_every"):
        candidates(RemedyParams(steps=(30,)), True, "lora", [10, 20])


@pytest.mark.parametrize("bad, key", [({"strengths": [1.5]}, "remedy.strengths"),
                                      ({"strengths": [1.0]}, "remedy.strengths"),
                                      ({"budget": -0.1}, "remedy.budget"),
                                      ({"steps": [0]}, "remedy.steps"),
                                      ({"measure": "everything"}, "remedy.measure"),
                                      ({"strenghts": [0.5]}, "did you mean 'strengths'")])
def test_bad_remedy_params_name_the_key(bad: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build(RemedyParams, bad, "remedy")


def test_the_selection_split_is_fixed_by_ids_and_about_half() -> None:
    suite = {"capitals": [{"q": i} for i in range(400)], "story": [{"q": i} for i in range(100)]}
    a, b = split_general(suite), split_general(suite)
    assert a == b
    sel = {i for pairs in a[SELECTION].values() for i, _ in pairs}
    ver = {i for pairs in a[VERDICT].values() for i, _ in pairs}
    assert not sel & ver and len(sel | ver) == 500
    assert 200 < len(sel) < 300
    # an item keeps its half when the benchmark grows: the id alone decides
    grown = split_general({"capitals": [{"q": i} for i in range(800)]})
    assert {i for i, _ in a[SELECTION]["capitals"]} <= {i for i, _ in grown[SELECTION]["capitals"]}


def test_change_is_the_mean_of_benchmark_means_with_item_variance() -> None:
    rng = np.random.default_rng(0)
    base = {"a": {f"a{i}": float(rng.integers(2)) for i in range(50)},
            "b": {f"b{i}": float(rng.integers(2)) for i in range(10)}}
    model = {"a": {k: float(rng.integers(2)) for k in base["a"]},
             "b": {k: 1.0 for k in base["b"]}}
    got = change(base, model, ["a", "b"])
    da = np.array([model["a"][k] - base["a"][k] for k in sorted(base["a"])])
    db = np.array([model["b"][k] - base["b"][k] for k in sorted(base["b"])])
    assert got["value"] == pytest.approx((da.mean() + db.mean()) / 2, abs=1e-4)
    expected = estimate([(1.0, np.concatenate([da, db]))], strata=[0] * 50 + [1] * 10)
    assert got["ci"] == expected["ci"]
    # the interval counts item variance: wider than zero, and the per-benchmark variances
    half = (got["ci"][1] - got["ci"][0]) / 2
    se = np.sqrt((da.var(ddof=1) / 50 + db.var(ddof=1) / 10) / 4)
    assert 1.9 * se < half < 2.2 * se
    pooled = change(base, model, ["a", "b"], pooled=True)
    assert pooled["value"] == pytest.approx(np.concatenate([da, db]).mean(), abs=1e-4)
    with pytest.raises(Exception, match="same test items"):
        change(base, {"a": model["a"], "b": {"b0": 1.0}}, ["a", "b"])


def row(name: str, learning: float, forgetting: float, low: float) -> dict:
    return {"name": name, "learning": {"value": learning, "ci": [learning - 0.1,
                                                                 learning + 0.1]},
            "forgetting": {"value": forgetting, "ci": [low, forgetting + 0.05]}}


def test_the_rule_takes_the_most_learning_within_budget() -> None:
    rows = [row("α=1.00", 0.40, -0.06, -0.12), row("α=0.50", 0.30, -0.01, -0.04),
            row("α=0.25", 0.10, 0.00, -0.02)]
    got = choose(rows, 0.05)
    assert got["chosen"] == "α=0.50"
    assert [r["within_budget"] for r in rows] == [False, True, True]
    assert choose(rows, 0.20)["chosen"] == "α=1.00"
    assert choose(rows, 0.01)["chosen"] == "base"  # none within: the base
    tie = [row("x", 0.3, -0.02, -0.04), row("y", 0.3, -0.01, -0.04)]
    assert choose(tie, 0.05)["chosen"] == "y"  # equal learning: the one that forgets less
