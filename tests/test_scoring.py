"""Label masking, answer matching, and log-likelihood scoring against a direct computation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from forgetful.data.batches import IGNORE, collate, encode
from forgetful.data.metrics import contains, exact_match, final_number, numeric
from forgetful.evaluate.scoring import (
    encode_pair,
    generate,
    loglikelihoods,
    multiple_choice,
    prefix_padded_batches,
    shared_cache,
    shared_length,
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
    """acc and acc_norm from known log-likelihoods, through the packed path that
    multiple_choice takes on a model whose output layer sees its input one to one."""
    from forgetful.evaluate import packing

    model, tok = model_and_tokenizer
    # Log-likelihoods chosen so acc and acc_norm disagree: "a" wins raw, "bbbb" per character.
    fake = {"a": -3.0, "bbbb": -4.0}
    seen = []

    def grouped(m, groups, batch_size, pad_id, progress=iter):
        seen.append(groups)
        return [[fake[tok.decode(cont).strip()] for _, cont in pairs] for pairs in groups]

    monkeypatch.setattr(packing, "grouped_loglikelihoods", grouped)
    results = multiple_choice(model, tok, [{"context": "Q", "choices": ["a", "bbbb"],
                                            "answer": 1}], batch_size=2)
    assert seen, "the packed path was not taken"
    assert results == [{"acc": 0, "acc_norm": 1}]
    results = multiple_choice(model, tok, [{"context": "Q", "choices": ["a", "bbbb"],
                                            "answer": 0}], batch_size=2)
    assert results == [{"acc": 1, "acc_norm": 0}]


def test_shared_prefix_decoding_equals_plain_generate(model_and_tokenizer) -> None:
    """Prompts that begin alike (as a chat template's system prompt makes them): the
    shared tokens are run once and copied to every row, the rest padded after them; each
    answer must be what transformers' generate gives the prompt alone, unpadded."""
    model, tok = model_and_tokenizer
    system = "You are a helpful assistant. Answer in one word. "
    prompts = [system + q for q in ("What is the capital of France?", "Hi",
                                    "Name three colours please now, quickly")]
    idx, shared, batch = next(prefix_padded_batches(model, tok, prompts, batch_size=3))
    assert shared == shared_length([tok(p, add_special_tokens=False).input_ids
                                    for p in prompts]) > 5
    assert shared_cache(model, batch, shared) is not None  # the shared path is taken
    assert batch["attention_mask"][:, shared].tolist().count(0) == 2  # padded after them
    ours = generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    for prompt, answer in zip(prompts, ours, strict=True):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=6, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        assert answer == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_shared_length_leaves_every_prompt_a_token() -> None:
    assert shared_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert shared_length([[1, 2], [1, 2, 3]]) == 1  # [1, 2] keeps its last token
    assert shared_length([[5, 6, 7]]) == 2
    assert shared_length([[1], [2]]) == 0 and shared_length([[], [1]]) == 0


def test_batched_generation_equals_one_by_one(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    prompts = ["What is the capital of France?", "Hi", "Name three colours please now"]
    batched = generate(model, tok, prompts, max_new_tokens=5, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_rolling_windows_cover_every_token_once_as_lm_eval_builds_them() -> None:
    from forgetful.evaluate.scoring import rolling_windows

    tokens = list(range(100, 137))
    windows = rolling_windows(tokens, prefix=0, width=10)
    assert [t for _, pred in windows for t in pred] == tokens
    assert windows[0] == ([0, *tokens[:9]], tokens[:10])
    assert all(len(inp) <= 10 for inp, _ in windows)
    # Each window's input, shifted by one, ends with the tokens it predicts.
    stream = [0, *tokens]
    for inp, pred in windows:
        end = stream.index(pred[-1]) if pred else 0
        assert inp == stream[max(end - 10, 0):end]
    lm_utils = pytest.importorskip("lm_eval.utils")
    theirs = [lm_utils.make_disjoint_window(w) for w in
              lm_utils.get_rolling_token_windows(tokens, prefix_token=0, max_seq_len=10,
                                                 context_len=1)]
    # lm-eval trims each input to be disjoint from its prediction; the model sees the same
    # sequence: (context + prediction)[:-1].
    assert [(c + p)[:-1] for c, p in theirs] == [inp for inp, _ in windows]
    assert [p for _, p in theirs] == [p for _, p in windows]


def test_text_loglikelihood_matches_a_direct_pass_and_lm_eval_rolling(model_and_tokenizer
                                                                      ) -> None:
    from forgetful.evaluate.scoring import text_loglikelihoods

    model, tok = model_and_tokenizer
    texts = ["The cat sat on the mat and looked at the garden.",
             " ".join(["the quick brown fox jumps over the lazy dog"] * 12)]
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [prefix] + tok(texts[0], add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], dim=-1)
    direct = float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    ours = text_loglikelihoods(model, tok, texts, width=32, batch_size=4)
    assert ours[0] == (pytest.approx(direct, abs=1e-4), len(ids) - 1)
    assert ours[1][1] > 64  # the long text spans several windows
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=32)
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    theirs = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    assert [ll for ll, _ in ours] == pytest.approx(theirs, abs=1e-3)


def test_label_likelihood_picks_the_likeliest_label_word(model_and_tokenizer) -> None:
    """A classification task scored by the likelihood of its label words, each label
    tokenized apart from the prompt as in training, checked against a direct pass (the
    scorer packs a prompt and its labels into one row)."""
    from forgetful.evaluate.scoring import label_choice

    model, tok = model_and_tokenizer
    labels = ["Positive", "Negative", "Neutral", "Mixed feelings"]  # one of several tokens
    prompts = [f"<|im_start|>user\n{review}<|im_end|>\n<|im_start|>assistant\n"
               for review in ("I loved this DVD!", "Awful kettle, a waste.",
                              "The lamp came in a box.", "Best tent ever", "Meh.")]
    want, margins = [], []
    for prompt in prompts:
        ctx = tok(prompt, add_special_tokens=False).input_ids
        direct = []
        for label in labels:
            cont = tok(label, add_special_tokens=False).input_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0], dim=-1)
            direct.append(sum(float(logp[len(ctx) + i - 1, t]) for i, t in enumerate(cont)))
        want.append(max(range(len(labels)), key=direct.__getitem__))
        margins.append(sorted(direct)[-1] - sorted(direct)[-2])
    assert min(margins) > 1e-4  # no tie that float noise could flip
    got = label_choice(model, tok, [{"prompt": p, "labels": labels} for p in prompts], 2)
    assert got == want


