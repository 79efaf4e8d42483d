"""format_data: sources, record formats, templates, splits, hygiene and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from forgetful.core.config import ConfigError, DataError
from forgetful.data.formatting import split
from forgetful.data.hygiene import contamination, deduplicate
from forgetful.data.inputs import index, verify
from forgetful.data.sources import load_conversations, parse_task
from forgetful.data.templates import render
from stages.format_data import main as format_main
from tests.conftest import write_params

ROWS = [{"q": f"Question {i}?", "a": f"answer {i}", "ctx": "" if i % 2 else f"context {i}"}
        for i in range(20)]
USER, ASSISTANT = "user", "assistant"


def convo(user: str, answer: str) -> list[dict]:
    return [{"role": USER, "content": user}, {"role": ASSISTANT, "content": answer}]


def file_task(path: Path, **extra: object):
    block = {"source": "file", "path": str(path), "n_train": 0, "n_val": 2, "n_test": 3,
             "columns": {"prompt": "q", "completion": "a", "input": "ctx"}}
    return parse_task("t", {**block, **extra})


def write_rows(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_file_formats_give_the_same_conversations(tmp_path: Path, suffix: str) -> None:
    conversations, _ = load_conversations(file_task(write_rows(tmp_path / f"d{suffix}", ROWS)))
    assert conversations[0] == convo("Question 0?\ncontext 0", "answer 0")
    assert conversations[1] == convo("Question 1?", "answer 1")  # empty input adds nothing
    assert len(conversations) == 20


def test_alpaca_format(tmp_path: Path) -> None:
    rows = [{"instruction": "Add.", "input": "2 and 3", "output": "5"},
            {"instruction": "Greet.", "input": "", "output": "Hello"}]
    task = parse_task("t", {"source": "file", "format": "alpaca", "n_train": 0, "n_val": 0,
                            "n_test": 1, "path": str(write_rows(tmp_path / "a.json", rows))})
    assert load_conversations(task)[0] == [convo("Add.\n2 and 3", "5"), convo("Greet.", "Hello")]


def test_messages_format_keeps_every_turn(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": USER, "content": "Hi"},
            {"role": ASSISTANT, "content": "Hello"}, {"role": USER, "content": "Bye"},
            {"role": ASSISTANT, "content": "Goodbye"}]
    task = parse_task("t", {"source": "file", "format": "messages", "n_train": 0, "n_val": 0,
                            "n_test": 1,
                            "path": str(write_rows(tmp_path / "c.jsonl", [{"messages": chat}]))})
    assert load_conversations(task)[0] == [chat]


@pytest.mark.parametrize("messages,error", [
    ("hello", r"column 'messages' must be a non-empty list"),
    ([{"role": "bot", "content": "x"}], r"message 0 must be \{'role': one of system, user"),
    ([{"role": "user", "content": "x"}], r"the last message must be the assistant's"),
])
def test_bad_messages_name_the_record(tmp_path: Path, messages: object, error: str) -> None:
    path = write_rows(tmp_path / "c.jsonl", [{"messages": [
        {"role": USER, "content": "a"}, {"role": ASSISTANT, "content": "b"}]},
        {"messages": messages}])
    task = parse_task("t", {"source": "file", "format": "messages", "n_train": 0, "n_val": 0,
                            "n_test": 1, "path": str(path)})
    with pytest.raises(DataError, match=r"c\.jsonl record 2 \(1-based\): " + error):
        load_conversations(task)


def test_classification_maps_labels_to_words(tmp_path: Path) -> None:
    rows = [{"label": "1", "title": "Match report", "body": "The team won."},
            {"label": "2", "title": "Stocks", "body": "Markets fell."}]
    block = {"source": "file", "format": "classification", "n_train": 0, "n_val": 0,
             "n_test": 1, "path": str(write_rows(tmp_path / "n.csv", rows)),
             "columns": {"text": "body", "label": "label", "input": "title"},
             "labels": {"1": "Sports", "2": "Business"}}
    conversations, _ = load_conversations(parse_task("t", block))
    assert conversations[0] == convo(
        "Classify this text. Answer with one of: Sports, Business.\nMatch report\nThe team won.",
        "Sports")
    write_rows(tmp_path / "n.csv", [*rows, {"label": "9", "title": "x", "body": "y"}])
    with pytest.raises(DataError, match=r"n\.csv record 3 \(1-based\): label '9' is not in "
                                        r"the task's labels"):
        load_conversations(parse_task("t", block))


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": "a", "a": "b"}\n{"q": "broken"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON line"):
        load_conversations(file_task(path))


def test_malformed_json_array_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"q": "a", "a": "b"},\n {"q": ]')
    with pytest.raises(DataError, match=r"bad\.json:2: malformed JSON \(Expecting value"):
        load_conversations(file_task(path))


def test_trailing_comma_in_a_json_array_points_at_the_comma(tmp_path: Path) -> None:
    path = tmp_path / "comma.json"
    path.write_text('[\n {"q": "a", "a": "b", "ctx": ""},\n {"q": "c", "a": "d", "ctx": ""},\n]\n')
    with pytest.raises(DataError, match=r"format_data\.tasks\.t: .*comma\.json:3: trailing "
                                        r"comma before the closing '\]' .*remove it"):
        load_conversations(file_task(path))


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_latin1_file_names_file_line_and_fix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"latin{suffix}"
    path.write_bytes({  # the second record's "cafe" with an e-acute in Latin-1 (0xe9)
        ".jsonl": b'{"q": "tea?", "a": "yes", "ctx": ""}\n'
                  b'{"q": "caf\xe9?", "a": "no", "ctx": ""}\n',
        ".json": b'[{"q": "tea?", "a": "yes", "ctx": ""},\n'
                 b' {"q": "caf\xe9?", "a": "no", "ctx": ""}]',
        ".csv": b"q,a,ctx\ntea?,yes,x\ncaf\xe9?,no,y\n"}[suffix])
    line = 3 if suffix == ".csv" else 2
    with pytest.raises(DataError, match=rf"format_data\.tasks\.t: .*latin\{suffix}:{line}: "
                                        r"not UTF-8 \(byte 0xe9 .*re-save the file as UTF-8"):
        load_conversations(file_task(path))


def test_a_missing_file_names_the_task_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"format_data\.tasks\.t: .*nope\.jsonl not found; fix "
                                        r"the task's path"):
        load_conversations(file_task(tmp_path / "nope.jsonl"))


def test_yaml_boolean_label_keys_are_caught_with_the_fix() -> None:
    labels = yaml.safe_load("labels: {yes: Positive, no: Negative}")["labels"]
    assert set(labels) == {True, False}  # what PyYAML makes of them
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.labels: the key True is a "
                                          r"YAML boolean .*quote the keys"):
        parse_task("t", {"source": "file", "path": "x.csv", "format": "classification",
                         "n_train": 0, "n_val": 1, "n_test": 1, "labels": labels})


def test_missing_column_lists_existing_columns(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", [{"question": "a", "a": "b", "ctx": ""}])
    with pytest.raises(DataError, match=r"column 'q' not found; columns are: question, a, ctx"):
        load_conversations(file_task(path))


def test_unknown_column_key_for_the_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.columns\.question is not a "
                                          r"known key; known keys are: prompt, completion"):
        file_task(tmp_path / "d.jsonl", columns={"question": "q"})


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        load_conversations(file_task(path))


def test_null_cell_names_the_record(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "d.jsonl", [{"q": "a", "a": "b", "ctx": ""},
                                             {"q": "c", "a": None, "ctx": ""}])
    with pytest.raises(DataError, match=r"d\.jsonl record 2 \(1-based\): column 'a' is "
                                        r"empty; fill it, or set invalid_records: skip on "
                                        r"this task \(or format_data\.invalid_records"):
        load_conversations(file_task(path))


def test_invalid_records_can_be_skipped_and_counted(tmp_path: Path) -> None:
    rows = [{"q": f"q{i}", "a": "" if i == 3 else f"a{i}", "ctx": ""} for i in range(10)]
    conversations, invalid = load_conversations(file_task(write_rows(tmp_path / "d.jsonl", rows)),
                                                skip_invalid=True)
    assert len(conversations) == 9
    assert len(invalid) == 1
    assert invalid[0].startswith(f"{tmp_path / 'd.jsonl'} record 4 (1-based): column 'a' is empty")


def test_hf_dataset_from_a_local_save_to_disk_folder(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "ds")
    block = {"source": "hf_dataset", "name": str(tmp_path / "ds"), "split": "train",
             "n_train": 0, "n_val": 2, "n_test": 3, "columns": {"prompt": "q", "completion": "a"}}
    conversations, _ = load_conversations(parse_task("t", block))
    assert conversations[0] == convo("Question 0?", "answer 0") and len(conversations) == 20
    with pytest.raises(DataError, match=r"no split 'test'; splits: \['train'\]"):
        load_conversations(parse_task("t", {**block, "split": "test"}))


def test_hf_hub_dataset_requires_a_pinned_revision() -> None:
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.revision must pin"):
        parse_task("t", {"source": "hf_dataset", "name": "openai/gsm8k", "n_train": 0,
                         "n_val": 1, "n_test": 1})


def test_templates(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    c = convo("Say hi.", "hi")
    assert render("plain", c, tok) == [("Say hi.\nAnswer: ", False, False), ("hi", True, True)]
    assert "### Instruction:\nSay hi.\n\n### Response:\n" in render("alpaca", c, tok)[0][0]
    expected = [("<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n", False, False),
                ("hi", True, True)]
    assert render("chat", c, tok) == expected == render("chatml", c, tok)
    with pytest.raises(DataError, match=r"template 'plain' is single-turn"):
        render("plain", [*c, *convo("Again.", "hi")], tok)
    tok.chat_template = None
    with pytest.raises(ConfigError, match=r"tokenizer has no chat template; choose one of plain"):
        render("chat", c, tok)


def test_splits_are_disjoint_and_seeded(tmp_path: Path) -> None:
    task = parse_task("t", {"source": "file", "path": "x.csv", "n_train": 0, "n_val": 5,
                            "n_test": 10})
    items = list(range(50))
    splits = split(items, task.spec, seed=3, task="t")
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == items
    assert [len(splits[s]) for s in ("train", "val", "test")] == [35, 5, 10]
    assert split(items, task.spec, seed=3, task="t") == splits
    assert split(items, task.spec, seed=4, task="t") != splits
    with pytest.raises(DataError, match=r"task 't' has 12 distinct training-part examples "
                                        r"but its splits need at least 16 \(n_test \+ n_val"):
        split(items[:12], task.spec, seed=0, task="t")


def test_builtin_splits_take_the_test_split_from_the_heldout_part() -> None:
    task = parse_task("t", {"source": "builtin", "generator": "reading", "n_train": 20,
                            "n_val": 5, "n_test": 10, "n_in_template": 8})
    seen, heldout = list(range(100)), list(range(1000, 1030))
    splits = split(seen, task.spec, seed=3, task="t", heldout=heldout)
    assert {len(v) for v in splits.values()} >= {20, 5, 10, 8}
    assert set(splits["test"]) <= set(heldout) and len(set(splits["test"])) == 10
    used = splits["train"] + splits["val"] + splits["test_in_template"]
    assert set(used) <= set(seen) and len(set(used)) == len(used) == 33
    with pytest.raises(DataError, match=r"30 held-out examples but n_test is 40"):
        split(seen, build_spec(task, n_test=40), seed=3, task="t", heldout=heldout)
    with pytest.raises(DataError, match=r"\(n_in_template \+ n_val \+ n_train\)"):
        split(seen[:30], task.spec, seed=3, task="t", heldout=heldout)


def build_spec(task, **changes):
    import dataclasses

    return dataclasses.replace(task.spec, **changes)


@pytest.mark.parametrize("generator", ["sentiment", "reading", "arithmetic"])
def test_heldout_part_shares_no_frame_name_or_noun_with_training(generator: str) -> None:
    import re

    from forgetful.data.builtin_tasks import ARITHMETIC, GENERATORS, READING, SENTIMENT

    def words(text: str) -> list[str]:
        # the task's fixed instruction is not a sentence frame: sentiment's wrapper goes
        text = text.removeprefix("Classify this review: ").removesuffix("\nSentiment:")
        return re.findall(r"\w+", text.lower())

    def grams(pairs: list, n: int = 4) -> set:
        return {tuple(w[i : i + n]) for p, _ in pairs for w in [words(p)]
                for i in range(len(w) - n + 1)}

    parts = GENERATORS[generator][0]()
    assert len(parts.heldout) >= 60 and len(parts.seen) >= 300
    assert not grams(parts.seen) & grams(parts.heldout)  # no frame in common
    assert not {p for p, _ in parts.seen} & {p for p, _ in parts.heldout}
    tables = {"sentiment": (SENTIMENT, ["items"]), "reading": (READING, ["names", "animals"]),
              "arithmetic": (ARITHMETIC, ["people", "things"])}[generator]
    seen_words = {w for p, _ in parts.seen for w in words(p)}
    for key in tables[1]:
        for filler in tables[0]["heldout"][key]:  # no held-out name or noun in training
            assert not set(filler.lower().split()) <= seen_words, filler
        assert not set(tables[0]["seen"][key]) & set(tables[0]["heldout"][key])


def test_deduplicate_counts_exact_and_near_duplicates() -> None:
    base = ("The quick brown fox jumps over the lazy dog near the river bank today while the "
            "farmer counts his sheep in the green field behind the old stone barn at dawn")
    conversations = [convo(base, "yes"), convo(base.upper() + "!", "yes"),  # exact (normalized)
                     convo(base + " again", "yes"),  # near: one extra word
                     convo("Something else entirely about cooking pasta at home", "no")]
    kept, exact, near = deduplicate(conversations, n=3, threshold=0.8)
    assert (exact, near) == (1, 1)
    assert kept == [conversations[0], conversations[3]]


def test_contamination_flags_overlapping_items_only() -> None:
    train = ["What is the capital of France? Paris is the capital.",
             "Tom has 3 apples and gets 5 more. How many apples does Tom have now? 8",
             "How do you start a fire? Strike a match and light the kindling."]
    report = contamination(train, {  # items: the question with its gold answer
        "general": ["What is the capital of France? Paris", "What is the capital of Peru? Lima"],
        "task": ["Tom has 3 apples and gets 5 more. How many apples does Tom have now? 8",
                 "Anna has 9 shells and gives away 2. How many shells does Anna have left? 7"],
        # PIQA-like short items: one common word, or a question seen with another answer
        "short": ["fire", "How do you start a fire? Rub two wet stones."],
    }, n=13, item_threshold=0.8)
    assert report["general"]["contaminated"] == 1 and report["general"]["share"] == 0.5
    assert report["general"]["examples"] == [
        "What is the capital of France? Paris (matched: 'what is the capital of france paris')"]
    assert report["task"]["contaminated"] == 1
    assert report["task"]["examples"][0].startswith("Tom has 3 apples and gets 5 more.")
    assert "(matched: '" in report["task"]["examples"][0]
    assert report["short"]["contaminated"] == 0


def test_format_data_stage_records_and_metrics(tmp_path: Path, tiny_model: Path,
                                               tiny_params: dict) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_params)
    out = tmp_path / "formatted" / "sentiment"
    format_main("sentiment", tiny_model, out, tmp_path / "m.json", params)
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(train) == 60
    assert train[0]["prompt"].startswith("<|im_start|>user\nClassify this review:")
    assert train[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert train[0]["completion"] in {"Positive", "Negative", "Neutral"}
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["examples"] == {"test_in_template": 0, "val": 8, "train": 60, "test": 12}
    assert 0 < metrics["supervised_token_share"] < 0.5
    info = json.loads((out / "run_info.json").read_text())
    assert info["template"]["name"] == "chat"
    assert info["source"]["generator"] == "sentiment" and info["metric"] == "label_likelihood"
    # The test split is held out: none of its prompts' reviews is a training review.
    test = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert not {r["instruction"] for r in test} & {r["instruction"] for r in train}
    assert not any("kettle" in r["instruction"] for r in train)


def test_format_data_removes_duplicates_and_handles_overlong(
    tmp_path: Path, tiny_model: Path, tiny_params: dict
) -> None:
    long_prompt = "word " * 200
    rows = ([{"prompt": f"Short question number {i} about the weather?", "completion": "ok"}
             for i in range(30)] + [{"prompt": "Short question number 1 about the weather?",
                                     "completion": "ok"}] * 3
            + [{"prompt": f"{long_prompt} {i}", "completion": "long"} for i in range(2)])
    path = write_rows(tmp_path / "data.jsonl", rows)
    tiny_params["format_data"]["tasks"] = {"t": {"source": "file", "path": str(path),
                                                 "n_train": 0, "n_val": 2, "n_test": 4}}
    tiny_params["format_data"].update(max_length=64, overlong="truncate")
    params = write_params(tmp_path / "params.yaml", tiny_params)
    format_main("t", tiny_model, tmp_path / "out", tmp_path / "m.json", params)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["exact_duplicates"] == 3 and metrics["truncated"] == 2
    assert sum(metrics["examples"].values()) == 32 and metrics["dropped_overlong"] == 0

    tiny_params["format_data"].update(overlong="drop", max_skipped_share=0.0)
    params = write_params(tmp_path / "params.yaml", tiny_params)
    with pytest.raises(DataError, match=r"records are over format_data\.max_length=64 tokens"):
        format_main("t", tiny_model, tmp_path / "out2", tmp_path / "m2.json", params)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "m2.json").exists()


def test_format_data_fails_when_too_many_records_are_invalid(
    tmp_path: Path, tiny_model: Path, tiny_params: dict
) -> None:
    rows = [{"prompt": f"question {i}", "completion": "" if i % 4 == 0 else "ok"}
            for i in range(40)]
    path = write_rows(tmp_path / "d.jsonl", rows)
    tiny_params["format_data"]["tasks"] = {"t": {"source": "file", "path": str(path),
                                                 "n_train": 0, "n_val": 2, "n_test": 4}}
    tiny_params["format_data"].update(invalid_records="skip", max_skipped_share=0.3)
    format_main("t", tiny_model, tmp_path / "ok", tmp_path / "m.json",
                write_params(tmp_path / "p.yaml", tiny_params))
    assert json.loads((tmp_path / "m.json").read_text())["invalid_records"] == 10
    tiny_params["format_data"]["max_skipped_share"] = 0.2
    with pytest.raises(DataError, match=r"task 't': 10 of 40 records are invalid .*the first: "
                                        r".*d\.jsonl record 1 \(1-based\): column "
                                        r"'completion' is empty"):
        format_main("t", tiny_model, tmp_path / "bad", tmp_path / "m2.json",
                    write_params(tmp_path / "p.yaml", tiny_params))
    assert not (tmp_path / "bad").exists()


def test_dropped_overlong_records_are_said_on_the_console(tmp_path: Path, tiny_model: Path,
                                                          tiny_params: dict, capsys) -> None:
    rows = [{"prompt": f"Short question number {i} about the weather?", "completion": "ok"}
            for i in range(40)] + [{"prompt": "word " * 300, "completion": "long"}]
    path = write_rows(tmp_path / "data.jsonl", rows)
    tiny_params["format_data"]["tasks"] = {"t": {"source": "file", "path": str(path),
                                                 "n_train": 0, "n_val": 2, "n_test": 4}}
    tiny_params["format_data"].update(max_length=64, overlong="drop", max_skipped_share=0.5)
    params = write_params(tmp_path / "params.yaml", tiny_params)
    format_main("t", tiny_model, tmp_path / "out", tmp_path / "m.json", params)
    out = capsys.readouterr().out
    assert re.search(r"format_data: t: dropped 1 records longer than format_data\.max_length=64 "
                     r"tokens \(the longest: \d{3} tokens\); raise max_length, or set overlong: "
                     r"truncate", out), out


def test_a_bad_benchmark_file_fails_before_any_model_loads(tmp_path: Path,
                                                          tiny_params: dict) -> None:
    from stages import evaluate, mix_tasks

    bench = tmp_path / "mc.jsonl"
    bench.write_text('{"question": "2+2?", "choices": ["3", "4"], "answer": 1}\n'
                     '{"question": "1+1?", "choices": ["2", "3"], "answer": 5}\n')
    tiny_params["evaluate"]["files"] = {"mine": {"format": "mc_jsonl", "path": str(bench)}}
    params = write_params(tmp_path / "params.yaml", tiny_params)
    nowhere = tmp_path / "no-model"  # never reached: the file is checked first
    with pytest.raises(DataError, match=r"mc\.jsonl:2: answer 5 is not an index"):
        evaluate.main("base", nowhere, tmp_path / "formatted", tmp_path / "s.json",
                      tmp_path / "p.jsonl", tmp_path / "x.jsonl", params)
    formatted = tmp_path / "formatted"
    formatted.mkdir()
    with pytest.raises(DataError, match=r"mc\.jsonl:2: answer 5 is not an index"):
        mix_tasks.main(formatted, nowhere, tmp_path / "mixed", tmp_path / "mix.json", params)


def test_self_distill_source_is_the_base_models_own_answers() -> None:
    """Replay data that needs no download: built-in open instructions, answered by the
    model format_data passes in (here a fake); empty answers are left out and counted."""
    from forgetful.data.builtin_tasks import replay_prompts
    from forgetful.data.sources import load_conversations, parse_task

    task = parse_task("replay", {"source": "self_distill", "n_train": 10, "n_val": 2,
                                 "n_test": 0})
    calls = []

    def answer(prompts: list[str], tokens: int, batch: int) -> list[str]:
        calls.append((prompts, tokens, batch))
        return ["" if i == 0 else f"answer {i}" for i in range(len(prompts))]

    conversations, empty = load_conversations(task, answer=answer)
    assert calls == [(replay_prompts(), 48, 16)] and len(replay_prompts()) == 300
    assert empty == ["prompt 1: the base model's answer is empty"]
    assert len(conversations) == 299
    assert conversations[0] == [{"role": "user", "content": replay_prompts()[1]},
                                {"role": "assistant", "content": "answer 1"}]
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.replay\.evaluate must be false"):
        parse_task("replay", {"source": "self_distill", "n_train": 10, "n_val": 2,
                              "n_test": 5, "evaluate": True})
    with pytest.raises(DataError, match=r"format_data\.tasks\.replay: source self_distill "
                                        r"needs the base model"):
        load_conversations(task)


def test_invalid_records_is_settable_per_task(tmp_path: Path, tiny_model: Path,
                                              tiny_params: dict) -> None:
    """Two empty outputs in one real dataset: skipping them is that task's setting, so
    the other tasks' format_data stages (and their params) stay as they were."""
    rows = [{"prompt": f"question {i}", "completion": "" if i in (5, 17) else "ok"}
            for i in range(40)]
    path = write_rows(tmp_path / "d.jsonl", rows)
    block = {"source": "file", "path": str(path), "n_train": 0, "n_val": 2, "n_test": 4}
    tiny_params["format_data"].update(invalid_records="fail", tasks={"t": block})
    with pytest.raises(DataError, match=r"record 6 \(1-based\): column 'completion' is empty"):
        format_main("t", tiny_model, tmp_path / "bad", tmp_path / "m.json",
                    write_params(tmp_path / "p.yaml", tiny_params))
    tiny_params["format_data"]["tasks"]["t"]["invalid_records"] = "skip"
    format_main("t", tiny_model, tmp_path / "ok", tmp_path / "m.json",
                write_params(tmp_path / "p.yaml", tiny_params))
    assert json.loads((tmp_path / "m.json").read_text())["invalid_records"] == 2
    with pytest.raises(ConfigError, match=r"format_data\.tasks\.t\.invalid_records must be "
                                          r"fail or skip"):
        parse_task("t", {**block, "invalid_records": "drop"})


