"""Tokenizing instruction records for training: loss on the completion tokens only."""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100  # label value that torch's cross-entropy skips


def encode(record: dict, tokenizer: Any) -> dict[str, list[int]]:
    """Prompt and completion tokenized apart, so the boundary is exactly where generation
    starts at evaluation; labels copy the completion and its end-of-sequence token."""
    prompt = tokenizer(record["prompt"], add_special_tokens=False).input_ids
    completion = tokenizer(record["completion"], add_special_tokens=False).input_ids
    completion = completion + [tokenizer.eos_token_id]
    return {
        "input_ids": prompt + completion,
        "labels": [IGNORE] * len(prompt) + completion,
    }


def collate(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest sequence; padding is masked and unlabelled."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
