"""The output layer computed only at chosen positions (a forward pre-hook).

With a 49k-token vocabulary the output layer and its log-softmax are a large share of a
small model's forward pass. Training needs logits only where a label is
(forgetful.train.completion_loss), multiple-choice scoring only where a continuation token
is predicted (forgetful.evaluate.packing): both hand the hook a mask of those positions.
"""

from __future__ import annotations

from typing import Any

import torch


class HeadSelector:
    """Forward pre-hook on the output layer: keeps only the positions in `mask` [B, T]."""

    def __init__(self, model: Any) -> None:
        self.mask: torch.Tensor | None = None
        self.handle = model.get_output_embeddings().register_forward_pre_hook(self)

    def __call__(self, module: Any, args: tuple) -> tuple | None:
        if self.mask is None:
            return None
        return (args[0][self.mask], *args[1:])

    def remove(self) -> None:
        self.handle.remove()


def selectable(model: Any) -> bool:
    """Whether the output layer sees the input's positions one to one."""
    config = getattr(model, "active_peft_config", None)
    if config is not None and config.is_prompt_learning:
        return False
    return model.get_output_embeddings() is not None
