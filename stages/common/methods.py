"""PEFT methods, by name: the one place a method name maps to its params and PEFT config.

Each entry gives the dataclass that validates its block in `train_adapter.<method>`,
a function from that block to a peft config, and whether the trained weights can be
merged into the base (merge_adapter reads this; nothing else looks at the method name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stages.common.config import require


@dataclass(frozen=True)
class LoraParams:
    r: int = 16  # rank of B·A
    alpha: int = 32  # scaling numerator: the update is (alpha / r) · B·A (Hu et al. 2021)
    dropout: float = 0.05  # dropout on the LoRA input
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        require(self.r > 0, "r", f"must be a positive integer, got {self.r}")
        require(self.alpha > 0, "alpha", f"must be a positive integer, got {self.alpha}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        require(bool(self.target_modules), "target_modules", "must name at least one module")


def _lora(p: LoraParams) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout,
        target_modules=list(p.target_modules),
    )


@dataclass(frozen=True)
class Method:
    params: type
    peft_config: Callable[[Any], Any]
    mergeable: bool


METHODS: dict[str, Method] = {
    "lora": Method(LoraParams, _lora, mergeable=True),
}
