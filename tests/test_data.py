"""format_data and mix_tasks: sources, splits, bad input, mixture composition."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from stages.common.config import ConfigError, DataError, build
from stages.common.sources import Columns, FileSource, load_pairs, parse_task
from stages.common.templates import render
from stages.format_data import main as format_main
from stages.format_data import split_pairs
from stages.mix_tasks import MixParams, allocate, mix
from tests.conftest import write_params

ROWS = [{"q": f"Question {i}?", "a": f"answer {i}", "ctx": "" if i % 2 else f"context {i}"}
        for i in range(20)]


def file_task(path: Path, **extra: object) -> FileSource:
    return parse_task("t", {"source": "file", "path": str(path), "n_train": 0, "n_val": 2,
                            "n_test": 3, "columns": {"prompt": "q", "completion": "a",
                                                     "input": "ctx"}, **extra})


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_file_formats_give_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    pairs = load_pairs(file_task(path))
    assert pairs[0] == ("Question 0?\ncontext 0", "answer 0")
    assert pairs[1] == ("Question 1?", "answer 1")  # empty input column adds nothing
    assert len(pairs) == 20


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": "a", "a": "b"}\n{"q": "broken"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON line"):
        load_pairs(file_task(path))


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a", "a": "b"}\n')
    with pytest.raises(DataError, match=r"column 'q' not found; columns are: question, a"):
        load_pairs(file_task(path))


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        load_pairs(file_task(path))


def test_null_cell_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "a", "a": "b", "ctx": ""}\n{"q": "c", "a": null, "ctx": ""}\n')
    with pytest.raises(DataError, match=r"d\.jsonl record 2: column 'a' is empty"):
        load_pairs(file_task(path))


def test_splits_are_disjoint_deduplicated_and_seeded() -> None:
    pairs = [(f"p{i}", "a") for i in range(50)] + [("p1", "a"), ("p2", "other answer")]
    sizes = build(FileSource, {"path": "x.csv", "n_train": 0, "n_val": 5, "n_test": 10}, "t")
    splits = split_pairs(pairs, sizes, seed=3, task="t")
    prompts = [p for s in splits.values() for p, _ in s]
    assert len(prompts) == len(set(prompts)) == 50
    assert [len(splits[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    assert split_pairs(pairs, sizes, seed=3, task="t") == splits
    assert split_pairs(pairs, sizes, seed=4, task="t") != splits


def test_too_few_examples_names_the_task() -> None:
    sizes = build(FileSource, {"path": "x.csv", "n_train": 10, "n_val": 5, "n_test": 10}, "t")
    with pytest.raises(DataError, match=r"task 'small' has 3 distinct examples"):
        split_pairs([("a", "1"), ("b", "2"), ("c", "3")], sizes, seed=0, task="small")


def test_format_data_keeps_prompt_and_completion_apart(
    tmp_path: Path, tiny_model: Path, tiny_params: dict
) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_params)
    out = tmp_path / "formatted" / "sentiment"
    format_main("sentiment", tiny_model, out, params)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(train) == 60
    record = train[0]
    assert record["prompt"].startswith("<|im_start|>user\nClassify this review:")
    assert record["prompt"].endswith("<|im_start|>assistant\n")
    assert record["completion"] in {"Positive", "Negative", "Neutral"}
    assert record["metric"] == "exact_match"
    info = json.loads((out / "run_info.json").read_text())
    assert info["counts"] == {"train": 60, "val": 8, "test": 12}
    assert info["template"]["name"] == "chat"


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate({"a": 1.0, "b": 1.0, "c": 0.0}, 10) == {"a": 5, "b": 5}
    counts = allocate({"a": 2.0, "b": 1.0}, 100)
    assert counts == {"a": 67, "b": 33} and sum(counts.values()) == 100


def test_mix_upsamples_short_tasks_and_reports_composition() -> None:
    train = {"a": [{"task": "a", "i": i} for i in range(10)],
             "b": [{"task": "b", "i": i} for i in range(100)]}
    val = {"a": [{"task": "a"}] * 3, "b": [{"task": "b"}] * 3}
    p = build(MixParams, {"seed": 0, "weights": {"a": 3.0, "b": 1.0}, "total_examples": 40,
                          "val_per_task": 2}, "mix_tasks")
    mixed, mixed_val, summary = mix(train, val, p, count_tokens=lambda r: 2)
    assert Counter(r["task"] for r in mixed) == {"a": 30, "b": 10}
    # a has 10 examples for 30 slots: every one used exactly 3 times
    assert set(Counter(r["i"] for r in mixed if r["task"] == "a").values()) == {3}
    assert summary["tasks"]["a"]["effective_epochs"] == 3.0
    assert summary["tasks"]["a"]["tokens"] == 60
    assert summary["tasks"]["b"]["share"] == 0.25
    assert len(mixed_val) == 4
    again, _, _ = mix(train, val, p, count_tokens=lambda r: 2)
    assert again == mixed


def test_columns_defaults() -> None:
    assert Columns() == Columns(prompt="prompt", completion="completion", input="")


def test_hf_dataset_from_a_local_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "ds")
    spec = parse_task("t", {"source": "hf_dataset", "name": str(tmp_path / "ds"), "split": "train",
                            "n_train": 0, "n_val": 2, "n_test": 3,
                            "columns": {"prompt": "q", "completion": "a"}})
    pairs = load_pairs(spec)
    assert pairs[0] == ("Question 0?", "answer 0") and len(pairs) == 20
    missing = parse_task("t", {"source": "hf_dataset", "name": str(tmp_path / "ds"),
                               "split": "test", "n_train": 0, "n_val": 2, "n_test": 3})
    with pytest.raises(DataError, match=r"no split 'test'; splits: \['train'\]"):
        load_pairs(missing)


def test_hf_hub_dataset_requires_a_pinned_revision() -> None:
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.revision must pin"):
        parse_task("t", {"source": "hf_dataset", "name": "openai/gsm8k", "n_train": 0,
                         "n_val": 1, "n_test": 1})


def test_named_and_chat_templates(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert render("plain", "Say hi.", tok) == "Say hi.\nAnswer: "
    assert "### Instruction:\nSay hi.\n\n### Response:\n" in render("alpaca", "Say hi.", tok)
    assert render("chat", "Say hi.", tok) == "<|im_start|>user\nSay hi.<|im_end|>\n" \
                                             "<|im_start|>assistant\n"
    tok.chat_template = None
    with pytest.raises(ConfigError, match=r"tokenizer has no chat template; choose one of plain"):
        render("chat", "Say hi.", tok)
