"""Direct Preference Optimization (Rafailov et al. 2023): the loss, its batches and its
reference.

A preference record is an instruction record (prompt, completion = the chosen answer) with
a `rejected` answer beside it. `encode_pair` tokenizes both answers after the same prompt
exactly as SFT does (forgetful.data.batches.encode), and `collate_pairs` stacks a batch as
[chosen…, rejected…], the layout TRL's DPOTrainer uses. `sequence_logps` sums each
sequence's log-probabilities over its labelled (answer) tokens; `dpo_loss` is

    sigmoid:  −log σ(β·[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))])
    ipo:      ([(log π(c) − log π_ref(c))/|c| − (log π(r) − log π_ref(r))/|r|] − 1/(2β))²

(IPO, Azar et al. 2023, per answer token as TRL computes it), averaged over the pairs.
The reference is the base model: for PEFT methods the same model with its adapter
disabled (no second copy in memory), for `full` a frozen copy. tests/test_preference.py
checks loss and gradients against TRL's DPOTrainer on the same batch and reference.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from forgetful.data.batches import IGNORE, collate, encode

LossType = Literal["sigmoid", "ipo"]
LOSS_TYPES = ("sigmoid", "ipo")


def encode_pair(record: dict, tokenizer: Any) -> dict[str, list[int]]:
    """The chosen and the rejected answer after the same prompt, tokenized as SFT does."""
    chosen = encode(record, tokenizer)
    rejected = encode({**record, "completion": record["rejected"], "segments": None},
                      tokenizer)
    return {"input_ids": chosen["input_ids"], "labels": chosen["labels"],
            "rejected_input_ids": rejected["input_ids"], "rejected_labels": rejected["labels"]}


def collate_pairs(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch of 2n sequences: the n chosen, then the n rejected."""
    rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features] + \
        [{"input_ids": f["rejected_input_ids"], "labels": f["rejected_labels"]}
         for f in features]
    return collate(rows, pad_id)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    """Per sequence: the summed log-probability of its labelled tokens (each predicted from
    the position before it), and how many there are."""
    logits = logits[:, -labels.size(1):]  # prompt-learning methods prepend virtual tokens
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(logps, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=1), keep.sum(dim=1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: LossType = "sigmoid",
             chosen_tokens: torch.Tensor | None = None,
             rejected_tokens: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over pairs of the DPO (sigmoid) or IPO loss, from summed log-probs."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    if loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("ipo needs the answers' token counts")
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - \
            rejected_ratio / rejected_tokens.clamp(min=1)
        return ((delta - 1 / (2 * beta)) ** 2).mean()
    raise ValueError(f"unknown DPO loss {loss_type!r}; one of {', '.join(LOSS_TYPES)}")


def rewards(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
            ref_rejected: torch.Tensor, beta: float) -> dict[str, float]:
    """The implicit rewards' accuracy (chosen above rejected) and mean margin."""
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return {"reward_accuracy": float((margin > 0).float().mean()),
            "reward_margin": float(margin.mean())}


def reference_logits(model: Any, reference: Any, inputs: dict[str, torch.Tensor]
                     ) -> torch.Tensor:
    """The reference model's logits: `reference` when given (a frozen copy, for full
    fine-tuning), else the model with its adapter disabled."""
    with torch.no_grad():
        if reference is not None:
            return reference(input_ids=inputs["input_ids"],
                             attention_mask=inputs["attention_mask"]).logits
        with model.disable_adapter():
            return model(input_ids=inputs["input_ids"],
                         attention_mask=inputs["attention_mask"]).logits


def pair_loss(model: Any, inputs: dict[str, torch.Tensor], beta: float, loss_type: LossType,
              reference: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss of a [chosen…, rejected…] batch and its reward metrics."""
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    logps, tokens = sequence_logps(out.logits, inputs["labels"])
    ref, _ = sequence_logps(reference_logits(model, reference, inputs), inputs["labels"])
    c, r = logps.chunk(2)
    rc, rr = ref.chunk(2)
    tc, tr = tokens.chunk(2)
    loss = dpo_loss(c, r, rc, rr, beta, loss_type, tc, tr)
    return loss, rewards(c.detach(), r.detach(), rc, rr, beta)
