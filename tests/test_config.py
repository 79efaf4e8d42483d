"""Params validation: every bad value is named by its dotted key, before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetful.core.config import ConfigError, build, load_params
from forgetful.data.mixing import MixParams
from forgetful.data.sources import parse_task
from forgetful.evaluate.evaluator import EvalParams
from forgetful.train.trainer import parse_params
from tests.conftest import REPO, TINY_PARAMS


def test_repository_params_are_valid() -> None:
    params = load_params(REPO / "params.yaml")
    parse_params(params["train_adapter"])
    build(MixParams, params["mix_tasks"], "mix_tasks")
    build(EvalParams, params["evaluate"], "evaluate")
    for name, task in params["format_data"]["tasks"].items():
        parse_task(name, task)


def train_section(**changes: object) -> dict:
    section = dict(TINY_PARAMS["train_adapter"])
    section.update(changes)
    return section


def test_range_error_names_the_nested_key() -> None:
    bad = train_section(lora={**TINY_PARAMS["train_adapter"]["lora"], "r": -4})
    message = r"train_adapter\.lora\.r must be a positive integer, got -4"
    with pytest.raises(ConfigError, match=message):
        parse_params(bad)


def test_wrong_type_names_key_and_expected_type() -> None:
    message = r"train_adapter\.max_steps must be an integer, got 'ten'"
    with pytest.raises(ConfigError, match=message):
        parse_params(train_section(max_steps="ten"))


def test_exponents_read_as_dvc_writes_them(tmp_path) -> None:
    # `dvc exp run -S train_adapter.learning_rate=5e-5` writes 5e-05 (YAML 1.2: a number);
    # plain PyYAML would read it as text.
    (tmp_path / "params.yaml").write_text("a: 5e-05\nb: 1.0e-3\nc: 3\nd: '5e-05'\n")
    assert load_params(tmp_path / "params.yaml") == {"a": 5e-05, "b": 1e-3, "c": 3, "d": "5e-05"}


def test_numeric_text_for_a_number_gets_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"train_adapter\.learning_rate must be a number, got "
                                          r"the text '5e-5'.*write 5\.0e-05"):
        parse_params(train_section(learning_rate="5e-5"))


def test_bool_is_not_an_integer() -> None:
    with pytest.raises(ConfigError, match=r"train_adapter\.batch_size must be an integer"):
        parse_params(train_section(batch_size=True))


def test_unknown_key_lists_known_keys() -> None:
    with pytest.raises(ConfigError, match=r"train_adapter\.learning_rat is not a known key "
                                          r"\(did you mean 'learning_rate'\?\); known keys "
                                          r"are: seed, method, learning_rate"):
        parse_params(train_section(learning_rat=0.1))


def test_unknown_method_lists_methods() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'lorax' \(did you mean 'lora'\?\); "
                                          r"choose one of lora"):
        parse_params(train_section(method="lorax"))


def test_missing_key_is_named() -> None:
    section = train_section()
    del section["learning_rate"]
    with pytest.raises(ConfigError, match=r"train_adapter\.learning_rate is missing"):
        parse_params(section)


def test_literal_choices_are_listed() -> None:
    with pytest.raises(ConfigError, match=r"lr_scheduler must be one of 'linear', 'cosine'"):
        parse_params(train_section(lr_scheduler="step"))


def test_unknown_source_and_generator() -> None:
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.source must be one of builtin"):
        parse_task("t", {"source": "ftp"})
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.generator must be one of"):
        parse_task("t", {"source": "builtin", "generator": "poetry", "n_train": 1, "n_val": 1,
                         "n_test": 1})
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.format must be one of "
                                          r"prompt_completion, alpaca, messages, classification"):
        parse_task("t", {"source": "file", "path": "x.csv", "format": "sharegpt", "n_train": 1,
                         "n_val": 1, "n_test": 1})


def test_mix_weights_must_not_all_be_zero() -> None:
    with pytest.raises(ConfigError, match=r"mix_tasks\.weights must give some task a weight > 0"):
        build(MixParams, {"seed": 0, "weights": {"a": 0.0}, "total_examples": 4,
                          "val_per_task": 1}, "mix_tasks")


def test_unknown_benchmark() -> None:
    message = r"evaluate\.general_suite names unknown benchmark 'mmlu'"
    with pytest.raises(ConfigError, match=message):
        build(EvalParams, {"batch_size": 1, "max_new_tokens": 1, "max_test_examples": 0,
                           "general_suite": ["mmlu"]}, "evaluate")


def test_format_length_above_train_length_fails_when_params_load(tmp_path: Path) -> None:
    """Records formatted up to 256 tokens, trained up to 128: the mismatch used to show only
    after formatting and mixing ("31 of 600 records are longer than ...")."""
    path = tmp_path / "params.yaml"
    path.write_text("format_data: {max_length: 256}\ntrain_adapter: {max_length: 128}\n")
    with pytest.raises(ConfigError, match=r"format_data\.max_length=256 is above "
                                          r"train_adapter\.max_length=128.*set both"):
        load_params(path)
    path.write_text("format_data: {max_length: 128}\ntrain_adapter: {max_length: 128}\n")
    assert load_params(path)["train_adapter"]["max_length"] == 128


def test_threads_per_stage_from_the_environment(monkeypatch) -> None:
    """Two torch jobs on two cores slowed each other 5-10x; FORGETFUL_THREADS gives each
    stage its share (every stage applies it through run_stage)."""
    import torch

    from forgetful.core import cli

    before = torch.get_num_threads()
    seen = []
    monkeypatch.setenv("FORGETFUL_THREADS", "1")
    try:
        cli.run_stage(lambda: seen.append(torch.get_num_threads()))
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    monkeypatch.setenv("FORGETFUL_THREADS", "two")
    with pytest.raises(SystemExit) as exit_:
        cli.run_stage(lambda: None)
    assert exit_.value.code == 2
