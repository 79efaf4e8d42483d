"""Loss masking: exactly the assistant answers and their end-of-turn token carry labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetful.data.batches import IGNORE, encode
from stages.format_data import main as format_main
from tests.conftest import write_params

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 plus 3?"},
        {"role": "assistant", "content": "6"}]
ROWS = {
    "prompt_completion": ({"prompt": "Name a colour.", "completion": "Blue"}, {}),
    "alpaca": ({"instruction": "Add.", "input": "2 and 3", "output": "5"}, {}),
    "classification": ({"text": "I loved it", "label": "pos"},
                       {"labels": {"pos": "Positive", "neg": "Negative"}}),
    "messages": ({"messages": CHAT}, {}),
}


def supervised(enc: dict) -> list[int]:
    return [t for t in enc["labels"] if t != IGNORE]


def format_one(tmp_path: Path, tiny_model: Path, tiny_params: dict, fmt: str,
               template: str = "chat", **extra: object) -> list[dict]:
    row, options = ROWS[fmt]
    path = tmp_path / f"{fmt}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for _ in range(1)))
    tiny_params["format_data"]["template"] = template
    tiny_params["format_data"]["dedup"] = {"near_threshold": 1.0}
    tiny_params["format_data"]["max_length"] = 512
    tiny_params["train_adapter"]["max_length"] = 512
    tiny_params["format_data"]["tasks"] = {"t": {
        "source": "file", "format": fmt, "path": str(path), "n_train": 0, "n_val": 0,
        "n_test": 0, "evaluate": False, **options, **extra}}
    pfile = write_params(tmp_path / "params.yaml", tiny_params)
    format_main("t", tiny_model, tmp_path / "out", tmp_path / "m.json", pfile)
    return [json.loads(x) for x in (tmp_path / "out/train.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fmt,answer", [("prompt_completion", "Blue"), ("alpaca", "5"),
                                        ("classification", "Positive")])
@pytest.mark.parametrize("template", ["chat", "plain", "alpaca"])
def test_single_turn_formats_label_only_the_answer(tmp_path: Path, tiny_model: Path,
                                                   tiny_params: dict, fmt: str, answer: str,
                                                   template: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    (record,) = format_one(tmp_path, tiny_model, tiny_params, fmt, template)
    enc = encode(record, tok)
    answer_ids = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert supervised(enc) == answer_ids
    assert enc["input_ids"][-len(answer_ids):] == answer_ids
    assert tok.decode(enc["input_ids"][: -len(answer_ids)]) == record["prompt"]


@pytest.mark.parametrize("train_turns,answers", [("all", ["4", "6"]), ("last", ["6"])])
def test_multi_turn_chat_labels_assistant_turns(tmp_path: Path, tiny_model: Path,
                                                tiny_params: dict, train_turns: str,
                                                answers: list[str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    (record,) = format_one(tmp_path, tiny_model, tiny_params, "messages",
                           train_turns=train_turns)
    enc = encode(record, tok)
    want = [t for a in answers for t in tok(a, add_special_tokens=False).input_ids
            + [tok.eos_token_id]]
    assert supervised(enc) == want
    # The whole sequence is exactly the chat template's rendering of the conversation.
    full = tok.apply_chat_template(CHAT, tokenize=False)
    assert tok.decode(enc["input_ids"]) == full.rstrip("\n")
    # The evaluation prompt is the conversation up to the last answer, ready to generate.
    assert record["prompt"] == tok.apply_chat_template(CHAT[:-1], tokenize=False,
                                                       add_generation_prompt=True)
    assert record["completion"] == "6"
