"""Every PEFT method in the registry: trains on the tiny model, saves in PEFT's format,
reloads with plain PEFT, and merges within tolerance where it can merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from forgetful.core.config import ConfigError
from forgetful.evaluate import evaluator
from forgetful.train import trainer
from forgetful.train.methods import METHODS
from stages import (
    evaluate,
    merge_adapter,
    train_adapter,
)
from tests.conftest import TINY_PARAMS, build_tiny_model, data_stages, write_params

SMALL = {  # tiny sizes for each method's block
    "lora": {"r": 4, "alpha": 8}, "dora": {"r": 4, "alpha": 8}, "rslora": {"r": 4, "alpha": 8},
    "adalora": {"init_r": 4, "target_r": 2, "alpha": 8},
    "ia3": {}, "prompt_tuning": {"num_virtual_tokens": 4, "init": "text",
                                  "init_text": "Answer the question"},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "prefix_tuning": {"num_virtual_tokens": 4},
    "llama_adapter": {"adapter_len": 4, "adapter_layers": 1},
    "qlora": {"r": 4, "alpha": 8}, "full": {},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("methods")
    # bitsandbytes' 4-bit CPU kernels quantize in blocks of 64: hidden size 64, not 32.
    model = build_tiny_model(root / "tiny64", hidden=64)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(model)
    params["tracking"]["enabled"] = False
    params["train_adapter"].update(max_steps=3, learning_rate=1e-2)
    pfile = write_params(root / "params.yaml", params)
    data_stages(root, root / "base", pfile, params)
    return root, params


def test_every_method_has_a_test() -> None:
    assert set(SMALL) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_saves_reloads_and_merges(data: tuple[Path, dict], tmp_path: Path,
                                                method: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, params = data
    params = json.loads(json.dumps(params))
    params["train_adapter"]["method"] = method
    params["train_adapter"][method] = SMALL[method]
    pfile = write_params(tmp_path / "params.yaml", params)
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    train_adapter.main(root / "base", root / "mixed", adapter, tmp_path / "train.json",
                       tmp_path / "curve.csv", pfile)
    metrics = json.loads((tmp_path / "train.json").read_text())
    assert metrics["steps"] == 3
    if method == "full":
        assert metrics["trainable_params"] == metrics["total_params"]
    else:
        assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["adapter_mb"] > 0

    ids = torch.tensor([[3, 9, 27, 81, 243, 17]])
    base = AutoModelForCausalLM.from_pretrained(root / "base")
    if METHODS[method].peft_config is None:  # full fine-tuning saved a whole model
        reloaded = AutoModelForCausalLM.from_pretrained(adapter).eval()
    else:  # plain PEFT, no code of ours
        reloaded = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        adapted = reloaded(input_ids=ids).logits[:, -ids.shape[1]:]
        plain = AutoModelForCausalLM.from_pretrained(root / "base")(input_ids=ids).logits
    assert not torch.allclose(adapted, plain), "training changed nothing"

    merge_adapter.main(root / "base", adapter, root / "mixed" / "val.jsonl", merged,
                       tmp_path / "merge.json", pfile)
    merge = json.loads((tmp_path / "merge.json").read_text())
    info = json.loads((merged / "run_info.json").read_text())
    if METHODS[method].merge == "dequantize":  # QLoRA: into the dequantized 4-bit base
        assert info["merged"] is True and merge["max_abs_logit_diff"] <= 1e-4
        assert merge["qlora_base"] == "dequantized" and merge["diff_vs_4bit_adapter"] < 1.0
    elif METHODS[method].mergeable:
        assert info["merged"] is True and merge["max_abs_logit_diff"] <= 1e-4
        with torch.no_grad():
            after = AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits
        assert (after - adapted).abs().max() < 1e-4
    else:
        assert info["merged"] is False and "cannot be merged" in info["reason"]
        assert merge["max_abs_logit_diff"] is None
        # evaluate scores the unmerged adapter on the base model
        evaluate.main("tuned", merged, root / "eval", tmp_path / "scores.json",
                      tmp_path / "predictions.jsonl", tmp_path / "samples.jsonl", pfile)
        scores = json.loads((tmp_path / "scores.json").read_text())
        assert set(scores["tasks"]) == {"sentiment", "reading"}


@pytest.mark.parametrize("method", ["prefix_tuning", "prompt_tuning", "p_tuning", "lora",
                                    "ia3", "llama_adapter"])
def test_unmerged_decoding_follows_the_forward_pass(data: tuple[Path, dict], method: str) -> None:
    """generate() on prompt-learning PEFT models drifts from their forward pass
    (transformers 5.24, peft 0.21); evaluate's decoder must not, for any unmerged adapter
    (the training probe decodes them unmerged), batched and padded."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.train.methods import METHODS as REGISTRY

    root, _ = data
    spec = REGISTRY[method]
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(root / "base"),
                           spec.peft_config(spec.params(**{k: v for k, v in SMALL[method].items()
                                                           if k != "init"}),
                                            {"max_steps": 3, "base": root / "base"})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 2.0)
    tok = AutoTokenizer.from_pretrained(root / "base")
    # prompts of different lengths that begin alike, two to a batch: the first batch is
    # padded after its shared tokens (which merged-style decoding runs once for all rows)
    prompts = [f"Answer in a word, please. {q}" for q in (
        "What is the capital of France?", "Name a colour.",
        "Charlie the cat roamed the garden at night. What is the name of the cat?")]
    want = []
    with torch.no_grad():
        for prompt in prompts:  # the model's own forward pass, one prompt, no cache
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            made = []
            for _ in range(6):
                token = int(model(input_ids=ids, attention_mask=torch.ones_like(ids))
                            .logits[0, -1].argmax())
                if token == tok.eos_token_id:
                    break
                made.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            want.append(tok.decode(made, skip_special_tokens=True).strip())
    eval_params = evaluator.EvalParams(batch_size=4, generate_batch=2, max_new_tokens=6,
                                      max_test_examples=0, general_suite=())
    got = evaluator.complete(model, tok, prompts, 6, eval_params)  # what evaluate decodes
    assert got == want


