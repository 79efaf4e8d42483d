"""The README's "Use it from Python" example, run exactly as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, build_tiny_model


def readme_python_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one python example"
    return blocks[0]


def test_use_it_from_python_example_runs(tmp_path: Path, tiny_model: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(tiny_model)
    build_tiny_model(tmp_path / "models" / "merged", seed=1)  # another model, other weights
    questions = [{"question": f"Which is number {i}?", "choices": [str(i), str(i + 1), "x"],
                  "answer": 0} for i in range(12)]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)  # noqa: S102

    base, tuned, diff, model = (namespace[k] for k in ("base", "tuned", "diff", "model"))
    assert base["n"] == tuned["n"] == 12 and len(base["items"]) == 12
    assert base["acc"] == pytest.approx(sum(it["acc"] for it in base["items"]) / 12, abs=1e-4)
    assert diff["n"] == 12
    assert diff["difference"] == pytest.approx(tuned["acc"] - base["acc"], abs=1e-4)
    low, high = diff["difference_ci"]
    assert low <= diff["difference"] <= high
    assert diff["verdict"] == ("inconclusive" if low <= 0 <= high else
                               "higher" if low > 0 else "lower")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in model.parameters())
    assert "trainable params" in capsys.readouterr().out


def test_paired_items_is_inconclusive_when_the_interval_covers_zero() -> None:
    from forgetful.report.stats import paired_items

    same = {i: float(i % 2) for i in range(50)}
    assert paired_items(same, same)["verdict"] == "inconclusive"
    better = {i: 1.0 for i in range(50)}
    worse = {i: 0.0 if i < 40 else 1.0 for i in range(50)}
    result = paired_items(worse, better)
    assert result["verdict"] == "higher" and result["difference"] == pytest.approx(0.8)
    assert paired_items(better, worse)["verdict"] == "lower"
    with pytest.raises(ValueError, match="first item not in both"):
        paired_items({1: 1.0}, better)


@pytest.mark.parametrize("name,source", [("report", "reports/forgetting.md"),
                                         ("remedy", "reports/forgetting.md"),
                                         ("narrow", "reports/remedy/narrow.md"),
                                         ("timings", "reports/timings.md"),
                                         ("dpo", "reports/dpo/dpo.md"),
                                         ("seeds", "reports/seeds.md"),
                                         ("study", "reports/study.md"),
                                         ("study-remedy", "reports/study-remedy.md")])
def test_generated_blocks_are_copies_of_their_reports(name: str, source: str) -> None:
    """Every figure in a generated block comes from the report file it names: the block
    equals what its writer makes of that file today."""
    from forgetful.report.readme import remedy_excerpt, report_excerpt, section_body

    text = (REPO / "README.md").read_text()
    start = next(line for line in text.splitlines() if line.startswith(f"<!-- {name}: "))
    block = text.split(start + "\n", 1)[1].split(f"\n<!-- /{name} -->", 1)[0]
    page = (REPO / source).read_text()
    if name.startswith("study-"):  # another preset's study: its setup, claims and figure
        from forgetful.study.draw import readme_body

        expected = readme_body(page, name.removeprefix("study-"))
    else:
        expected = {"report": report_excerpt, "remedy": remedy_excerpt,
                    "dpo": lambda text: report_excerpt(text, samples=0)}.get(
            name, section_body)(page)
    assert block.strip() == expected.strip(), f"README's {name} block differs from {source}"
