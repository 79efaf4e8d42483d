"""The committed seeds and study reports are what the code computes from the committed
per-item scores: a redraw gives the same intervals and verdicts. The intervals are
computed, not resampled, so no bootstrap seed can move a verdict (the previous method's
columns are drawn at its fixed seed 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_seeds_report_redraws_to_its_verdicts() -> None:
    from forgetful.report.seeds import aggregate
    from stages.run_seeds import load_runs

    committed = json.loads((REPO / "reports/seeds.json").read_text())
    runs = load_runs(REPO / "reports/seeds", len(committed["runs"]))
    rows = aggregate(runs)
    assert [(r["benchmark"], r["difference_ci"], r["verdict"]) for r in rows] == \
        [(r["benchmark"], r["difference_ci"], r["verdict"]) for r in committed["rows"]]
    assert aggregate(runs) == rows  # nothing random


@pytest.mark.parametrize("preset,out", [("default", "reports/study"),
                                        ("remedy", "reports/study-remedy")])
def test_study_report_redraws_to_its_claims(monkeypatch: pytest.MonkeyPatch, preset: str,
                                            out: str) -> None:
    from forgetful.core.config import build, load_params, section
    from forgetful.report.forgetting import ReportParams
    from forgetful.report.study import summarise
    from forgetful.report.study_claims import claims
    from forgetful.study.collect import read_items
    from forgetful.study.plan import AA, learning_rates, points, study_params

    monkeypatch.chdir(REPO)
    params = load_params("params.yaml")
    if not (REPO / out / "items.json.gz").exists():
        pytest.skip(f"no committed {preset} study")
    p = study_params(params, preset)
    plan = points(p, params, learning_rates(p))
    committed = json.loads((REPO / f"{out}.json").read_text())
    runs = read_items(REPO / out / "items.json.gz")
    summary = summarise(runs)
    found = claims(runs, summary, plan.ranks, plan.ratios, p.equivalence_margin,
                   build(ReportParams, section(params, "report"), "report").min_effect, AA,
                   plan.strengths)
    assert [(c["claim"], c["verdict"]) for c in found] == \
        [(c["claim"], c["verdict"]) for c in committed["claims"]]
    for config, point in committed["points"].items():
        for m in ("learning", "general", "untrained", "elsewhere"):
            assert summary[config][m]["ci"] == point[m]["ci"], (config, m)


def test_committed_items_file_is_small() -> None:
    items = Path(REPO / "reports/study/items.json.gz")
    if items.exists():
        assert items.stat().st_size < 3_000_000