def test_method_blocks_are_validated_before_loading() -> None:
    section = {**TINY_PARAMS["train_adapter"], "method": "prompt_tuning",
               "prompt_tuning": {"num_virtual_tokens": 0}}
    with pytest.raises(ConfigError, match=r"train_adapter\.prompt_tuning\.num_virtual_tokens "
                                          r"must be a positive integer"):
        trainer.parse_params(section)


def _trainer_loss(root: Path, method: str, settings: dict, tmp_path: Path
                  ) -> tuple[float, float, object, list, list]:
    """On one batch of the mixture: the loss our Trainer takes, transformers' causal-LM
    loss of the same model with the same labels, the model, and both losses' gradients
    on the trainable weights."""
    from transformers import AutoTokenizer, TrainingArguments

    from forgetful.core.artifacts import read_jsonl
    from forgetful.data.batches import collate, encode
    from forgetful.train.completion_loss import trainer_class

    torch.manual_seed(0)
    model = trainer.peft_model(root / "base", method, settings, max_steps=3)
    with torch.no_grad():  # as after some training: LoRA's B is no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    tok = AutoTokenizer.from_pretrained(root / "base")
    batch = collate([encode(r, tok) for r in read_jsonl(root / "mixed/train.jsonl")[:4]],
                    tok.pad_token_id)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none",
                             use_cpu=True, per_device_train_batch_size=4)
    run = trainer_class()(model=model, args=args)
    run.selector = trainer.head_selector(model, method)
    weights = [p for p in model.parameters() if p.requires_grad]
    ours = run.compute_loss(model, dict(batch))
    ours_grads = torch.autograd.grad(ours, weights)
    if run.selector is not None:
        run.selector.remove()
    plain = model.base_model.model(**batch).loss  # the wrapped transformers model's own loss
    plain_grads = torch.autograd.grad(plain, weights)
    return float(ours), float(plain), model, ours_grads, plain_grads


