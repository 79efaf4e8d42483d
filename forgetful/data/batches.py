"""Tokenizing instruction records for training: loss on the completion tokens only."""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100  # label value that torch's cross-entropy skips


def segments_of(record: dict) -> list[dict]:
    """A record's segments; single-turn records are (prompt, untrained) + (completion, trained)."""
    return record.get("segments") or [
        {"text": record["prompt"], "assistant": False, "train": False},
        {"text": record["completion"], "assistant": True, "train": True},
    ]


def encode(record: dict, tokenizer: Any) -> dict[str, list[int]]:
    """Segments tokenized apart, so each boundary is exactly where generation starts at
    evaluation. Every assistant turn ends with the end-of-sequence (end-of-turn) token;
    labels copy the trained turns and their end token, and ignore everything else."""
    input_ids: list[int] = []
    labels: list[int] = []
    for segment in segments_of(record):
        ids = tokenizer(segment["text"], add_special_tokens=False).input_ids
        if segment["assistant"]:
            ids = ids + [tokenizer.eos_token_id]
        input_ids += ids
        labels += ids if segment["train"] else [IGNORE] * len(ids)
    return {"input_ids": input_ids, "labels": labels}


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