def test_each_reader_is_indexed_with_only_its_own_files(tmp_path: Path) -> None:
    raw = tmp_path / "data/raw"
    (raw / "lm_eval").mkdir(parents=True)
    (raw / "mine.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    (raw / "bench.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    (raw / "lm_eval/task.yaml").write_text("task: mine\n")
    (raw / "unread.txt").write_text("no stage reads this\n")
    params = {"format_data": {"tasks": {
        "mine": {"source": "file", "path": "data/raw/mine.jsonl"},
        "sentiment": {"source": "builtin", "generator": "sentiment"}}},
        "evaluate": {"files": {"bench": {"format": "mc_jsonl", "path": "data/raw/bench.jsonl"}},
                     "lm_eval_include": "data/raw/lm_eval"}}
    readers = index(params, tmp_path)
    assert set(readers) == {"format/mine", "format/sentiment", "evaluate"}
    assert readers["format/sentiment"] == []  # a built-in task reads no file: never re-run by one
    assert [e["path"] for e in readers["format/mine"]] == ["data/raw/mine.jsonl"]
    assert [(e["key"], e["path"]) for e in readers["evaluate"]] == [
        ("evaluate.files.bench.path", "data/raw/bench.jsonl"),
        ("evaluate.lm_eval_include", "data/raw/lm_eval/task.yaml")]
    before = readers["format/mine"][0]["sha256"]
    (raw / "mine.jsonl").write_text('{"instruction": "q", "output": "b"}\n')
    assert index(params, tmp_path)["format/mine"][0]["sha256"] != before
    assert index(params, tmp_path)["evaluate"] == readers["evaluate"]

    params["format_data"]["tasks"]["gone"] = {"source": "file", "path": "data/raw/gone.csv"}
    with pytest.raises(DataError, match=r"format_data.tasks.gone.path: data/raw/gone.csv not"):
        index(params, tmp_path)


def test_a_file_edited_after_indexing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("one\n")
    params = {"format_data": {"tasks": {"t": {"source": "file", "path": "data.jsonl"}}}}
    (tmp_path / "t.json").write_text(json.dumps(index(params, tmp_path)["format/t"]))
    verify(tmp_path / "t.json", tmp_path)  # unchanged: fine
    (tmp_path / "data.jsonl").write_text("two\n")
    with pytest.raises(DataError, match=r"data.jsonl \(format_data.tasks.t.path\) changed "
                                        r"after index_inputs.*dvc repro"):
        verify(tmp_path / "t.json", tmp_path)