def test_completion_loss_equals_transformers_causal_lm_loss(data: tuple[Path, dict],
                                                             tmp_path: Path) -> None:
    """The output layer computed only at labelled positions changes nothing: loss and
    gradients equal transformers' own causal-LM loss over the same labels."""
    root, _ = data
    settings = {**SMALL["lora"], "dropout": 0.0}  # the same forward twice
    ours, plain, model, grads, plain_grads = _trainer_loss(root, "lora", settings, tmp_path)
    assert trainer.head_selector(model, "lora") is not None  # the fast path was taken
    assert abs(ours - plain) < 1e-6
    assert max(float((a - b).abs().max()) for a, b in zip(grads, plain_grads,
                                                          strict=True)) < 1e-6
    assert max(float(g.abs().max()) for g in grads) > 1e-4  # gradients that are not all zero


def test_adalora_trains_with_its_orthogonal_regulariser_and_reallocates_rank(
        data: tuple[Path, dict], tmp_path: Path) -> None:
    root, params = data
    settings = {**SMALL["adalora"], "dropout": 0.0}
    ours, plain, model, _, _ = _trainer_loss(root, "adalora", settings, tmp_path)
    reg = 0.0
    pairs = [(n, p) for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n]
    for n, p in pairs:
        cov = p @ p.T if "lora_A" in n else p.T @ p
        reg += float(torch.norm(cov - torch.eye(*cov.shape), p="fro"))
    weight = model.peft_config["default"].orth_reg_weight
    assert weight > 0 and reg > 0
    assert ours == pytest.approx(plain + weight * reg / len(pairs), rel=1e-4)

    params = json.loads(json.dumps(params))
    params["train_adapter"].update(method="adalora", max_steps=8)
    params["train_adapter"]["adalora"] = {**SMALL["adalora"], "tfinal": 2}
    pfile = write_params(tmp_path / "params.yaml", params)
    train_adapter.main(root / "base", root / "mixed", tmp_path / "adapter",
                       tmp_path / "train.json", tmp_path / "curve.csv", pfile)
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    kept = [sum(mask) for mask in config["rank_pattern"].values()]
    assert kept and min(kept) < 4 and sum(kept) <= 2 * len(kept)  # init_r 4 -> target_r 2


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "adalora", "full"])
def test_merge_strength_interpolates_between_base_and_tuned(data: tuple[Path, dict],
                                                            tmp_path: Path, method: str) -> None:
    """merge_adapter.strength α: α = 1 is the plain merge, weight for weight; α = 0 gives
    the base's logits; in between, the merged model matches the adapter model with its
    change scaled by α (the stage's own check) and lies between the two."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root, params = data
    params = json.loads(json.dumps(params))
    params["train_adapter"].update(method=method, learning_rate=5e-2)
    params["train_adapter"][method] = SMALL[method]
    adapter = tmp_path / "adapter"
    train_adapter.main(root / "base", root / "mixed", adapter, tmp_path / "train.json",
                       tmp_path / "curve.csv", write_params(tmp_path / "train.yaml", params))
    ids = torch.tensor([[3, 9, 27, 81, 243, 5, 7]])
    logits, weights = {}, {}
    for alpha in (1.0, 0.5, 0.0):
        params["merge_adapter"]["strength"] = alpha
        out = tmp_path / f"merged-{alpha}"
        merge_adapter.main(root / "base", adapter, root / "mixed" / "val.jsonl", out,
                           tmp_path / f"merge-{alpha}.json",
                           write_params(tmp_path / f"m{alpha}.yaml", params))
        with torch.no_grad():
            logits[alpha] = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        weights[alpha] = load_file(out / "model.safetensors")
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(root / "base").eval()(ids).logits
    plain = tmp_path / "plain"
    params["merge_adapter"].pop("strength")
    merge_adapter.main(root / "base", adapter, root / "mixed" / "val.jsonl", plain,
                       tmp_path / "plain.json", write_params(tmp_path / "plain.yaml", params))
    assert all(torch.equal(t, load_file(plain / "model.safetensors")[k])
               for k, t in weights[1.0].items())  # α = 1: today's merge
    assert (logits[0.0] - base).abs().max() < 1e-4  # α = 0: the base
    gap = (logits[1.0] - base).abs().max()
    assert gap > 1e-3  # it learned something to scale
    assert 0 < (logits[0.5] - base).abs().max() < gap


def test_strength_for_a_method_without_a_weight_change_is_refused(
        data: tuple[Path, dict], tmp_path: Path) -> None:
    root, params = data
    params = json.loads(json.dumps(params))
    params["train_adapter"].update(method="prompt_tuning")
    params["train_adapter"]["prompt_tuning"] = SMALL["prompt_tuning"]
    adapter = tmp_path / "adapter"
    train_adapter.main(root / "base", root / "mixed", adapter, tmp_path / "train.json",
                       tmp_path / "curve.csv", write_params(tmp_path / "train.yaml", params))
    params["merge_adapter"]["strength"] = 0.5
    with pytest.raises(ConfigError, match=r"merge_adapter.strength is 0.5, but prompt_tuning "
                                          r"adds trained inputs .*set strength: 1"):
        merge_adapter.main(root / "base", adapter, root / "mixed" / "val.jsonl",
                           tmp_path / "merged", tmp_path / "m.json",
                           write_params(tmp_path / "m.yaml", params))
    assert not (tmp_path / "merged").exists()
    params["merge_adapter"]["strength"] = 1.5
    with pytest.raises(ConfigError, match=r"merge_adapter.strength must be in \[0, 1\]"):
        merge_adapter.main(root / "base", adapter, root / "mixed" / "val.jsonl",
                           tmp_path / "merged", tmp_path / "m.json",
                           write_params(tmp_path / "m.yaml", params))


def test_kept_snapshots_are_the_weights_a_shorter_run_ends_with(data: tuple[Path, dict],
                                                                 tmp_path: Path) -> None:
    """train_adapter.keep_every: 2 over 6 steps keeps steps 2 and 4 (6 is the adapter); at
    a constant learning rate, step 4's snapshot is byte for byte the adapter of a run
    stopped at 4, and it merges like any adapter."""
    root, params = data
    params = json.loads(json.dumps(params))
    params["train_adapter"].update(max_steps=6, keep_every=2, lr_scheduler="constant")
    kept = tmp_path / "kept"
    train_adapter.main(root / "base", root / "mixed", tmp_path / "adapter",
                       tmp_path / "train.json", tmp_path / "curve.csv",
                       write_params(tmp_path / "p6.yaml", params), kept=kept)
    assert sorted(d.name for d in kept.iterdir()) == ["step-00002", "step-00004", "steps.json"]
    assert json.loads((kept / "steps.json").read_text()) == {"keep_every": 2, "steps": [2, 4]}
    assert json.loads((tmp_path / "train.json").read_text())["kept_steps"] == [2, 4]
    assert json.loads((kept / "step-00004/run_info.json").read_text())["step"] == 4
    params["train_adapter"].update(max_steps=4, keep_every=0)
    train_adapter.main(root / "base", root / "mixed", tmp_path / "short",
                       tmp_path / "t4.json", tmp_path / "c4.csv",
                       write_params(tmp_path / "p4.yaml", params), kept=tmp_path / "none")
    assert (kept / "step-00004/adapter_model.safetensors").read_bytes() == \
        (tmp_path / "short/adapter_model.safetensors").read_bytes()
    assert json.loads((tmp_path / "none/steps.json").read_text())["steps"] == []  # nothing kept
    merge_adapter.main(root / "base", kept / "step-00004", root / "mixed" / "val.jsonl",
                       tmp_path / "merged", tmp_path / "m.json",
                       write_params(tmp_path / "m.yaml", params))
    params["train_adapter"]["keep_every"] = 2
    with pytest.raises(Exception, match="train_adapter.keep_every is set but the stage has no "
                                        "--kept folder"):
        train_adapter.main(root / "base", root / "mixed", tmp_path / "x", tmp_path / "x.json",
                           tmp_path / "x.csv", write_params(tmp_path / "px.yaml", params))