def test_groups_that_begin_alike_share_a_tree_and_score_as_alone(model_and_tokenizer,
                                                                   monkeypatch) -> None:
    """shared_loglikelihoods puts questions with a common frame in one prefix tree: fewer
    tokens run, and every group's scores equal its own tree's (to float rounding)."""
    from forgetful.evaluate import packing

    model, tok = model_and_tokenizer
    frame = "Question: What is the capital of"
    groups = []
    for country in ("France", "Spain", "Peru", "Chad", "Iran"):
        ctx = tok(f"{frame} {country}?\nAnswer:", add_special_tokens=False).input_ids
        groups.append([(ctx, tok(f" {c}", add_special_tokens=False).input_ids)
                       for c in ("Paris", "Lima", "Madrid")])
    groups.append([(tok("Unrelated", add_special_tokens=False).input_ids,
                    tok(" words", add_special_tokens=False).input_ids)])
    alone = [packing.grouped_loglikelihoods(model, [g], 4, tok.pad_token_id)[0]
             for g in groups]
    widths = []
    real = packing.grouped_loglikelihoods

    def counting(m, trees, *args, **kwargs):
        widths.extend(len(packing.prefix_tree([c + x for c, x in t])[0]) for t in trees)
        return real(m, trees, *args, **kwargs)

    monkeypatch.setattr(packing, "grouped_loglikelihoods", counting)
    shared = packing.shared_loglikelihoods(model, groups, 4, tok.pad_token_id)
    assert len(shared) == len(groups)
    for got, want in zip(shared, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    separate = sum(len(packing.prefix_tree([c + x for c, x in g])[0]) for g in groups)
    # the frame runs once per tree, not once per question (trees hold at most ROW tokens)
    saved = (len(groups) - 1 - len(widths)) * len(tok(frame, add_special_tokens=False).input_ids)
    assert len(widths) < len(groups) and sum(widths) <= separate - saved
