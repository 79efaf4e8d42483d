"""Preference tuning: the preference format, the DPO loss against TRL's DPOTrainer, training
with objective dpo, and preference accuracy at evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetful.core.config import ConfigError, DataError
from forgetful.data.sources import load_conversations, metric_of, parse_task
from tests.test_data import write_rows

USER, ASSISTANT = "user", "assistant"


def pref_task(path: Path, **extra: object):
    return parse_task("p", {"source": "file", "format": "preference", "path": str(path),
                            "n_train": 0, "n_val": 0, "n_test": 1, **extra})


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_preference_text_columns(tmp_path: Path, suffix: str) -> None:
    rows = [{"q": "Capital of France?", "good": "Paris", "bad": "Rome"},
            {"q": "2+2?", "good": "4", "bad": "5"}]
    task = pref_task(write_rows(tmp_path / f"p{suffix}", rows),
                     columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    got, _ = load_conversations(task)
    assert got[0] == [{"role": USER, "content": "Capital of France?"},
                      {"role": ASSISTANT, "content": "Paris", "rejected": "Rome"}]
    assert metric_of(task) == "preference"


def test_preference_chat_layouts(tmp_path: Path) -> None:
    # HH-RLHF: whole conversations in chosen and rejected, no prompt column
    hh = [{"chosen": [{"role": USER, "content": "Hi"}, {"role": ASSISTANT, "content": "Hello!"}],
           "rejected": [{"role": USER, "content": "Hi"}, {"role": ASSISTANT, "content": "Go."}]}]
    got, _ = load_conversations(pref_task(write_rows(tmp_path / "hh.jsonl", hh),
                                          columns={"prompt": ""}))
    assert got[0] == [{"role": USER, "content": "Hi"},
                      {"role": ASSISTANT, "content": "Hello!", "rejected": "Go."}]
    # TRL's conversational layout: a prompt of messages, one-message answers
    trl = [{"prompt": [{"role": "system", "content": "Be kind."}, {"role": USER, "content": "Hi"}],
            "chosen": [{"role": ASSISTANT, "content": "Hello!"}],
            "rejected": [{"role": ASSISTANT, "content": "Go."}]}]
    got, _ = load_conversations(pref_task(write_rows(tmp_path / "trl.jsonl", trl)))
    assert got[0][0] == {"role": "system", "content": "Be kind."}
    assert got[0][-1] == {"role": ASSISTANT, "content": "Hello!", "rejected": "Go."}


@pytest.mark.parametrize("row,error", [
    ({"prompt": "Q?", "chosen": "A", "rejected": "A"}, "the chosen and the rejected answer are "
                                                       "the same text"),
    ({"prompt": "Q?", "chosen": "A", "rejected": ""}, "column 'rejected' is empty"),
    ({"prompt": "Q?", "chosen": "", "rejected": "B"}, "column 'chosen' is empty"),
    ({"prompt": "Q?", "chosen": "A", "rejected": None}, r"column 'rejected' \(the rejected "
                                                        "answer\\) is missing"),
    ({"prompt": "", "chosen": [{"role": USER, "content": "x"}, {"role": ASSISTANT,
                                                                 "content": "a"}],
      "rejected": [{"role": USER, "content": "y"}, {"role": ASSISTANT, "content": "b"}]},
     "different conversations before their answers"),
])
def test_bad_pairs_name_the_record_and_the_fix(tmp_path: Path, row: dict, error: str) -> None:
    good = {"prompt": "Fine?", "chosen": "Yes", "rejected": "No"}
    if isinstance(row["chosen"], list):
        good = {"prompt": "", "chosen": [{"role": USER, "content": "Fine?"},
                                         {"role": ASSISTANT, "content": "Yes"}],
                "rejected": [{"role": USER, "content": "Fine?"},
                             {"role": ASSISTANT, "content": "No"}]}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    task = pref_task(path)
    with pytest.raises(DataError, match=r"p\.jsonl record 2 \(1-based\): .*" + error):
        load_conversations(task)
    kept, skipped = load_conversations(task, skip_invalid=True)
    assert len(kept) == 1 and len(skipped) == 1


PAIRS = [{"prompt": "Classify: great film\nSentiment:", "chosen": " Positive",
          "rejected": " Negative"},
         {"prompt": "What is the capital of France?", "chosen": " Paris",
          "rejected": " London is it"},
         {"prompt": "Opposite of hot?", "chosen": " cold", "rejected": " warm"},
         {"prompt": "2+2=", "chosen": " 4", "rejected": " five"}]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_loss_and_gradients_equal_trls(tiny_model: Path, loss_type: str) -> None:
    """TRL's DPOTrainer and ours on the same batch, the same policy (a LoRA adapter with
    non-zero B, so it differs from its reference) and the same reference (the adapter
    disabled): equal loss and equal gradients."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from forgetful.train.preference import dpo_loss, pair_loss, sequence_logps

    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = DPOConfig(output_dir=str(tiny_model.parent / "trl"), per_device_train_batch_size=4,
                     beta=0.1, loss_type=[loss_type], report_to="none", use_cpu=True,
                     max_steps=1, remove_unused_columns=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=tok,
                         peft_config=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                target_modules=["q_proj", "v_proj"]))
    policy = trainer.model
    torch.manual_seed(1)
    for name, weight in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    policy.train()

    def grads(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        policy.zero_grad()
        loss.backward()
        return {n: w.grad.clone() for n, w in policy.named_parameters() if w.requires_grad}

    theirs = trainer.compute_loss(policy, batch)
    g_theirs = grads(theirs)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    ours, _ = pair_loss(policy, {"input_ids": batch["input_ids"],
                                 "attention_mask": batch["attention_mask"],
                                 "labels": labels}, 0.1, loss_type)
    g_ours = grads(ours)
    assert theirs.item() != pytest.approx(0.6931, abs=1e-3)  # the policy is not the reference
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    for name, g in g_theirs.items():
        torch.testing.assert_close(g_ours[name], g, rtol=1e-4, atol=1e-5)
    # the pieces: summed answer log-probs, then the loss
    with torch.no_grad():
        logps, n = sequence_logps(policy(input_ids=batch["input_ids"],
                                         attention_mask=batch["attention_mask"]).logits, labels)
    assert n.tolist() == (batch["completion_mask"][:, 1:].sum(1)).tolist()
    c, r = logps.chunk(2)
    assert dpo_loss(c, r, c, r, 0.1).item() == pytest.approx(0.6931, abs=1e-4)  # log 2


def test_unknown_loss_and_bad_beta_are_refused() -> None:
    import torch

    from forgetful.train.preference import dpo_loss
    from forgetful.train.trainer import DPOParams

    x = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown DPO loss 'hinge'"):
        dpo_loss(x, x, x, x, 0.1, "hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOParams(beta=0)


def preference_rows(n: int) -> list[dict]:
    words = ["apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "piano", "grape",
             "ocean", "maple", "tulip", "candle", "bridge", "forest", "garden", "silver",
             "window", "rocket", "castle"]
    return [{"prompt": f"Repeat the word {w} ({i}).", "chosen": w, "rejected": w[::-1]}
            for i in range(n // len(words) + 1) for w in words][:n]


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tests.conftest import TINY_PARAMS, build_tiny_model, data_stages, write_params

    root = tmp_path_factory.mktemp("preference")
    model = build_tiny_model(root / "tiny")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(model)
    params["tracking"]["enabled"] = False
    path = write_rows(root / "pairs.jsonl", preference_rows(60))
    params["format_data"]["tasks"]["prefs"] = {"source": "file", "format": "preference",
                                               "path": str(path), "n_train": 40, "n_val": 8,
                                               "n_test": 12}
    params["mix_tasks"]["weights"] = {"sentiment": 0.0, "reading": 0.0, "prefs": 1.0}
    params["mix_tasks"]["total_examples"] = 40
    params["train_adapter"].update(max_steps=6, learning_rate=2e-2, objective="dpo",
                                   dpo={"beta": 0.1, "loss_type": "sigmoid"})
    pfile = write_params(root / "params.yaml", params)
    data_stages(root, root / "base", pfile, params)
    return root, params


@pytest.mark.parametrize("method,block", [("lora", {"r": 4, "alpha": 8}), ("full", {}),
                                          ("prompt_tuning", {"num_virtual_tokens": 4})])
def test_dpo_trains_from_the_base_as_reference(pref_data: tuple[Path, dict], tmp_path: Path,
                                               method: str, block: dict) -> None:
    """The first step's loss is log 2 (the policy starts as its reference, the base), and
    training lowers it; the mixture kept every pair's rejected answer."""
    import math

    from stages import train_adapter
    from tests.conftest import write_params

    root, params = pref_data
    params = json.loads(json.dumps(params))
    params["train_adapter"].update(method=method, **{method: block})
    if method == "full":
        params["train_adapter"]["learning_rate"] = 1e-3
    if method == "prompt_tuning":
        params["train_adapter"]["learning_rate"] = 1e-1
    pfile = write_params(tmp_path / "params.yaml", params)
    mixed = [json.loads(line) for line in (root / "mixed" / "train.jsonl").open()]
    assert mixed and all(r["rejected"] and r["rejected"] != r["completion"] for r in mixed)
    train_adapter.main(root / "base", root / "mixed", tmp_path / "adapter",
                       tmp_path / "train.json", tmp_path / "curve.csv", pfile)
    curve = (tmp_path / "curve.csv").read_text().splitlines()[1:]
    losses = [float(line.split(",")[1]) for line in curve]
    if method == "prompt_tuning":  # its initial soft prompt already moves the policy
        assert sum(losses[-2:]) / 2 < losses[0], losses
    else:
        assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
        assert min(losses[1:]) < math.log(2) - 1e-3, losses


def test_dpo_refuses_tasks_without_pairs_and_adalora(pref_data: tuple[Path, dict],
                                                     tmp_path: Path) -> None:
    from stages import mix_tasks, train_adapter
    from tests.conftest import write_params

    root, params = pref_data
    params = json.loads(json.dumps(params))
    params["mix_tasks"]["weights"] = {"sentiment": 1.0, "reading": 0.0, "prefs": 1.0}
    pfile = write_params(tmp_path / "params.yaml", params)
    mix_tasks.main(root / "formatted", root / "base", tmp_path / "mixed", tmp_path / "mix.json",
                   pfile)
    with pytest.raises(DataError, match=r"objective is dpo, but task sentiment has no "
                                        r"rejected answers .*set their mix_tasks.weights to 0"):
        train_adapter.main(root / "base", tmp_path / "mixed", tmp_path / "adapter",
                           tmp_path / "train.json", tmp_path / "curve.csv", pfile)
    assert not (tmp_path / "adapter").exists()
    from forgetful.train.trainer import parse_params

    with pytest.raises(ConfigError, match="dpo cannot train adalora"):
        parse_params({**params["train_adapter"], "method": "adalora"})


def test_preference_accuracy_is_the_chosen_answer_being_likelier(
        pref_data: tuple[Path, dict], tmp_path: Path) -> None:
    """evaluate scores a preference task by whether the chosen answer is likelier than the
    rejected one as the prompt's continuation: checked against the summed log-probs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.evaluate.scoring import encode_apart
    from stages import evaluate

    root, params = pref_data
    pfile = root / "params.yaml"
    evaluate.main("base", root / "base", root / "eval", tmp_path / "scores.json",
                  tmp_path / "predictions.jsonl", tmp_path / "samples.jsonl", pfile)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["tasks"]["prefs"]["metric"] == "preference"
    assert scores["tasks"]["prefs"]["n"] == 12 and "answer_format" not in scores["tasks"]["prefs"]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").open()]
    mine = [r for r in rows if r["task"] == "prefs"]
    tests = {r["id"]: r for r in map(json.loads, (root / "eval" / "prefs" / "test.jsonl").open())}
    model = AutoModelForCausalLM.from_pretrained(root / "base").eval()
    tok = AutoTokenizer.from_pretrained(root / "base")

    def loglik(prompt: str, answer: str) -> float:
        context, target = encode_apart(tok, prompt, answer)
        ids = torch.tensor([context + target])
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        return sum(logps[len(context) - 1 + k, t].item() for k, t in enumerate(target))

    for r in mine:
        rec = tests[r["id"]]
        chosen, rejected = loglik(rec["prompt"], rec["completion"]), \
            loglik(rec["prompt"], rec["rejected"])
        assert r["correct"] == (chosen > rejected), r["id"]
        assert (r["loglik_chosen"], r["loglik_rejected"]) == (pytest.approx(chosen, abs=1e-3),
                                                             pytest.approx(rejected, abs=1e-3))
    gaps = [r["loglik_chosen"] - r["loglik_rejected"] for r in mine]
    assert scores["tasks"]["prefs"]["likelihood_gap"] == pytest.approx(sum(gaps) / len(gaps),
                                                                       abs=1e-4)
    # the report's second column: tuned − base of the gap is the mean implicit reward
    # margin / β (the base being the reference), with an interval over the pairs
    from forgetful.report.forgetting import (
        GAP,
        detail,
        details_markdown,
        intervals,
        item_scores,
        task_details,
    )

    items = item_scores(rows)
    assert items[detail("prefs", GAP)] == {r["id"]: pytest.approx(g) for r, g in
                                           zip(mine, gaps, strict=True)}
    shifted = {k: {i: v + (0.5 if k == detail("prefs", GAP) else 0.0) for i, v in d.items()}
               for k, d in items.items()}
    found = intervals(items, shifted)[detail("prefs", GAP)]["difference_ci"]
    assert found[0] == pytest.approx(0.5) and found[1] == pytest.approx(0.5)
    tuned = json.loads(json.dumps(scores))
    tuned["tasks"]["prefs"]["likelihood_gap"] += 0.5
    (row,) = [r for r in task_details(scores, tuned) if r["column"] == GAP]
    row |= {"difference": 0.5, "difference_ci": found}
    text = "\n".join(details_markdown([row]))
    assert "| prefs | likelihood gap | nats | 12 |" in text and "+0.50 [+0.50, +0.50]" in text


def test_self_play_pairs_the_gold_answer_with_the_bases_wrong_one() -> None:
    from forgetful.data.builtin_tasks import GENERATORS
    from forgetful.data.sources import heldout_conversations

    task = parse_task("sp", {"source": "self_play", "generator": "arithmetic", "n_train": 0,
                             "n_val": 2, "n_test": 3, "max_prompts": 30,
                             "heldout_prompts": 12})
    gold = dict(GENERATORS["arithmetic"][0]().seen + GENERATORS["arithmetic"][0]().heldout)
    asked: list[list[str]] = []

    def answer(prompts: list[str], tokens: int, batch: int) -> list[str]:
        asked.append(prompts)  # right on every third prompt, empty on one, wrong elsewhere
        return [gold[q] if k % 3 == 0 else "" if k == 1 else f"{gold[q]}7 apples"
                for k, q in enumerate(prompts)]

    pairs, invalid = load_conversations(task, answer=answer)
    assert len(asked[0]) == 30 and len(pairs) == 30 - 10 - 1 and invalid == []
    for convo in pairs:
        q, a = convo[0]["content"], convo[1]
        assert a["content"] == gold[q] and a["rejected"] == f"{gold[q]}7 apples"
    held = heldout_conversations(task, answer)
    assert len(asked[1]) == 12 and len(held) == 12 - 4 - 1
    assert not {c[0]["content"] for c in held} & {c[0]["content"] for c in pairs}
    assert metric_of(task) == "preference"
    with pytest.raises(ValueError, match="generator must be one of"):
        parse_task("sp", {"source": "self_play", "generator": "poems", "n_train": 0,
                          "n_val": 0, "n_test": 1})


def test_self_play_task_through_format_data(pref_data: tuple[Path, dict],
                                            tmp_path: Path) -> None:
    """The stage answers with the base model itself and writes preference records."""
    from stages import format_data
    from tests.conftest import write_params

    root, params = pref_data
    params = json.loads(json.dumps(params))
    params["format_data"]["tasks"]["sp"] = {"source": "self_play", "generator": "reading",
                                            "n_train": 0, "n_val": 2, "n_test": 4,
                                            "max_prompts": 12, "heldout_prompts": 8,
                                            "max_new_tokens": 4}
    pfile = write_params(tmp_path / "params.yaml", params)
    format_data.main("sp", root / "base", tmp_path / "sp", tmp_path / "sp.json", pfile)
    test = [json.loads(line) for line in (tmp_path / "sp" / "test.jsonl").open()]
    train = [json.loads(line) for line in (tmp_path / "sp" / "train.jsonl").open()]
    assert len(test) == 4 and train
    for r in test + train:
        assert r["metric"] == "preference" and r["rejected"] and r["rejected"] != r["completion"]
