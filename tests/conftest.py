"""Fixtures: a tiny random causal LM with a real (tiny) BPE tokenizer, built on the spot.

No test downloads anything: the tokenizer is trained on text from our own generators,
the model is a 2-layer Llama with random weights, saved as safetensors like any base.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from forgetful.data import builtin_tasks
from forgetful.evaluate import benchmarks

REPO = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    texts = [f"{p} {a}" for gen, _ in builtin_tasks.GENERATORS.values()
             for part in gen() for p, a in part[:300]]
    for make in benchmarks.BENCHMARKS.values():
        texts += [it["context"] + " " + " ".join(it["choices"]) for it in make()]
    return texts + benchmarks.GENERAL_PROMPTS + ["Answer: Below is an instruction ### Response"]


def build_tiny_model(folder: Path, seed: int = 0, hidden: int = 32) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token="<|im_start|>", unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


TINY_PARAMS = {
    "prepare_base": {"source": "local", "local_path": "", "dtype": "float32"},
    "format_data": {
        "seed": 1, "template": "chat", "max_length": 96, "overlong": "drop",
        "invalid_records": "fail",
        "max_skipped_share": 0.1, "dedup": {"ngram": 3, "near_threshold": 0.9},
        "tasks": {
            "sentiment": {"source": "builtin", "generator": "sentiment",
                          "n_train": 60, "n_val": 8, "n_test": 12},
            "reading": {"source": "builtin", "generator": "reading",
                        "n_train": 40, "n_val": 8, "n_test": 8, "n_in_template": 6},
        },
    },
    "mix_tasks": {"seed": 2, "weights": {"sentiment": 1.0, "reading": 0.0},
                  "total_examples": 64, "val_per_task": 8},
    "train_adapter": {
        "seed": 3, "method": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "learning_rate": 5.0e-3, "lr_scheduler": "constant", "warmup_steps": 0,
        "max_steps": 8, "batch_size": 8, "grad_accum": 1, "max_length": 96,
        "weight_decay": 0.0,
    },
    "merge_adapter": {"probe_examples": 4, "tolerance": {"float32": 1.0e-4},
                      "qlora_base": "dequantized"},
    "evaluate": {"batch_size": 8, "max_new_tokens": 4, "max_test_examples": 0,
                 "general_suite": ["capitals", "opposites"], "files": {},
                 "text_suite": ["prose"], "text_files": {}, "text_window": 64,
                 "sample_tokens": 6, "drift": True},  # measure_drift's DVC params name it
    "report": {"samples": 3, "bootstrap": 200, "seed": 0, "max_forgetting": 0.1,
               "on_forgetting": "warn", "min_above_chance": 0.1},
    "remedy": {"strengths": [0.5], "steps": [], "budget": 0.05, "measure": "elsewhere"},
    "tracking": {"uri": "", "experiment": "tests", "enabled": True},
    "safety": {"allow_outside_paths": True},  # the tiny model lives in a pytest tmp folder
}


def data_stages(root: Path, base: Path, pfile: Path, params: dict) -> None:
    """The pipeline up to training, each stage's main: prepare_base into `base`, then under
    `root` formatted/<task>, eval (gather_eval), mixed and mix.json."""
    from stages import format_data, gather_eval, mix_tasks, prepare_base

    prepare_base.main(base, pfile)
    for task in params["format_data"]["tasks"]:
        format_data.main(task, base, root / "formatted" / task, root / f"{task}.json", pfile)
    gather_eval.main(root / "formatted", root / "eval", pfile)
    mix_tasks.main(root / "formatted", base, root / "mixed", root / "mix.json", pfile)


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture()
def tiny_params(tmp_path: Path, tiny_model: Path) -> dict:
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return params


def copy_repo(dest: Path) -> Path:
    """The project's tracked files (code, dvc.yaml, .dvc/config) in a fresh git repo."""
    import subprocess

    listing = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(listing, cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    # Fixed dates: two copies get the same commit id, so their run_info.json can match.
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def dvc(repo: Path, *args: str, env: dict | None = None, ok: bool = True) -> str:
    """Run dvc in `repo` with this interpreter's environment; stdout + stderr."""
    import subprocess
    import sys

    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
             **(env or {})}  # the repo's own MLflow store unless `env` names one
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=full,
                          capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def tiny_repo(dest: Path, tiny_model: Path, **train: object) -> Path:
    """A copy of the project whose params run the pipeline on the tiny model."""
    repo = copy_repo(dest)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["prepare_base"]["local_path"] = str(tiny_model)
    params["train_adapter"].update(train)
    write_params(repo / "params.yaml", params)
    return repo


