"""Cross-entropy on completion tokens, with the output layer computed only where it counts.

A causal LM computes logits for every position, then the loss ignores the prompt's:
with a 49k-token vocabulary the output layer and its log-softmax are a large share of a
small model's step, spent on positions whose loss is thrown away. `HeadSelector` is a
forward pre-hook on the output layer that hands it only the positions whose next token
is labelled; `CompletionTrainer.compute_loss` sets the positions and takes the same
token-summed cross-entropy that transformers' causal-LM loss takes, so the loss and its
gradients are unchanged (tests/test_methods.py compares the loss with transformers'), and
the model's own forward (DDP hooks, PEFT layers) runs as usual.

Prompt-learning methods (prompt, prefix, p-tuning) change the sequence the output layer
sees, and AdaLoRA adds its regulariser only to a loss the model computes, so they keep
transformers' standard loss (forgetful.train.trainer.head_selector).
"""

from __future__ import annotations

from typing import Any

import torch

from forgetful.data.batches import IGNORE
from forgetful.evaluate.heads import HeadSelector


def completion_loss(model: Any, inputs: dict[str, torch.Tensor], selector: HeadSelector,
                    num_items_in_batch: Any) -> tuple[torch.Tensor, Any]:
    """Summed cross-entropy over labelled tokens / their count (over the whole step when
    the Trainer passes `num_items_in_batch`, as transformers' ForCausalLMLoss does)."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE
    selector.mask = keep
    try:
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    finally:
        selector.mask = None
    picked = targets[targets != IGNORE]
    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), picked, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else max(picked.numel(), 1)
    if torch.is_tensor(count):
        count = count.to(loss.device)
    return loss / count, outputs


def trainer_class() -> type:
    """transformers' Trainer, with `completion_loss` where the model allows it."""
    from transformers import Trainer

    class CompletionTrainer(Trainer):
        selector: HeadSelector | None = None
        preference: Any = None  # objective dpo: (DPOParams, reference model or None)

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if self.preference is not None:
                from forgetful.train.preference import pair_loss

                dpo, reference = self.preference
                loss, _ = pair_loss(model, inputs, dpo.beta, dpo.loss_type, reference)
                return (loss, {}) if return_outputs else loss  # no logits kept
            if self.selector is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if not self.model_accepts_loss_kwargs:  # then Trainer divides by accumulation
                num_items_in_batch = None
            loss, outputs = completion_loss(model, inputs, self.selector, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # As Trainer.compute_loss: DDP averages gradients over processes, while the
                # token count was summed over them.
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return CompletionTrainer
