"""mix_tasks: strategies, caps, replay, composition metrics and the contamination gate."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from forgetful.core.config import ConfigError, DataError, build
from forgetful.data.mixing import MixParams, allocate, mix, plan
from stages.format_data import main as format_main
from stages.mix_tasks import main
from tests.conftest import write_params


def params(**changes: object) -> MixParams:
    block = {"seed": 0, "weights": {"a": 3.0, "b": 1.0}, "total_examples": 40,
             "val_per_task": 2, **changes}
    return build(MixParams, block, "mix_tasks")


SIZES = {"a": 10, "b": 100, "r": 50}
MEAN_TOKENS = {"a": 10.0, "b": 40.0, "r": 20.0}


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate({"a": 1.0, "b": 1.0, "c": 0.0}, 10) == {"a": 5, "b": 5}
    assert allocate({"a": 2.0, "b": 1.0}, 100) == {"a": 67, "b": 33}


def test_strategies() -> None:
    assert plan(params(strategy="proportional"), SIZES, MEAN_TOKENS) == {"a": 10, "b": 100}
    assert plan(params(strategy="examples"), SIZES, MEAN_TOKENS) == {"a": 30, "b": 10}
    # tokens: 3/4 of 4000 tokens at 10 per example for a, 1/4 at 40 per example for b
    assert plan(params(strategy="tokens", total_tokens=4000), SIZES, MEAN_TOKENS) == {
        "a": 300, "b": 25}
    # temperature 1: weight x size -> 30 : 100 of 130 examples
    assert plan(params(strategy="temperature", total_examples=130, temperature=1.0), SIZES,
                MEAN_TOKENS) == {"a": 30, "b": 100}
    # a large temperature flattens sizes: back to the weights alone, 3 : 1
    flat = plan(params(strategy="temperature", temperature=1e9), SIZES, MEAN_TOKENS)
    assert flat == {"a": 30, "b": 10}


def test_caps_upsampling_and_replay() -> None:
    assert plan(params(caps={"a": 12}), SIZES, MEAN_TOKENS) == {"a": 12, "b": 10}
    assert plan(params(upsample=False), SIZES, MEAN_TOKENS) == {"a": 10, "b": 10}
    replay = plan(params(replay={"task": "r", "ratio": 0.2}), SIZES, MEAN_TOKENS)
    # 8 of the same 40 = 20% of the mixture: replay replaces a share, the total stays
    assert replay == {"a": 24, "b": 8, "r": 8}
    assert sum(replay.values()) == sum(plan(params(), SIZES, MEAN_TOKENS).values())


def test_mix_upsamples_and_reports_composition() -> None:
    train = {t: [{"task": t, "i": i} for i in range(n)] for t, n in SIZES.items()}
    val = {t: [{"task": t}] * 3 for t in SIZES}
    p = params(replay={"task": "r", "ratio": 0.2})
    mixed, mixed_val, summary = mix(train, val, p, n_tokens=lambda r: 2)
    assert Counter(r["task"] for r in mixed) == {"a": 24, "b": 8, "r": 8}
    # a has 10 examples for 24 slots: every one used 2 or 3 times
    assert set(Counter(r["i"] for r in mixed if r["task"] == "a").values()) == {2, 3}
    tasks = summary["tasks"]
    assert tasks["a"]["effective_epochs"] == 2.4 and tasks["b"]["effective_epochs"] == 0.08
    assert tasks["r"]["replay"] and tasks["r"]["share"] == 0.2
    assert tasks["a"]["tokens"] == 48 and summary["tokens"] == 80
    assert summary["replay"]["ratio"] == 0.2 and "same total" in summary["replay"]["replaces"]
    assert len(mixed_val) == 6
    assert mix(train, val, p, n_tokens=lambda r: 2)[0] == mixed  # seeded


def test_params_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"mix_tasks\.strategy must be one of proportional"):
        params(strategy="random")
    with pytest.raises(ConfigError, match=r"mix_tasks\.total_tokens must be a positive integer"):
        params(strategy="tokens")
    with pytest.raises(ConfigError, match=r"mix_tasks\.replay\.ratio must be in \[0, 1\)"):
        params(replay={"task": "r", "ratio": 1.5})
    with pytest.raises(ConfigError, match=r"mix_tasks\.weights must give some task a weight > 0"):
        params(weights={"a": 0.0})


@pytest.fixture()
def formatted(tmp_path: Path, tiny_model: Path, tiny_params: dict) -> tuple[Path, dict]:
    """sentiment and reading formatted with the tiny tokenizer, plus a leaky replay task."""
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in [
        ("What is the capital of France?", "Paris"), ("What is the capital of Spain?", "Madrid"),
        ("Tell me a joke about cats.", "sure"), ("Name a colour.", "Red"),
        ("Count to three.", "1 2 3")]))
    tiny_params["format_data"]["tasks"]["leaky"] = {
        "source": "file", "path": str(leaky), "n_train": 0, "n_val": 0, "n_test": 0,
        "evaluate": False}
    pfile = write_params(tmp_path / "params.yaml", tiny_params)
    for task in tiny_params["format_data"]["tasks"]:
        format_main(task, tiny_model, tmp_path / "formatted" / task, tmp_path / f"{task}.json",
                    pfile)
    return tmp_path, tiny_params


def test_mix_stage_writes_composition_and_contamination(formatted, tiny_model: Path) -> None:
    root, tiny_params = formatted
    pfile = write_params(root / "params.yaml", tiny_params)
    main(root / "formatted", tiny_model, root / "mixed", root / "mix.json", pfile)
    summary = json.loads((root / "mix.json").read_text())
    assert summary["tasks"]["sentiment"]["examples"] == 64
    assert set(summary["contamination"]) == {"task:sentiment", "task:reading",
                                             "general:capitals", "general:opposites"}
    assert all(c["contaminated"] == 0 for c in summary["contamination"].values())


def test_contaminated_replay_fails_the_stage_and_writes_nothing(formatted,
                                                                tiny_model: Path) -> None:
    root, tiny_params = formatted
    tiny_params["mix_tasks"]["replay"] = {"task": "leaky", "ratio": 0.2}
    pfile = write_params(root / "params.yaml", tiny_params)
    with pytest.raises(DataError, match=r"evaluation set general:capitals: 2 of 89 items overlap "
                                        r"the training mixture .*max_share=0\.01\), e\.g\. "
                                        r"What is the capital of .* \(matched: 'what is the "):
        main(root / "formatted", tiny_model, root / "mixed", root / "mix.json", pfile)
    assert not (root / "mixed").exists() and not (root / "mix.json").exists()


def test_unknown_task_in_weights_lists_formatted_tasks(formatted, tiny_model: Path) -> None:
    root, tiny_params = formatted
    tiny_params["mix_tasks"]["weights"] = {"sentiment": 1.0, "poetry": 1.0}
    pfile = write_params(root / "params.yaml", tiny_params)
    with pytest.raises(ConfigError, match=r"names task 'poetry', which format_data did not "
                                          r"produce; formatted tasks: leaky, reading, sentiment"):
        main(root / "formatted", tiny_model, root / "mixed", root / "mix.json", pfile)
