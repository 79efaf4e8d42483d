"""report: paired bootstrap intervals and the forgetting gate, on hand-made evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from forgetful.core.artifacts import write_json, write_jsonl
from forgetful.report.forgetting import ForgettingTooMuch
from stages import report
from tests.conftest import TINY_PARAMS, write_params


def fake_eval(folder: Path, sentiment: list[int], capitals: list[int]) -> None:
    rows = [{"kind": "task", "task": "sentiment", "id": f"s{i}", "correct": bool(c)}
            for i, c in enumerate(sentiment)]
    rows += [{"kind": "general", "task": "capitals", "id": f"c{i}", "acc": c, "acc_norm": c}
             for i, c in enumerate(capitals)]
    write_jsonl(folder / "predictions.jsonl", rows)
    write_jsonl(folder / "samples.jsonl",
                [{"id": "sample-0", "instruction": "Hi", "prompt": "Hi", "prediction": "Hello"}])
    write_json(folder / "scores.json", {
        "tasks": {"sentiment": {"metric": "exact_match", "score": sum(sentiment) / len(sentiment),
                                "n": len(sentiment)}},
        "general": {"capitals": {"acc": sum(capitals) / len(capitals), "n": len(capitals)}}})


def run(tmp_path: Path, tuned_capitals: list[int], **report_params: object) -> argparse.Namespace:
    fake_eval(tmp_path / "base", [0] * 20, [1] * 20)
    fake_eval(tmp_path / "tuned", [1] * 20, tuned_capitals)
    write_json(tmp_path / "mix.json", {"tasks": {"sentiment": {}}})
    (tmp_path / "curve.csv").write_text("step,loss,learning_rate,tokens_per_s\n1,2.0,0.1,10\n")
    write_json(tmp_path / "adapter" / "run_info.json", {"metrics": {}})
    params = json.loads(json.dumps(TINY_PARAMS))
    params["report"].update(report_params)
    params["tracking"]["enabled"] = False
    a = argparse.Namespace(
        params=write_params(tmp_path / "p.yaml", params), base_eval=tmp_path / "base",
        tuned_eval=tmp_path / "tuned", mix=tmp_path / "mix.json", curve=tmp_path / "curve.csv",
        adapter=tmp_path / "adapter", markdown=tmp_path / "r/forgetting.md",
        figures=tmp_path / "r/figures", metrics=tmp_path / "r/forgetting.json",
        plot=tmp_path / "r/forgetting.csv", drift=None, probe=None, remedy=None)
    report.main(a)
    return a


def test_intervals_bracket_the_difference(tmp_path: Path) -> None:
    a = run(tmp_path, [1] * 15 + [0] * 5)
    rows = {r["benchmark"]: r for r in json.loads(a.metrics.read_text())["rows"]}
    cap = rows["capitals"]
    assert cap["difference"] == -0.25
    low, high = cap["difference_ci"]
    # 5 of 20 items lost: -25 ± t(19) · 0.099 = [-45.8, -4.2], and never above 0 (a base
    # that knew every item cannot gain)
    assert (low, high) == pytest.approx((-0.4579, -0.0421), abs=2e-4)
    assert rows["sentiment"]["difference_ci"] == [1.0, 1.0]  # 0 -> 1 on every item
    assert "| capitals | general | acc | 20 | 100.0 | 75.0 | -25.0 [" in a.markdown.read_text()
    again = run(tmp_path, [1] * 15 + [0] * 5)
    assert json.loads(again.metrics.read_text()) == json.loads(a.metrics.read_text())


def test_forgetting_gate_warns_or_fails(tmp_path: Path, capsys) -> None:
    a = run(tmp_path, [1] * 10 + [0] * 10, max_forgetting=0.2, on_forgetting="warn")
    assert json.loads(a.metrics.read_text())["forgetting_too_much"] is True
    assert "warning: the tuned model lost 50.0 points" in capsys.readouterr().out
    assert "**Forgetting too much:**" in a.markdown.read_text()
    fresh = tmp_path / "again"
    fresh.mkdir()
    with pytest.raises(ForgettingTooMuch, match=r"lost 50\.0 points .*nothing was written"):
        run(fresh, [1] * 10 + [0] * 10, max_forgetting=0.2, on_forgetting="fail")
    assert not (fresh / "r").exists()


def test_near_chance_skills_are_shown_but_not_counted_and_the_suite_pools_items() -> None:
    from forgetful.report.forgetting import NEAR_CHANCE, SUITE, compare, pooled_items

    def scores(a: float, b: float, c: float) -> dict:
        return {"tasks": {"t": {"metric": "exact_match", "score": a}},
                "general": {"known": {"acc": b, "acc_norm": b, "n": 100, "chance": 0.25},
                            "known2": {"acc": 0.8, "acc_norm": 0.8, "n": 300, "chance": 0.25},
                            "guess": {"acc": c, "acc_norm": c, "n": 60, "chance": 0.25}}}

    result = compare(scores(0.0, 0.9, 0.3), scores(1.0, 0.7, 0.0), {"t"}, 0.10)
    kinds = {r["benchmark"]: r["kind"] for r in result["rows"]}
    assert kinds == {"t": "trained task", "known": "general", "known2": "general",
                     "guess": NEAR_CHANCE, SUITE: SUITE}
    # Kept: known (-0.2) and known2 (0.0); the near-chance drop of 0.3 is not counted.
    assert result["mean_retained_difference"] == pytest.approx(-0.1)
    suite = next(r for r in result["rows"] if r["kind"] == SUITE)
    assert suite["n"] == 400 and suite["base"] == pytest.approx((90 + 240) / 400)
    items = {"known": {"k1": 1.0}, "known2": {"k2": 0.0}, "guess": {"g1": 1.0}}
    assert pooled_items(items, result["rows"]) == {"k1": 1.0, "k2": 0.0}
    # The report says what its headline means are over, and shows acc_norm beside acc
    from forgetful.report.forgetting import markdown

    text = markdown(result, [], {}, [])
    assert "the change elsewhere the mean over 2 rows, each counting once whatever its " \
           "size (known, known2)" in text
    assert "| known | general | acc | 100 | 90.0 | 70.0 | -20.0 | 78% | 90.0 → 70.0 |" in text


def test_seed_interval_counts_seed_variance() -> None:
    from forgetful.report.seeds import across_seeds

    base = {str(i): 0.0 for i in range(200)}
    same = [(base, {str(i): 1.0 if i < 40 else 0.0 for i in range(200)})] * 3
    result = across_seeds(same, "x")
    assert result["difference"] == 0.2 and result["per_seed"] == [0.2, 0.2, 0.2]
    assert result["seed_sd"] == 0.0 and result["verdict"] == "higher"
    assert result["difference_ci"][0] < 0.2 < result["difference_ci"][1]
    assert result["dominant"] == "items"
    # Runs that each look sure of themselves but disagree: only seed variance shows it,
    # with t on 2 degrees of freedom (the previous method stayed inside the seed range)
    spread = [(base, {str(i): float(i < k) for i in range(200)}) for k in (0, 60, 120)]
    result = across_seeds(spread, "x")
    assert result["per_seed"] == [0.0, 0.3, 0.6] and result["difference"] == 0.3
    assert result["seed_sd"] == 0.3 and result["dominant"] == "seeds"
    low, high = result["difference_ci"]
    assert (low, high) == (0.0, 1.0)  # ± t(2) · 0.3 / √3 = ± 0.75, cut to what 0 → 1 allows
    assert result["verdict"] == "inconclusive"
    assert result["previous"]["ci"][1] <= 0.65  # it could not reach past the highest seed
    assert result["power"]["detectable"] > 0.3


def test_seeds_report_pools_runs_per_benchmark() -> None:
    from forgetful.report.seeds import aggregate, markdown

    def rows(correct: list[int], general: list[int]) -> list[dict]:
        return ([{"kind": "task", "task": "sentiment", "id": f"s{i}", "correct": bool(c)}
                 for i, c in enumerate(correct)] +
                [{"kind": "general", "task": "capitals", "id": f"c{i}", "acc": a}
                 for i, a in enumerate(general)])

    forgetting = {"rows": [{"benchmark": "sentiment", "kind": "trained task"},
                           {"benchmark": "capitals", "kind": "general"},
                           {"benchmark": "general suite", "kind": "general suite"}]}
    runs = [{"seeds": {"train": 42 + k, "mix": 7 + k}, "forgetting": forgetting,
             "base": rows([0] * 10, [1] * 20), "tuned": rows([1] * (5 + k) + [0] * (5 - k),
                                                             [1] * (20 - k) + [0] * k)}
            for k in range(3)]
    out = {r["benchmark"]: r for r in aggregate(runs)}
    assert set(out) == {"sentiment", "capitals", "general suite"}
    assert out["sentiment"]["per_seed"] == [0.5, 0.6, 0.7]
    assert out["capitals"]["per_seed"] == [0.0, -0.05, -0.1]
    assert out["general suite"]["n"] == 20 and out["capitals"]["tuned"] == 0.95
    text = markdown(list(out.values()), runs, 0.03)
    assert "| sentiment | trained task | 10 | 0.0 | 60.0 | +60.0 [" in text
    assert "train 42 / mixture 7, train 43 / mixture 8, train 44 / mixture 9" in text
