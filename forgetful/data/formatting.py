"""Turning a task's conversations into instruction records with train/val/test splits.

`FormatParams` is the `format_data:` section of params.yaml. `split` shuffles with the
stage's seed and cuts disjoint splits (a built-in task's test split from its held-out part,
its in-template test split from the training part); `to_records` renders each conversation with the
template into prompt and completion (and segments for multi-turn chats), keeping it within
max_length by dropping or truncating, and counts tokens exactly as training sees them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

from forgetful.core.config import DataError, require
from forgetful.data.sources import Task
from forgetful.data.templates import TEMPLATES, render

IN_TEMPLATE = "test_in_template"  # built-in tasks: training frames, unseen fillings


@dataclass(frozen=True)
class DedupParams:
    ngram: int = 3  # word n-grams compared for near duplicates
    near_threshold: float = 0.9  # Jaccard similarity at or above which a record is dropped

    def __post_init__(self) -> None:
        require(self.ngram > 0, "ngram", "must be a positive integer")
        require(0 < self.near_threshold <= 1, "near_threshold", "must be in (0, 1]")


@dataclass(frozen=True)
class FormatParams:
    seed: int  # shuffles each task before splitting; changing it re-runs format_data onward
    template: str  # prompt template: "chat" (the tokenizer's), chatml, plain, alpaca
    tasks: dict[str, Any]  # task name -> source block (validated by sources.parse_task)
    max_length: int = 256  # tokens per record (prompt + completion + end-of-turn)
    overlong: Literal["drop", "truncate"] = "drop"  # truncate shortens the last user message
    invalid_records: Literal["fail", "skip"] = "fail"  # a malformed record: stop, or skip it
    max_skipped_share: float = 0.1  # fail when more than this share is skipped or dropped
    dedup: DedupParams = field(default_factory=DedupParams)

    def __post_init__(self) -> None:
        require(self.template in TEMPLATES, "template",
                f"must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        require(bool(self.tasks), "tasks", "must name at least one task")
        require(self.max_length > 8, "max_length", "must be > 8 tokens")
        require(0 <= self.max_skipped_share <= 1, "max_skipped_share", "must be in [0, 1]")


def split(conversations: list[Any], spec: Any, seed: int, task: str,
          heldout: list[Any] | None = None) -> dict[str, list[Any]]:
    """Shuffle with `seed` and cut test, val, then train: disjoint by construction. With a
    `heldout` part (built-in tasks) the test split is cut from it instead, and the first
    `spec.n_in_template` shuffled training-part examples form the in-template test split."""
    rng = random.Random(seed)
    order = list(range(len(conversations)))
    rng.shuffle(order)
    cuts: dict[str, list[int]] = {}
    if heldout is None:
        first = [("test", spec.n_test), ("val", spec.n_val)]
    else:
        n_heldout = len(heldout)
        if n_heldout < spec.n_test:
            raise DataError(f"task '{task}' has {n_heldout} held-out examples but n_test is "
                            f"{spec.n_test}; lower format_data.tasks.{task}.n_test")
        picked = list(range(n_heldout))
        rng.shuffle(picked)
        test = [heldout[i] for i in picked[: spec.n_test]]
        first = [(IN_TEMPLATE, getattr(spec, "n_in_template", 0)), ("val", spec.n_val)]
    need = sum(n for _, n in first) + max(spec.n_train, 1)
    if len(order) < need:
        sizes = " + ".join(f"n_{name.removeprefix('test_')}" for name, _ in first)
        raise DataError(
            f"task '{task}' has {len(order)} distinct training-part examples but its splits "
            f"need at least {need} ({sizes} + n_train); lower the sizes in "
            f"format_data.tasks.{task}")
    start = 0
    for name, n in first:
        cuts[name] = order[start : start + n]
        start += n
    rest = order[start:]
    cuts["train"] = rest[: spec.n_train] if spec.n_train else rest
    out = {name: [conversations[i] for i in idx] for name, idx in cuts.items()}
    if heldout is not None:
        out["test"] = test
    return out


def count_tokens(segments: list[dict], tokenizer: Any) -> tuple[int, int]:
    """(all tokens, supervised tokens) exactly as training will see them."""
    total = supervised = 0
    for s in segments:
        n = len(tokenizer(s["text"], add_special_tokens=False).input_ids) + s["assistant"]
        total += n
        supervised += n if s["train"] else 0
    return total, supervised


def fit(messages: list[dict], p: FormatParams, tokenizer: Any,
        train_turns: str) -> tuple[list[dict] | None, str]:
    """Segments within max_length: as they are, truncated, or None (dropped)."""
    for attempt in range(4):
        segments = [{"text": t, "assistant": a, "train": tr}
                    for t, a, tr in render(p.template, messages, tokenizer, train_turns)]
        total, _ = count_tokens(segments, tokenizer)
        if total <= p.max_length:
            return segments, "truncated" if attempt else "kept"
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        ids = tokenizer(messages[last_user]["content"], add_special_tokens=False).input_ids
        keep = len(ids) - (total - p.max_length) - 2
        if p.overlong == "drop" or keep < 1:
            return None, "dropped"
        messages = [*messages[:last_user],
                    {"role": "user", "content": tokenizer.decode(ids[:keep])},
                    *messages[last_user + 1 :]]
    return None, "dropped"


def to_records(task: Task, split_name: str, conversations: list[list[dict]], p: FormatParams,
               tokenizer: Any, metric: str) -> tuple[list[dict], dict[str, int]]:
    records, stats = [], {"dropped": 0, "truncated": 0, "tokens": 0, "supervised_tokens": 0,
                          "longest_dropped": 0}
    for i, messages in enumerate(conversations):
        rejected = messages[-1].get("rejected")  # a preference pair's other answer
        if rejected is not None:
            messages = [*messages[:-1], {"role": "assistant", "content": messages[-1]["content"]}]
        segments, status = fit(messages, p, tokenizer, task.spec.train_turns)
        if segments is None:
            stats["dropped"] += 1
            whole = [{"text": t, "assistant": a, "train": tr} for t, a, tr in
                     render(p.template, messages, tokenizer, task.spec.train_turns)]
            stats["longest_dropped"] = max(stats["longest_dropped"],
                                           count_tokens(whole, tokenizer)[0])
            continue
        stats["truncated"] += status == "truncated"
        total, supervised = count_tokens(segments, tokenizer)
        stats["tokens"] += total
        stats["supervised_tokens"] += supervised
        last = max(j for j, s in enumerate(segments) if s["assistant"])
        prompt = "".join(s["text"] + (tokenizer.eos_token if s["assistant"] else "")
                         for s in segments[:last])
        record = {"id": f"{task.name}-{split_name}-{i}", "task": task.name,
                  "instruction": [m for m in messages if m["role"] == "user"][-1]["content"],
                  "prompt": prompt, "completion": segments[last]["text"], "metric": metric}
        if rejected is not None:
            record["rejected"] = rejected
        if sum(s["assistant"] for s in segments) > 1:
            record["segments"] = segments
        records.append(record)
    return records, stats
