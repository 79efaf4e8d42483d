"""Label masking, answer matching, and log-likelihood scoring against a direct computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stages.common.batches import IGNORE, collate, encode
from stages.common.scoring import (
    contains,
    encode_pair,
    exact_match,
    final_number,
    generate,
    loglikelihoods,
    multiple_choice,
    numeric,
)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model).eval(),
            AutoTokenizer.from_pretrained(tiny_model))


def test_only_completion_and_eos_carry_labels(model_and_tokenizer) -> None:
    _, tok = model_and_tokenizer
    record = {"prompt": "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n",
              "completion": "4"}
    enc = encode(record, tok)
    n_prompt = len(tok(record["prompt"], add_special_tokens=False).input_ids)
    completion = tok("4", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert enc["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert enc["labels"][n_prompt:] == completion
    assert enc["input_ids"][n_prompt:] == completion
    batch = collate([enc, encode({"prompt": "x", "completion": "y"}, tok)], pad_id=0)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


@pytest.mark.parametrize("pred,answer,want", [
    ("Positive", "Positive", True), ("positive.", "Positive", True),
    ("Positive\nmore text", "Positive", True), ("The review is positive", "Positive", False),
])
def test_exact_match(pred: str, answer: str, want: bool) -> None:
    assert exact_match(pred, answer) is want


def test_contains_needs_whole_words() -> None:
    assert contains("The cat is Charlie.", "Charlie")
    assert not contains("Charlies", "Charlie")
    assert not contains("line one\nCharlie", "Charlie")


def test_numeric_takes_the_first_number() -> None:
    assert numeric("19", "19") and numeric("It is 1,200 apples", "1200")
    assert not numeric("12 + 7 = 19", "19") and not numeric("nineteen", "19")


def test_final_number_follows_gsm8k() -> None:
    target = "Natalia sold 48/2 = 24 clips in May.\nIn total 48+24 = 72 clips.\n#### 72"
    assert final_number("She sold 24 in May, so 72 in all.", target)
    assert final_number("#### 1,072", "#### 1072")
    assert not final_number("The answer is 72 or 73", target)


def test_encode_pair_moves_trailing_space_to_continuation(model_and_tokenizer) -> None:
    _, tok = model_and_tokenizer
    ctx, cont = encode_pair(tok, "Question: hot?\nAnswer: ", "cold")
    assert ctx == tok("Question: hot?\nAnswer:", add_special_tokens=False).input_ids
    assert tok.decode(cont) == " cold"


def test_loglikelihood_matches_a_direct_computation(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    pairs = [("Question: What is the capital of France?\nAnswer:", " Paris"),
             ("Hi", " there friend"), ("Question: opposite of up?\nAnswer:", " down")]
    got = loglikelihoods(model, tok, pairs, batch_size=2)
    for (context, continuation), score in zip(pairs, got, strict=True):
        ctx = tok(context, add_special_tokens=False).input_ids
        whole = tok(context + continuation, add_special_tokens=False).input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
        want = sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole)))
        assert score == pytest.approx(want, abs=1e-4)


def test_multiple_choice_acc_and_acc_norm(model_and_tokenizer, monkeypatch) -> None:
    model, tok = model_and_tokenizer
    # Log-likelihoods chosen so acc and acc_norm disagree: "a" wins raw, "bbbb" per character.
    fake = {" a": -3.0, " bbbb": -4.0}
    monkeypatch.setattr("stages.common.scoring.loglikelihoods",
                        lambda m, t, pairs, b: [fake[c] for _, c in pairs])
    results = multiple_choice(model, tok, [{"context": "Q", "choices": ["a", "bbbb"],
                                            "answer": 1}], batch_size=2)
    assert results == [{"acc": 0, "acc_norm": 1}]


def test_batched_generation_equals_one_by_one(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    prompts = ["What is the capital of France?", "Hi", "Name three colours please now"]
    batched = generate(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single
