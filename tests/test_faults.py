"""Faults a user meets, each a one-line message, a non-zero exit and no out left behind: a
diverged training, a broken (NaN) model at evaluation or merge, a disk that fills up while
a stage writes, a hub model with no network and no cache, a read-only MLflow store, and a
misspelled key or method (with the closest known one suggested)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, DataError, NonFinite, build
from stages import (
    evaluate,
    merge_adapter,
    prepare_base,
    train_adapter,
)
from tests.conftest import TINY_PARAMS, data_stages, write_params


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict:
    """The tiny pipeline up to the mixture (no training): what the faults start from."""
    root = tmp_path_factory.mktemp("faults")
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    pfile = write_params(root / "params.yaml", params)
    base = root / "models/base"
    data_stages(root, base, pfile, params)
    return {"root": root, "base": base, "params": params, "eval": root / "eval",
            "mixed": root / "mixed"}


def params_with(data: dict, tmp_path: Path, **train: object) -> Path:
    params = json.loads(json.dumps(data["params"]))
    params["train_adapter"].update(train)
    return write_params(tmp_path / "params.yaml", params)


def one_line_exit(fn, capsys: pytest.CaptureFixture) -> str:
    """Run `fn` as a stage runs (run_stage): it must exit 2 with one error line and no
    traceback (progress bars of the libraries aside)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_stage(fn)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_a_diverged_training_stops_at_once_and_leaves_nothing(
        data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pfile = params_with(data, tmp_path, learning_rate=1.0e30, warmup_steps=0, max_steps=6)
    out = tmp_path / "out"
    line = one_line_exit(lambda: train_adapter.main(
        data["base"], data["mixed"], out / "adapter", out / "train.json", out / "curve.csv",
        pfile, checkpoint_dir=out / "checkpoints"), capsys)
    assert line.startswith("error: training diverged at step ")
    assert "lower train_adapter.learning_rate (now 1e+30)" in line
    assert "train_adapter.warmup_steps, now 0" in line and "precision: fp32" in line
    assert not (out / "adapter").exists() and not (out / "train.json").exists()
    assert not (out / "curve.csv").exists()
    assert not any((out / "checkpoints").iterdir())  # nothing to resume a NaN run from
    from mlflow.tracking import MlflowClient

    client = MlflowClient(data["params"]["tracking"]["uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id],
                                "attributes.status = 'FAILED'")
    assert "training diverged" in run.data.tags["mlflow.note.content"]


def test_a_full_disk_while_writing_is_one_line_and_no_out(
        data: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"

    def full(path: Path, content: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train_adapter, "write_json", full)  # inside the adapter's folder
    pfile = params_with(data, tmp_path, max_steps=2)
    line = one_line_exit(lambda: train_adapter.main(
        data["base"], data["mixed"], out / "adapter", out / "train.json", out / "curve.csv",
        pfile), capsys)
    assert line.startswith("error: no space left on the device writing ")
    assert "run_info.json" in line and "df -h" in line
    assert not out.exists() or list(out.iterdir()) == []  # no out, no temporary folder


def test_write_bytes_leaves_no_temporary_file_when_the_disk_fills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from forgetful.core import artifacts

    def full(self: Path, content: bytes) -> int:
        self.open("wb").write(content[:3])  # a part landed before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError):
        artifacts.write_text(tmp_path / "metrics.json", '{"a": 1}')
    assert list(tmp_path.iterdir()) == []


def nan_copy(model: Path, dest: Path) -> Path:
    """The model with one weight NaN: what a diverged full fine-tune leaves."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(model)
    with torch.no_grad():
        m.model.layers[0].self_attn.q_proj.weight[0, 0] = float("nan")
    m.save_pretrained(dest)
    AutoTokenizer.from_pretrained(model).save_pretrained(dest)
    shutil.copy(model / "run_info.json", dest / "run_info.json")
    return dest


def test_evaluating_a_nan_model_names_its_folder(data: dict, tmp_path: Path) -> None:
    broken = nan_copy(data["base"], tmp_path / "merged")
    out = tmp_path / "eval"
    with pytest.raises(NonFinite, match=rf"{broken}: non-finite logits .*re-train with a "
                                        r"lower train_adapter.learning_rate; nothing was"):
        evaluate.main("tuned", broken, data["eval"], out / "scores.json",
                      out / "predictions.jsonl", out / "samples.jsonl",
                      params_with(data, tmp_path))
    assert not out.exists()


def test_merging_a_nan_adapter_says_non_finite_logits(data: dict, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(data["base"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    (adapter / "run_info.json").write_text(json.dumps({
        "method": "lora", "params": {"lora": {"r": 4, "alpha": 8,
                                              "target_modules": ["q_proj"]}}}))
    with pytest.raises(NonFinite, match="the adapter model gives non-finite logits"):
        merge_adapter.main(data["base"], adapter, data["mixed"] / "val.jsonl",
                           tmp_path / "merged", tmp_path / "merge.json",
                           params_with(data, tmp_path))
    assert not (tmp_path / "merged").exists() and not (tmp_path / "merge.json").exists()


def test_a_hub_model_without_network_or_cache_names_offline_mode_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    pfile = write_params(tmp_path / "p.yaml", {"prepare_base": {
        "source": "hub", "hub_id": "someorg/never-downloaded", "revision": "0123abc"}})
    with pytest.raises(DataError) as err:
        prepare_base.main(tmp_path / "out", pfile)
    text = str(err.value)
    assert "someorg/never-downloaded at revision 0123abc is not in the Hugging Face cache" in text
    assert "offline mode (HF_HUB_OFFLINE=1)" in text
    assert "prepare_base.source: local with local_path" in text
    assert not (tmp_path / "out").exists()


def test_a_store_that_cannot_be_written_is_one_warning_and_rc_0() -> None:
    """A truly read-only store (not a read-only URI): the SQLite file and its folder made
    immutable (`chattr +i`, which binds root too) or, for another user, read-only. The
    stage goes on with one warning line and logs nothing."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="ro-store-", dir="/tmp"))
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("t")
    root = os.geteuid() == 0
    try:
        if root:
            locked = subprocess.run(["chattr", "+i", str(db), str(folder)],
                                    capture_output=True, text=True)
            if locked.returncode != 0:
                pytest.skip(f"chattr cannot make the store immutable here ({locked.stderr.strip()})"
                            "; test_tracking.py's mode=ro URI test covers a refused write")
        else:
            db.chmod(0o444)
            folder.chmod(0o555)
        code = ("from forgetful.core import tracking\n"
                f"p = tracking.TrackingParams(uri='sqlite:///{db}', experiment='t')\n"
                "assert tracking.start_run(p, 'r', {'a': 1}, {}) is None\n"
                "assert tracking.log_metrics(p, None, {'x': 1.0}) is None\n"
                "print('went on')\n")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, cwd=tempfile.gettempdir(), env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "went on"
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr[-3000:]
        assert "is unreachable" in lines[0] and "outputs are the same" in lines[0]
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(db), str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_misspelled_keys_and_choices_suggest_the_closest_known_one() -> None:
    from forgetful.train.trainer import TrainParams, parse_params

    section = json.loads(json.dumps(TINY_PARAMS["train_adapter"]))
    typo = {**section, "learnig_rate": 1e-3}
    del typo["learning_rate"]
    with pytest.raises(ConfigError, match=r"train_adapter.learnig_rate is not a known key "
                                          r"\(did you mean 'learning_rate'\?\)"):
        build(TrainParams, typo, "train_adapter")
    with pytest.raises(ConfigError, match=r"unknown method 'LoRA' \(did you mean 'lora'\?\)"):
        parse_params({**section, "method": "LoRA"})
    with pytest.raises(ConfigError, match=r"unknown method 'lorra' \(did you mean 'lora'\?\)"):
        parse_params({**section, "method": "lorra"})
    with pytest.raises(ConfigError, match=r"precision must be one of .* got 'FP32' "
                                          r"\(did you mean 'fp32'\?\)"):
        parse_params({**section, "precision": "FP32"})
    with pytest.raises(ConfigError, match=r"not a known key; known"):  # nothing close
        build(TrainParams, {**section, "zzzz": 1}, "train_adapter")


def test_params_yaml_typo_through_the_stage_is_one_line(
        data: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = json.loads(json.dumps(data["params"]))
    params["train_adapter"]["learnig_rate"] = params["train_adapter"].pop("learning_rate")
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    line = one_line_exit(lambda: train_adapter.main(
        data["base"], data["mixed"], tmp_path / "adapter", tmp_path / "t.json",
        tmp_path / "c.csv", pfile), capsys)
    assert "did you mean 'learning_rate'" in line
