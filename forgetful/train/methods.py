"""PEFT methods, by name: the one place a method name maps to its params and PEFT config.

Each entry gives the dataclass that validates its block in `train_adapter.<method>`, a
function from that block (and the training context) to a peft config, and whether the
trained weights can be merged into the base. merge_adapter reads `mergeable`; nothing
else in the pipeline looks at the method's name.

- LoRA family (Hu et al. 2021): `lora`; `dora` (weight-decomposed, Liu et al. 2024);
  `rslora` (rank-stabilised scaling alpha/sqrt(r), Kalajdzievski 2023); `adalora`
  (adaptive rank budget, Zhang et al. 2023). All merge into W.
- `qlora`: LoRA on a 4-bit NF4 base through bitsandbytes (Dettmers et al. 2023); merges
  into the dequantized base by default (the weights it was trained against).
- `full`: every weight trained, the baseline the PEFT literature compares against; its
  output is a whole model, nothing to merge.
- `ia3`: learned rescaling of keys, values and feed-forward activations (Liu et al. 2022);
  merges.
- Prompt methods, which add inputs rather than change weights and so cannot merge:
  `prompt_tuning` (soft prompt embeddings, Lester et al. 2021; random or text init),
  `p_tuning` (prompt embeddings from an MLP encoder, Liu et al. 2021), `prefix_tuning`
  (key/value prefixes in every layer, Li & Liang 2021), `llama_adapter` (gated adaption
  prompts in the top layers, Zhang et al. 2023; PEFT's AdaptionPrompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forgetful.core.config import require

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoraParams:
    r: int = 16  # rank of B·A
    alpha: int = 32  # scaling numerator: the update is (alpha / r) · B·A
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: tuple[str, ...] = ATTENTION

    def __post_init__(self) -> None:
        require(self.r > 0, "r", f"must be a positive integer, got {self.r}")
        require(self.alpha > 0, "alpha", f"must be a positive integer, got {self.alpha}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass(frozen=True)
class AdaLoraParams(LoraParams):
    init_r: int = 12  # starting rank of every matrix
    target_r: int = 4  # average rank kept after pruning
    tinit: int = 0  # steps before the rank budget starts shrinking
    tfinal: int = 0  # final steps at the target budget
    delta_t: int = 1  # steps between budget allocations

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.target_r <= self.init_r, "target_r", "must be in (0, init_r]")


@dataclass(frozen=True)
class QLoraParams(LoraParams):
    quant_type: str = "nf4"  # 4-bit data type: nf4 (NormalFloat, the QLoRA paper's) or fp4
    double_quant: bool = True  # quantize the quantization constants too (saves ~0.4 bit/weight)
    compute_dtype: str = "float32"  # dtype of the matmuls: float32 on CPU, bfloat16 on GPU

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.quant_type in ("nf4", "fp4"), "quant_type", "must be nf4 or fp4")
        require(self.compute_dtype in ("float32", "bfloat16", "float16"), "compute_dtype",
                "must be float32, bfloat16 or float16")


@dataclass(frozen=True)
class FullParams:
    pass  # no options: every weight of the base is trained


@dataclass(frozen=True)
class IA3Params:
    target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj")
    feedforward_modules: tuple[str, ...] = ("down_proj",)  # scaled on their input

    def __post_init__(self) -> None:
        require(bool(self.target_modules), "target_modules", "must name at least one module")
        require(set(self.feedforward_modules) <= set(self.target_modules), "feedforward_modules",
                "must be a subset of target_modules")


@dataclass(frozen=True)
class PromptTuningParams:
    num_virtual_tokens: int = 16  # soft prompt length
    init: str = "random"  # random, or text (start from the embeddings of init_text)
    init_text: str = "Answer the question:"

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", "must be a positive integer")
        require(self.init in ("random", "text"), "init", "must be random or text")
        require(self.init == "random" or bool(self.init_text), "init_text",
                "must be set for init: text")


@dataclass(frozen=True)
class PTuningParams:
    num_virtual_tokens: int = 16
    encoder_hidden_size: int = 128  # width of the MLP that produces the prompt

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", "must be a positive integer")
        require(self.encoder_hidden_size > 0, "encoder_hidden_size", "must be a positive integer")


@dataclass(frozen=True)
class PrefixTuningParams:
    num_virtual_tokens: int = 16  # prefix length in every layer

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "num_virtual_tokens", "must be a positive integer")


@dataclass(frozen=True)
class LlamaAdapterParams:
    adapter_len: int = 10  # adaption prompt length
    adapter_layers: int = 2  # top layers that get a gated prompt

    def __post_init__(self) -> None:
        require(self.adapter_len > 0, "adapter_len", "must be a positive integer")
        require(self.adapter_layers > 0, "adapter_layers", "must be a positive integer")


def _lora(p: LoraParams, ctx: dict[str, Any], **extra: Any) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=p.r, lora_alpha=p.alpha,
                      lora_dropout=p.dropout, target_modules=list(p.target_modules), **extra)


def quantization(p: QLoraParams) -> dict[str, Any]:
    """from_pretrained arguments that load the base in 4 bits (bitsandbytes)."""
    import torch
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=p.quant_type,
        bnb_4bit_use_double_quant=p.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, p.compute_dtype))}


def _adalora(p: AdaLoraParams, ctx: dict[str, Any]) -> Any:
    from peft import AdaLoraConfig, TaskType

    return AdaLoraConfig(
        task_type=TaskType.CAUSAL_LM, init_r=p.init_r, target_r=p.target_r, lora_alpha=p.alpha,
        lora_dropout=p.dropout, target_modules=list(p.target_modules), tinit=p.tinit,
        tfinal=p.tfinal, deltaT=p.delta_t, total_step=ctx["max_steps"],
    )


def _ia3(p: IA3Params, ctx: dict[str, Any]) -> Any:
    from peft import IA3Config, TaskType

    return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=list(p.target_modules),
                     feedforward_modules=list(p.feedforward_modules))


def _prompt_tuning(p: PromptTuningParams, ctx: dict[str, Any]) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    text = p.init == "text"
    return PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=p.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=p.init_text if text else None,
        tokenizer_name_or_path=str(ctx["base"]) if text else None,
    )


def _p_tuning(p: PTuningParams, ctx: dict[str, Any]) -> Any:
    from peft import PromptEncoderConfig, TaskType

    return PromptEncoderConfig(task_type=TaskType.CAUSAL_LM,
                               num_virtual_tokens=p.num_virtual_tokens,
                               encoder_hidden_size=p.encoder_hidden_size)


def _prefix_tuning(p: PrefixTuningParams, ctx: dict[str, Any]) -> Any:
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM,
                              num_virtual_tokens=p.num_virtual_tokens)


def _llama_adapter(p: LlamaAdapterParams, ctx: dict[str, Any]) -> Any:
    from peft import AdaptionPromptConfig, TaskType

    return AdaptionPromptConfig(task_type=TaskType.CAUSAL_LM, adapter_len=p.adapter_len,
                                adapter_layers=p.adapter_layers)


@dataclass(frozen=True)
class Method:
    params: type
    peft_config: Callable[[Any, dict[str, Any]], Any] | None  # None: train the model itself
    merge: str  # how merge_adapter treats it: merge, keep (cannot merge), dequantize, copy
    reallocates_rank: bool = False  # AdaLoRA: call update_and_allocate after every step
    load: Callable[[Any], dict[str, Any]] = lambda p: {}  # extra from_pretrained arguments

    @property
    def mergeable(self) -> bool:
        return self.merge != "keep"


METHODS: dict[str, Method] = {
    "lora": Method(LoraParams, _lora, merge="merge"),
    "dora": Method(LoraParams, lambda p, ctx: _lora(p, ctx, use_dora=True), merge="merge"),
    "rslora": Method(LoraParams, lambda p, ctx: _lora(p, ctx, use_rslora=True), merge="merge"),
    "qlora": Method(QLoraParams, _lora, merge="dequantize", load=quantization),
    "adalora": Method(AdaLoraParams, _adalora, merge="merge", reallocates_rank=True),
    "ia3": Method(IA3Params, _ia3, merge="merge"),
    "prompt_tuning": Method(PromptTuningParams, _prompt_tuning, merge="keep"),
    "p_tuning": Method(PTuningParams, _p_tuning, merge="keep"),
    "prefix_tuning": Method(PrefixTuningParams, _prefix_tuning, merge="keep"),
    "llama_adapter": Method(LlamaAdapterParams, _llama_adapter, merge="keep"),
    "full": Method(FullParams, None, merge="copy"),
}
